/**
 * deploy — `npm run deploy -- --domain example.net --agent-key FILE`: deploys the cloud stack with
 * the workspace's CDK (bootstrapping the account and region first when they need it), then prints
 * the relay's URL, the DNS records to publish and the agent's `cloud:` section.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { failureOf, INFRA_DIR, runCdk, WITHOUT_VALIDATION, type CdkRun } from "../lib/cdk-cli.js";
import { OPTIONS_HELP, scriptArguments, type CloudParameters } from "../lib/parameters.js";
import { checkRelay } from "../lib/relay-check.js";

const USAGE = `usage: npm run deploy -- --domain NAME --agent-key FILE [options]

Deploys homerelay's cloud relay to AWS (Lambda Function URL, DynamoDB, SES) with the CDK,
and prints the DNS records to publish and the agent's cloud: section. See docs/aws.md.

${OPTIONS_HELP}
`;

/** sysexits(3): a failure outside the program (AWS, the network). */
const EX_UNAVAILABLE = 69;

type Outputs = Record<string, string>;

async function main(): Promise<number> {
  const parsed = scriptArguments("deploy", USAGE);
  if (typeof parsed === "number") return parsed;
  const { args: context, parameters } = parsed;
  const stackName = parameters.stackName;

  const work = await mkdtemp(join(tmpdir(), "homerelay-deploy-"));
  try {
    let outputs = await deploy(context, stackName, join(work, "outputs.json"));
    if (outputs === null) return EX_UNAVAILABLE;
    const host = new URL(outputs.FunctionUrl!).host;
    if (outputs.AcceptedAuthority !== host) {
      // A Lambda function cannot name its own URL in its environment: the first deployment makes
      // the URL and records its host, the second puts the host into the function's configuration.
      process.stderr.write(`\nhomerelay deploy: the relay accepts ${outputs.AcceptedAuthority}, its URL is ${host}: deploying its configuration again\n\n`);
      outputs = await deploy(context, stackName, join(work, "outputs.json"));
      if (outputs === null) return EX_UNAVAILABLE;
      if (outputs.AcceptedAuthority !== host) {
        process.stderr.write(`homerelay deploy: the relay still accepts ${outputs.AcceptedAuthority} rather than ${host}; check the SSM parameter /homerelay/${stackName}/function-url-host\n`);
        return EX_UNAVAILABLE;
      }
    }
    await report(parameters, outputs);
    return 0;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** One `cdk deploy`, bootstrapping first when the CLI says it must; the stack's outputs, or null after a failure it explained. */
async function deploy(context: string[], stackName: string, outputsFile: string): Promise<Outputs | null> {
  await forgetAuthorityLookup(stackName);
  const args = ["deploy", stackName, "--require-approval", "never", "--outputs-file", outputsFile, ...context];
  let run = await runCdk(args, WITHOUT_VALIDATION);
  if (run.code !== 0 && failureOf(run) === "not-bootstrapped") {
    process.stderr.write("\nhomerelay deploy: this AWS account and region are not bootstrapped for the CDK: running cdk bootstrap (a CDKToolkit stack with an S3 bucket for the function's code and deployment roles)\n\n");
    const bootstrap = await runCdk(["bootstrap", ...context], WITHOUT_VALIDATION);
    if (bootstrap.code !== 0) return explain(bootstrap, "cdk bootstrap");
    run = await runCdk(args, WITHOUT_VALIDATION);
  }
  if (run.code !== 0) return explain(run, "cdk deploy");
  const all = JSON.parse(await readFile(outputsFile, "utf8")) as Record<string, Outputs>;
  return all[stackName] ?? null;
}

/** Say what went wrong in a line a person can act on; always null. */
function explain(run: CdkRun, what: string): null {
  const failure = failureOf(run);
  const advice =
    failure === "no-credentials"
      ? "no usable AWS credentials: set AWS_PROFILE (aws configure, or aws sso login for SSO), or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, then run the deploy again"
      : failure === "not-bootstrapped"
        ? "the account and region are still not bootstrapped: run npx cdk bootstrap in infra/ with the same credentials and read its error"
        : `${what} failed (exit ${run.code}); its messages are above`;
  process.stderr.write(`\nhomerelay deploy: ${advice}\n`);
  return null;
}

/**
 * Drop the cached lookup of the relay's Function URL host from cdk.context.json, so every deploy
 * reads the host the stack recorded in SSM (the cache would keep the "not yet known" answer of a
 * first deployment, or a host of a stack since destroyed).
 */
async function forgetAuthorityLookup(stackName: string): Promise<void> {
  const file = join(INFRA_DIR, "cdk.context.json");
  let cached: Record<string, unknown>;
  try {
    cached = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  const stale = Object.keys(cached).filter((key) => key.startsWith("ssm:") && key.includes(`parameterName=/homerelay/${stackName}/function-url-host`));
  if (stale.length === 0) return;
  for (const key of stale) delete cached[key];
  await writeFile(file, `${JSON.stringify(cached, null, 2)}\n`);
}

/** The URL, the DNS records, the agent's configuration, a check of the live relay, and what is left to do. */
async function report({ domain, agentKeys }: CloudParameters, outputs: Outputs): Promise<void> {
  const byPrefix = (prefix: string) =>
    Object.keys(outputs)
      .filter((k) => k.startsWith(prefix))
      .sort()
      .map((k) => `  ${outputs[k]}`);
  const out: string[] = [
    "",
    `homerelay: the cloud relay for ${domain} is deployed.`,
    "",
    `Function URL: ${outputs.FunctionUrl}`,
    "",
    `DNS records to publish (zone-file lines; the DMARC record only if ${domain} has none yet):`,
    ...byPrefix("Dns"),
  ];
  if (outputs.ElasticIp !== undefined) {
    out.push("", `Sending address ${outputs.ElasticIp}: ask AWS to lift its port-25 limit and set its reverse DNS (${outputs.PtrRequest}); see docs/aws.md.`);
  }
  out.push("", "Agent configuration (homerelay.yaml), one cloud: section per agent key:", ...byPrefix("AgentConfig"), "  routes:", '    - { match: "*", route: mx, fallback: [cloud] }', "");
  process.stdout.write(out.join("\n") + "\n");

  const checks = await checkRelay(outputs.FunctionUrl!, agentKeys[0]);
  process.stdout.write(["Checking the relay:", ...checks.map((c) => `  ${c.ok ? "ok" : "FAILED"}: ${c.text}`), ""].join("\n") + "\n");

  const next =
    outputs.ElasticIp === undefined
      ? [
          "Next:",
          `  - SES verifies ${domain} once the DKIM CNAMEs resolve (minutes to hours after publishing).`,
          "  - A new SES account is in the sandbox: it sends only to verified addresses until you request production access (docs/aws.md).",
          ...(outputs.FeedbackTopicArn !== undefined
            ? [`  - Bounces and complaints are published to ${outputs.FeedbackTopicArn}; subscribe an address:`, `    aws sns subscribe --topic-arn ${outputs.FeedbackTopicArn} --protocol email --notification-endpoint postmaster@${domain}`]
            : []),
        ]
      : ["Next:", "  - Until AWS lifts the port-25 limit, connections to MX hosts time out and the agent's queue keeps the mail."];
  process.stdout.write(next.join("\n") + "\n");
}

process.exit(await main());
