// The cloud stack's synthesized template (aws-cdk-lib/assertions, real esbuild bundling, no AWS):
// nodejs22.x on arm64 behind a Function URL open to anyone (both invoke permissions), the store's
// table as the DynamoDB store uses it, SES with Easy DKIM and a custom MAIL FROM, IAM scoped to
// the identity, configuration set, table and log group (no `*`), and the outputs a person copies.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { App } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import { build } from "esbuild";
import { loadAgentConfig } from "../../agent/config.js";
import { parseCloudConfig, type CloudConfig } from "../../cloud/config.js";
import { tableDefinition } from "../../cloud/store/dynamodb-store.js";
import { EXAMPLE_AGENT_KEY, type AgentKey } from "../../infra/lib/agent-keys.js";
import { CloudStack, UNKNOWN_AUTHORITY, type CloudStackProps } from "../../infra/lib/cloud-stack.js";
import { BUNDLE_FILE, esbuildOptions, REPOSITORY_ROOT } from "../../infra/lib/lambda-bundle.js";

const SECOND_KEY: AgentKey = { id: "laptop-2", publicKey: "PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=", keyFile: "/home/alice/.config/homerelay/laptop-2.key" };
const PROPS: CloudStackProps = {
  env: { region: "eu-west-1" },
  domain: "example.net",
  senders: ["*@example.net"],
  agentKeys: [EXAMPLE_AGENT_KEY, SECOND_KEY],
  concurrency: 5,
};

type Json = Record<string, unknown>;

/** A synthesized app in a temporary directory (removed after the tests); `bundle: false` leaves the Lambda code out. */
async function synthesize(dirs: string[], props: CloudStackProps, bundle = true): Promise<{ app: App; stack: CloudStack; template: Template }> {
  const outdir = await mkdtemp(join(tmpdir(), "hr-cdk-"));
  dirs.push(outdir);
  const app = new App({ outdir, analyticsReporting: false, builtinCloudFormationValidation: false, context: bundle ? {} : { "aws:cdk:bundling-stacks": [] } });
  const stack = new CloudStack(app, "HomerelayCloud", props);
  return { app, stack, template: Template.fromStack(stack) };
}

/** The logical id of the only resource of `type`. */
function onlyId(template: Template, type: string): string {
  const ids = Object.keys(template.findResources(type));
  assert.equal(ids.length, 1, `expected one ${type}, found ${ids.length}`);
  return ids[0]!;
}

/** Every statement of every IAM policy in the template, with its policy's logical id. */
function policyStatements(template: Template): { policy: string; statement: Json }[] {
  return Object.entries(template.findResources("AWS::IAM::Policy")).flatMap(([policy, r]) =>
    ((r.Properties as Json).PolicyDocument as { Statement: Json[] }).Statement.map((statement) => ({ policy, statement })),
  );
}

/** A statement's actions and resources as lists. */
function listOf(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [value];
}

/** The function's configuration document, CloudFormation references written as `ref:<LogicalId>`. */
function functionConfig(template: Template): CloudConfig {
  const fn = Object.values(template.findResources("AWS::Lambda::Function"))[0]!.Properties as Json;
  const value = ((fn.Environment as Json).Variables as Json).HOMERELAY_CLOUD_CONFIG as { "Fn::Join": [string, unknown[]] } | string;
  const text = typeof value === "string" ? value : value["Fn::Join"][1].map((part) => (typeof part === "string" ? part : `ref:${(part as { Ref: string }).Ref}`)).join("");
  return parseCloudConfig(text, "HOMERELAY_CLOUD_CONFIG");
}

