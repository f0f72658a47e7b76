/**
 * direct-mx-network — the optional network for relaying straight to MX from a fixed address: a
 * VPC in one zone whose private subnet reaches the internet through a NAT gateway on an Elastic
 * IP (the address AWS lifts the port-25 limit for and sets the PTR record of), with a free
 * gateway endpoint so the store's DynamoDB traffic does not pay for NAT processing.
 */
import { aws_ec2 as ec2 } from "aws-cdk-lib";
import { Construct } from "constructs";

/** The VPC, its Elastic IP and the subnets the function runs in. */
export class DirectMxNetwork extends Construct {
  readonly vpc: ec2.Vpc;
  /** The NAT gateway's address: every message to an MX host leaves from it. */
  readonly elasticIp: ec2.CfnEIP;
  readonly functionSubnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.elasticIp = new ec2.CfnEIP(this, "ElasticIp", { domain: "vpc" });
    this.vpc = new ec2.Vpc(this, "Vpc", {
      ipAddresses: ec2.IpAddresses.cidr("10.25.0.0/24"),
      maxAzs: 1,
      natGateways: 1,
      natGatewayProvider: ec2.NatProvider.gateway({ eipAllocationIds: [this.elasticIp.attrAllocationId] }),
      subnetConfiguration: [
        { name: "nat", subnetType: ec2.SubnetType.PUBLIC, cidrMask: 28 },
        { name: "relay", subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 26 },
      ],
      // Restricting the unused default security group takes a custom-resource Lambda function of its own.
      restrictDefaultSecurityGroup: false,
    });
    this.vpc.addGatewayEndpoint("DynamoDb", { service: ec2.GatewayVpcEndpointAwsService.DYNAMODB, subnets: [this.functionSubnets] });
  }
}
