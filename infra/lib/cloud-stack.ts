/**
 * cloud-stack — homerelay's cloud half on AWS: the Lambda function behind a Function URL (auth
 * NONE: the RFC 9421 signature is the authentication), its DynamoDB store, the SES identity it
 * sends as with Easy DKIM and a custom MAIL FROM, least-privilege IAM, and outputs that say which
 * DNS records to publish and what to paste into the agent's configuration. Costs nothing when idle.
 */
import { join } from "node:path";
import {
  CfnOutput,
  Duration,
  Fn,
  RemovalPolicy,
  Stack,
  Token,
  aws_dynamodb as dynamodb,
  aws_iam as iam,
  aws_lambda as lambda,
  aws_logs as logs,
  aws_ses as ses,
  aws_sns as sns,
  aws_ssm as ssm,
  type StackProps,
} from "aws-cdk-lib";
import { NodejsFunction } from "aws-cdk-lib/aws-lambda-nodejs";
import type { Construct } from "constructs";
import { CONFIG_VARIABLE } from "../../cloud/lambda.js";
import { tableDefinition } from "../../cloud/store/dynamodb-store.js";
import type { AgentKey } from "./agent-keys.js";
import { DirectMxNetwork } from "./direct-mx-network.js";
import { directMxRecords, dmarcSuggestion, mailFromRecords, zoneFileLine, type DnsRecord } from "./dns-records.js";
import { functionConfig, type FunctionOnward } from "./function-config.js";
import { functionBundling, LAMBDA_ENTRY, REPOSITORY_ROOT } from "./lambda-bundle.js";

/** The stack's parameters. */
export interface CloudStackProps extends StackProps {
  /** The sending domain: the SES identity, verified through its DKIM records. */
  domain: string;
  /** Envelope senders and header From: addresses the agents' keys may use, e.g. `*@example.net`. */
  senders: string[];
  agentKeys: AgentKey[];
  /** An existing SES configuration set to send with; by default the stack makes one that reports bounces and complaints to an SNS topic. */
  configurationSet?: string;
  /** Concurrent executions reserved for the function, and the most it may run: the bound on what a flood of requests can cost (undefined: unreserved). */
  concurrency?: number;
  /** Relay straight to MX from a VPC's Elastic IP instead of through SES, saying this HELO name (off by default: the VPC costs by the hour). */
  directMx?: { helo: string };
  /** The `@authority` the function accepts; by default the Function URL host the previous deployment recorded. */
  authority?: string;
}

/** The authority accepted until the Function URL exists: `.invalid` (RFC 2606) never matches a request. */
export const UNKNOWN_AUTHORITY = "function-url-not-yet-known.invalid";

/** The custom MAIL FROM subdomain, under the sending domain. */
export const MAIL_FROM_SUBDOMAIN = "bounce";

/** The DynamoDB actions the store's calls need, on its table only. */
const TABLE_ACTIONS = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"];