describe("cloud stack, default (SES) variant", () => {
  const dirs: string[] = [];
  let template: Template;
  let outdir: string;
  before(async () => {
    const synth = await synthesize(dirs, PROPS);
    template = synth.template;
    outdir = synth.app.outdir;
  });
  after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

  test("the function runs nodejs22.x on arm64 with reserved concurrency, logging to its own log group kept 30 days", () => {
    const logs = onlyId(template, "AWS::Logs::LogGroup");
    template.hasResourceProperties("AWS::Lambda::Function", {
      Runtime: "nodejs22.x",
      Architectures: ["arm64"],
      Handler: "index.handler",
      ReservedConcurrentExecutions: 5,
      LoggingConfig: { LogGroup: { Ref: logs } },
    });
    template.hasResourceProperties("AWS::Logs::LogGroup", { RetentionInDays: 30 });
    // No logRetention helper (a second function with logs:* on "*"), no other custom resource.
    template.resourceCountIs("AWS::Lambda::Function", 1);
    template.resourceCountIs("Custom::LogRetention", 0);
  });

  test("the Function URL has auth type NONE, and anyone may call it: lambda:InvokeFunctionUrl and lambda:InvokeFunction through the URL", () => {
    const fn = onlyId(template, "AWS::Lambda::Function");
    template.hasResourceProperties("AWS::Lambda::Url", { AuthType: "NONE", TargetFunctionArn: { "Fn::GetAtt": [fn, "Arn"] } });
    template.resourceCountIs("AWS::Lambda::Permission", 2);
    template.hasResourceProperties("AWS::Lambda::Permission", {
      Action: "lambda:InvokeFunctionUrl",
      Principal: "*",
      FunctionUrlAuthType: "NONE",
      FunctionName: { "Fn::GetAtt": [fn, "Arn"] },
    });
    template.hasResourceProperties("AWS::Lambda::Permission", {
      Action: "lambda:InvokeFunction",
      Principal: "*",
      InvokedViaFunctionUrl: true,
      FunctionName: { "Fn::GetAtt": [fn, "Arn"] },
    });
  });

  test("the table is on demand, with the key and the TTL attribute the DynamoDB store uses", () => {
    const { createTable, timeToLive } = tableDefinition("any");
    template.hasResourceProperties("AWS::DynamoDB::Table", {
      BillingMode: "PAY_PER_REQUEST",
      KeySchema: createTable.KeySchema,
      AttributeDefinitions: createTable.AttributeDefinitions,
      TimeToLiveSpecification: { AttributeName: timeToLive.TimeToLiveSpecification!.AttributeName, Enabled: true },
    });
  });

  test("SES: the domain identity signs with Easy DKIM (2048-bit) and a custom MAIL FROM, in a configuration set reporting bounces and complaints to SNS", () => {
    const set = onlyId(template, "AWS::SES::ConfigurationSet");
    const topic = onlyId(template, "AWS::SNS::Topic");
    template.hasResourceProperties("AWS::SES::EmailIdentity", {
      EmailIdentity: "example.net",
      DkimSigningAttributes: { NextSigningKeyLength: "RSA_2048_BIT" },
      MailFromAttributes: { MailFromDomain: "bounce.example.net" },
      ConfigurationSetAttributes: { ConfigurationSetName: { Ref: set } },
    });
    template.hasResourceProperties("AWS::SES::ConfigurationSetEventDestination", {
      ConfigurationSetName: { Ref: set },
      EventDestination: { Enabled: true, MatchingEventTypes: ["bounce", "complaint"], SnsDestination: { TopicARN: { Ref: topic } } },
    });
  });

  test("the function's policy: ses:SendRawEmail on the identity and configuration set, table actions on the table, log writes on the log group, no * anywhere", () => {
    const role = onlyId(template, "AWS::IAM::Role");
    const roleProps = template.findResources("AWS::IAM::Role")[role]!.Properties as Json;
    assert.equal(roleProps.ManagedPolicyArns, undefined, "a managed policy (AWSLambdaBasicExecutionRole has logs:* on *) is attached");
    assert.equal(roleProps.Policies, undefined);

    const table = onlyId(template, "AWS::DynamoDB::Table");
    const identity = onlyId(template, "AWS::SES::EmailIdentity");
    const set = onlyId(template, "AWS::SES::ConfigurationSet");
    const logs = onlyId(template, "AWS::Logs::LogGroup");
    const statements = policyStatements(template);
    for (const { statement } of statements) {
      assert.equal(statement.Effect, "Allow");
      for (const resource of listOf(statement.Resource)) assert.notEqual(resource, "*", `a wildcard resource for ${JSON.stringify(statement.Action)}`);
    }
    const byAction = (prefix: string) => statements.filter(({ statement }) => listOf(statement.Action).some((a) => String(a).startsWith(prefix))).map(({ statement }) => statement);

    const [send, ...moreSes] = byAction("ses:");
    assert.equal(moreSes.length, 0);
    assert.deepEqual(listOf(send!.Action), ["ses:SendRawEmail"]);
    const [identityArn, setArn, ...moreArns] = listOf(send!.Resource).map((r) => JSON.stringify(r));
    assert.equal(moreArns.length, 0);
    assert.match(identityArn!, new RegExp(`:ses:eu-west-1:.*:identity/",\\{"Ref":"${identity}"\\}`));
    assert.match(setArn!, new RegExp(`:ses:eu-west-1:.*:configuration-set/",\\{"Ref":"${set}"\\}`));

    const [data, ...moreData] = byAction("dynamodb:");
    assert.equal(moreData.length, 0);
    assert.deepEqual(listOf(data!.Resource), [{ "Fn::GetAtt": [table, "Arn"] }]);
    // Every DynamoDB call the store makes is allowed.
    const source = readFileSync(join(REPOSITORY_ROOT, "cloud/store/dynamodb-store.ts"), "utf8");
    const calls = [...source.matchAll(/new (\w+)Command\(/g)].map((m) => `dynamodb:${m[1]}`);
    assert.ok(calls.length >= 3, "the store's DynamoDB calls were not found");
    for (const action of calls) assert.ok(listOf(data!.Action).includes(action), `the store calls ${action}, which the function may not`);

    const [logWrites, ...moreLogs] = byAction("logs:");
    assert.equal(moreLogs.length, 0);
    assert.deepEqual(listOf(logWrites!.Action).sort(), ["logs:CreateLogStream", "logs:PutLogEvents"]);
    assert.deepEqual(listOf(logWrites!.Resource), [{ "Fn::GetAtt": [logs, "Arn"] }]);

    assert.equal(statements.length, 3, "the function's policy has statements beyond SES, DynamoDB and logs");
  });

  test("the function's configuration is a valid cloud configuration: the table, SES with the configuration set, both keys, the placeholder authority", () => {
    const config = functionConfig(template);
    assert.deepEqual(config.store, { dynamodb: { table: `ref:${onlyId(template, "AWS::DynamoDB::Table")}` } });
    assert.deepEqual(config.onward, { transport: "ses", region: "eu-west-1", configurationSet: `ref:${onlyId(template, "AWS::SES::ConfigurationSet")}` });
    assert.deepEqual(config.authority, [UNKNOWN_AUTHORITY]);
    assert.deepEqual(
      config.keys.map((k) => [k.id, k.publicKey, k.senders]),
      [EXAMPLE_AGENT_KEY, SECOND_KEY].map((k) => [k.id, k.publicKey, ["*@example.net"]]),
    );
  });

  test("the outputs: the Function URL, the DNS records as zone-file lines, and the agent's cloud: section per key", () => {
    const identity = onlyId(template, "AWS::SES::EmailIdentity");
    const url = onlyId(template, "AWS::Lambda::Url");
    const host = { "Fn::Select": [2, { "Fn::Split": ["/", { "Fn::GetAtt": [url, "FunctionUrl"] }] }] };
    template.hasOutput("FunctionUrl", { Value: { "Fn::GetAtt": [url, "FunctionUrl"] } });
    template.hasOutput("AcceptedAuthority", { Value: UNKNOWN_AUTHORITY });
    for (const n of [1, 2, 3]) {
      template.hasOutput(`DnsDkim${n}`, {
        Value: { "Fn::Join": ["", [{ "Fn::GetAtt": [identity, `DkimDNSTokenName${n}`] }, ". CNAME ", { "Fn::GetAtt": [identity, `DkimDNSTokenValue${n}`] }, "."]] },
      });
    }
    template.hasOutput("DnsMailFromMx", { Value: "bounce.example.net. MX 10 feedback-smtp.eu-west-1.amazonses.com." });
    template.hasOutput("DnsMailFromSpf", { Value: 'bounce.example.net. TXT "v=spf1 include:amazonses.com ~all"' });
    template.hasOutput("DnsDmarcSuggestion", { Value: '_dmarc.example.net. TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.net"' });
    template.hasOutput("FeedbackTopicArn", { Value: { Ref: onlyId(template, "AWS::SNS::Topic") } });
    template.hasOutput("AgentConfig1", { Value: { "Fn::Join": ["", ['cloud: { url: "https://', host, '", keyId: home-1, keyFile: "/etc/homerelay/home-1.key" }']] } });
    template.hasOutput("AgentConfig2", { Value: { "Fn::Join": ["", ['cloud: { url: "https://', host, '", keyId: laptop-2, keyFile: "/home/alice/.config/homerelay/laptop-2.key" }']] } });
  });

  test("the agent's cloud: section, with the URL CloudFormation fills in, is a valid agent configuration", async (t) => {
    const output = template.findOutputs("AgentConfig1").AgentConfig1!.Value as { "Fn::Join": [string, unknown[]] };
    const section = output["Fn::Join"][1].map((part) => (typeof part === "string" ? part : "q7xk3mhbtyd5ewl2vr4oacnsuif6gjzp.lambda-url.eu-west-1.on.aws")).join("");
    const dir = await mkdtemp(join(tmpdir(), "hr-agent-config-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, "homerelay.yaml");
    await writeFile(file, `${section}\nroutes:\n  - { match: "*", route: mx, fallback: [cloud] }\n`);
    assert.deepEqual(loadAgentConfig(file).cloud, {
      url: "https://q7xk3mhbtyd5ewl2vr4oacnsuif6gjzp.lambda-url.eu-west-1.on.aws",
      keyId: "home-1",
      keyFile: "/etc/homerelay/home-1.key",
      timeout: 60,
    });
  });

  test("the deployed code is the bundle lambda-bundle.ts describes, byte for byte (NodejsFunction ran the local esbuild)", async (t) => {
    const fn = Object.values(template.findResources("AWS::Lambda::Function"))[0]!.Properties as { Code: { S3Key: string } };
    const deployed = await readFile(join(outdir, `asset.${fn.Code.S3Key.replace(/\.zip$/, "")}`, BUNDLE_FILE));
    const dir = await mkdtemp(join(tmpdir(), "hr-bundle-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    await build(esbuildOptions(join(dir, BUNDLE_FILE)));
    assert.ok(deployed.equals(await readFile(join(dir, BUNDLE_FILE))), "the stack's bundle differs from esbuildOptions' bundle");
  });
});

describe("cloud stack, deployment details", () => {
  const dirs: string[] = [];
  after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

  test("in a real account the accepted authority is looked up from the SSM parameter the stack writes the Function URL host to", async () => {
    const { app, template } = await synthesize(dirs, { ...PROPS, env: { account: "123456789012", region: "eu-west-1" } }, false);
    const parameter = "/homerelay/HomerelayCloud/function-url-host";
    const url = onlyId(template, "AWS::Lambda::Url");
    template.hasResourceProperties("AWS::SSM::Parameter", {
      Name: parameter,
      Value: { "Fn::Select": [2, { "Fn::Split": ["/", { "Fn::GetAtt": [url, "FunctionUrl"] }] }] },
    });
    const missing = app.synth().manifest.missing ?? [];
    assert.deepEqual(
      missing.map((m) => [m.provider, (m.props as Json).parameterName, (m.props as Json).dummyValue]),
      [["ssm", parameter, UNKNOWN_AUTHORITY]],
    );
  });

  test("an existing configuration set is used by name, and the stack makes neither a set nor a topic", async () => {
    const { template } = await synthesize(dirs, { ...PROPS, configurationSet: "transactional" }, false);
    template.resourceCountIs("AWS::SES::ConfigurationSet", 0);
    template.resourceCountIs("AWS::SNS::Topic", 0);
    template.hasResourceProperties("AWS::SES::EmailIdentity", { ConfigurationSetAttributes: { ConfigurationSetName: "transactional" } });
    template.hasResourceProperties("AWS::IAM::Policy", {
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Action: "ses:SendRawEmail", Resource: Match.arrayWith([Match.objectLike({ "Fn::Join": ["", Match.arrayWith([":configuration-set/transactional"])] })]) })]) },
    });
    assert.equal(functionConfig(template).onward.transport, "ses");
    assert.deepEqual(functionConfig(template).onward, { transport: "ses", region: "eu-west-1", configurationSet: "transactional" });
  });

  test("direct MX: a VPC with a NAT gateway on the stack's Elastic IP, the function in its private subnet relaying to MX, no SES", async () => {
    const { template } = await synthesize(dirs, { ...PROPS, directMx: { helo: "relay.example.net" } }, false);
    const eip = onlyId(template, "AWS::EC2::EIP");
    template.hasResourceProperties("AWS::EC2::NatGateway", { AllocationId: { "Fn::GetAtt": [eip, "AllocationId"] } });
    template.hasResourceProperties("AWS::EC2::VPCEndpoint", { VpcEndpointType: "Gateway", ServiceName: Match.objectLike({}) });
    template.hasResourceProperties("AWS::Lambda::Function", { VpcConfig: { SubnetIds: Match.anyValue(), SecurityGroupIds: Match.anyValue() } });
    template.resourceCountIs("AWS::SES::EmailIdentity", 0);
    assert.deepEqual(functionConfig(template).onward, { transport: "mx", helo: "relay.example.net", port: 25, dns: { timeout: 5 }, tlsPolicy: "may" });
    // Only the network interfaces Lambda makes with the function's role take "*": EC2 has no narrower resource for them.
    const wildcard = policyStatements(template).filter(({ statement }) => listOf(statement.Resource).includes("*"));
    assert.deepEqual(
      wildcard.map(({ statement }) => listOf(statement.Action).sort()),
      [["ec2:AssignPrivateIpAddresses", "ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:UnassignPrivateIpAddresses"]],
    );
    assert.equal(policyStatements(template).filter(({ statement }) => listOf(statement.Action).some((a) => String(a).startsWith("ses:"))).length, 0);
    const address = { "Fn::GetAtt": [eip, "PublicIp"] };
    template.hasOutput("ElasticIp", { Value: address });
    template.hasOutput("PtrRequest", { Value: { "Fn::Join": ["", [address, " PTR relay.example.net."]] } });
    template.hasOutput("DnsHeloA", { Value: { "Fn::Join": ["", ["relay.example.net. A ", address]] } });
    template.hasOutput("DnsSpfSuggestion", { Value: { "Fn::Join": ["", ['example.net. TXT "v=spf1 ip4:', address, ' ~all"']] } });
  });
});