/** The cloud half. */
export class CloudStack extends Stack {
  constructor(scope: Construct, id: string, props: CloudStackProps) {
    super(scope, id, props);

    const table = storeTable(this);
    const logGroup = new logs.LogGroup(this, "Logs", { retention: logs.RetentionDays.ONE_MONTH, removalPolicy: RemovalPolicy.DESTROY });
    // A role of its own, without AWSLambdaBasicExecutionRole (logs:* on every log group).
    const role = new iam.Role(this, "FunctionRole", {
      assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
      description: "homerelay cloud relay: its log group, its table, and sending as its SES identity",
    });
    logGroup.grantWrite(role);
    table.grant(role, ...TABLE_ACTIONS);

    const network = props.directMx ? new DirectMxNetwork(this, "DirectMx") : undefined;
    const sending = network ? this.directMxSending(props, network) : this.sesSending(props, role);

    const authorityParameter = `/homerelay/${this.stackName}/function-url-host`;
    const authority =
      props.authority ?? (Token.isUnresolved(this.account) ? UNKNOWN_AUTHORITY : ssm.StringParameter.valueFromLookup(this, authorityParameter, UNKNOWN_AUTHORITY));
    const config = functionConfig({ authority, keys: props.agentKeys, senders: props.senders, onward: sending.onward, table: table.tableName });

    const fn = new NodejsFunction(this, "Function", {
      description: `homerelay cloud relay for ${props.domain}`,
      entry: LAMBDA_ENTRY,
      handler: "handler",
      projectRoot: REPOSITORY_ROOT,
      depsLockFilePath: join(REPOSITORY_ROOT, "package-lock.json"),
      bundling: functionBundling(),
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      // Lambda gives CPU in proportion to memory (one vCPU at 1769 MB): 1 GB gives a cold start over
      // half a core, for about a third of a cent per 1000 messages (docs/aws.md, Cost).
      memorySize: 1024,
      // As long as SES's request timeout (30 s): the agent's queue retries what runs out.
      timeout: Duration.seconds(30),
      reservedConcurrentExecutions: props.concurrency,
      role,
      logGroup,
      environment: { [CONFIG_VARIABLE]: this.toJsonString(config) },
      ...(network ? { vpc: network.vpc, vpcSubnets: network.functionSubnets } : {}),
    });
    if (network) {
      // Lambda makes the function's network interfaces with its role; these EC2 actions take no narrower resource.
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"],
          resources: ["*"],
        }),
      );
    }
    // Auth type NONE: aws-cdk-lib adds the resource policy for anyone to call it, both
    // lambda:InvokeFunctionUrl and lambda:InvokeFunction (the latter only through the URL).
    const url = fn.addFunctionUrl({ authType: lambda.FunctionUrlAuthType.NONE, invokeMode: lambda.InvokeMode.BUFFERED });
    const host = Fn.select(2, Fn.split("/", url.url));
    // Read back at the next synth of a deployment (a context lookup): the function's own URL cannot be in its environment.
    new ssm.StringParameter(this, "FunctionUrlHost", {
      parameterName: authorityParameter,
      stringValue: host,
      description: "homerelay: the Function URL host, the @authority the cloud relay accepts",
    });

    new CfnOutput(this, "FunctionUrl", { value: url.url, description: "The cloud relay's address (the agent's cloud.url)" });
    new CfnOutput(this, "AcceptedAuthority", { value: authority, description: "The @authority the function accepts; the deploy script redeploys while it differs from the Function URL host" });
    props.agentKeys.forEach((key, i) => {
      new CfnOutput(this, `AgentConfig${i + 1}`, {
        value: `cloud: { url: "https://${host}", keyId: ${key.id}, keyFile: ${JSON.stringify(key.keyFile)} }`,
        description: `The agent's cloud: section for key ${key.id}`,
      });
    });
    for (const [name, record] of sending.records) {
      new CfnOutput(this, name, { value: zoneFileLine(record), description: `DNS record to publish (${record.type})` });
    }
  }

  /** SES: the domain identity with Easy DKIM and the custom MAIL FROM, a configuration set, the right to send as them, and their DNS records. */
  private sesSending(props: CloudStackProps, role: iam.Role): Sending {
    let configurationSet: ses.IConfigurationSet;
    if (props.configurationSet !== undefined) {
      configurationSet = ses.ConfigurationSet.fromConfigurationSetName(this, "ConfigurationSet", props.configurationSet);
    } else {
      const own = new ses.ConfigurationSet(this, "ConfigurationSet", {});
      const feedback = new sns.Topic(this, "MailFeedback", { displayName: "homerelay: SES bounces and complaints" });
      own.addEventDestination("BouncesAndComplaints", {
        destination: ses.EventDestination.snsTopic(feedback),
        events: [ses.EmailSendingEvent.BOUNCE, ses.EmailSendingEvent.COMPLAINT],
      });
      new CfnOutput(this, "FeedbackTopicArn", { value: feedback.topicArn, description: "SNS topic of bounce and complaint events (subscribe an address to it)" });
      configurationSet = own;
    }
    const identity = new ses.EmailIdentity(this, "Identity", {
      identity: ses.Identity.domain(props.domain),
      dkimIdentity: ses.DkimIdentity.easyDkim(ses.EasyDkimSigningKeyLength.RSA_2048_BIT),
      mailFromDomain: `${MAIL_FROM_SUBDOMAIN}.${props.domain}`,
      configurationSet,
    });
    const configurationSetArn = this.formatArn({ service: "ses", resource: "configuration-set", resourceName: configurationSet.configurationSetName });
    // SES checks SendRawEmail against the identity and, when one is named, the configuration set.
    role.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ["ses:SendRawEmail"], resources: [identity.emailIdentityArn, configurationSetArn] }));
    const [mailFromMx, mailFromSpf] = mailFromRecords(`${MAIL_FROM_SUBDOMAIN}.${props.domain}`, this.region);
    return {
      onward: { transport: "ses", region: this.region, configurationSet: configurationSet.configurationSetName },
      records: [
        ...identity.dkimRecords.map((r, i): [string, DnsRecord] => [`DnsDkim${i + 1}`, { name: r.name, type: "CNAME", value: r.value }]),
        ["DnsMailFromMx", mailFromMx!],
        ["DnsMailFromSpf", mailFromSpf!],
        ["DnsDmarcSuggestion", dmarcSuggestion(props.domain)],
      ],
    };
  }

  /** Direct MX from the Elastic IP: the HELO name, the DNS records, and the PTR to ask AWS for. */
  private directMxSending(props: CloudStackProps, network: DirectMxNetwork): Sending {
    const address = network.elasticIp.attrPublicIp;
    const helo = props.directMx!.helo;
    new CfnOutput(this, "ElasticIp", { value: address, description: "The relay's sending address: ask AWS to lift its port-25 limit and set its PTR (see docs/aws.md)" });
    new CfnOutput(this, "PtrRequest", { value: `${address} PTR ${helo}.`, description: "The reverse DNS record to request with the port-25 limit removal" });
    const [heloA, spf] = directMxRecords(props.domain, helo, address);
    return {
      onward: { transport: "mx", helo },
      records: [
        ["DnsHeloA", heloA!],
        ["DnsSpfSuggestion", spf!],
        ["DnsDmarcSuggestion", dmarcSuggestion(props.domain)],
      ],
    };
  }
}

/** How the function sends onward, and the DNS records that needs, by output name. */
interface Sending {
  onward: FunctionOnward;
  records: [string, DnsRecord][];
}

/** The store's table: the key and TTL attribute the DynamoDB store uses, on demand, gone with the stack (it holds only nonces and idempotency answers). */
function storeTable(scope: Construct): dynamodb.Table {
  const { createTable, timeToLive } = tableDefinition("homerelay");
  const key = createTable.KeySchema![0]!.AttributeName!;
  const keyType = createTable.AttributeDefinitions!.find((a) => a.AttributeName === key)!.AttributeType!;
  return new dynamodb.Table(scope, "Store", {
    partitionKey: { name: key, type: keyType as dynamodb.AttributeType },
    billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
    timeToLiveAttribute: timeToLive.TimeToLiveSpecification!.AttributeName!,
    removalPolicy: RemovalPolicy.DESTROY,
  });
}
