/**
 * parameters — what a deployment is made of (domain, senders, agent keys, region, SES
 * configuration set, concurrency, the optional direct-MX variant), one list for the scripts'
 * command-line options and the CDK app's context, with example values for a synth without them.
 */
import { resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Node } from "constructs";
import { EXAMPLE_AGENT_KEY, readAgentKey, type AgentKey } from "./agent-keys.js";
import type { CloudStackProps } from "./cloud-stack.js";

/** What the CDK app is run for: templates only, a deployment (a real account), or its removal. */
export type Mode = "synth" | "deploy" | "destroy";

/** The command-line options of `npm run deploy | synth | destroy`. */
export const OPTIONS = {
  domain: { type: "string" },
  "agent-key": { type: "string", multiple: true },
  senders: { type: "string" },
  region: { type: "string" },
  "configuration-set": { type: "string" },
  concurrency: { type: "string" },
  "direct-mx": { type: "string" },
  "stack-name": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies NonNullable<ParseArgsConfig["options"]>;

/** The options' help text. */
export const OPTIONS_HELP = `  --domain NAME             the sending domain (SES identity; DKIM and MAIL FROM records)   [synth: example.net]
  --agent-key FILE          an agent's key: the private key from homerelay keygen, its public key (PEM),
                            keygen's saved output, or the base64 public key; repeat for several agents
                            [synth: RFC 8032's test key as home-1]
  --senders LIST            sender patterns the keys may use, comma-separated   [*@DOMAIN]
  --region NAME             AWS region   [the AWS profile's region; synth: eu-west-1]
  --configuration-set NAME  an existing SES configuration set   [a new one with bounce and complaint events]
  --concurrency N           reserved concurrent executions, 1-1000, or "unreserved"   [5]
  --direct-mx HELO          relay straight to MX from a VPC with a NAT gateway and Elastic IP, saying HELO
                            (costs about $37 a month; see docs/aws.md)   [off: SES]
  --stack-name NAME         CloudFormation stack name   [HomerelayCloud]`;

/** Values parsed from the command line with OPTIONS. */
export type OptionValues = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K] extends { multiple: true } ? string[] : (typeof OPTIONS)[K]["type"] extends "boolean" ? boolean : string };

/** The stack's parameters, and where it goes: its name and region (undefined: the AWS profile's). */
export type CloudParameters = Pick<CloudStackProps, "domain" | "senders" | "agentKeys" | "configurationSet" | "concurrency" | "directMx"> & { stackName: string; region?: string };

/** The context key that carries the mode. */
export const MODE_CONTEXT = "homerelay:mode";

const DEFAULT_STACK = "HomerelayCloud";
const EXAMPLE_DOMAIN = "example.net";
/** Where templates of a synth without --region are made for. */
export const EXAMPLE_REGION = "eu-west-1";
const DEFAULT_CONCURRENCY = 5;
const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$/i;

/** A parameter error: the scripts print it as it is, without a stack trace. */
export class ParameterError extends Error {}

/**
 * The `cdk` arguments that pass `values` to the app as context (`-c key=value`), checked here
 * first as the app will check them, so that a mistake is reported before the CDK starts. Key files
 * go on as absolute paths: npm runs the scripts from the repository, `cwd` is where the person typed.
 */
export function contextArguments(values: OptionValues, mode: Mode, cwd: string): { args: string[]; parameters: CloudParameters } {
  if (mode === "deploy" && values.domain === undefined) throw new ParameterError("--domain is required: the domain to send as (its DNS records follow the deploy)");
  if (mode === "deploy" && (values["agent-key"] ?? []).length === 0) throw new ParameterError("--agent-key is required: the key file from homerelay keygen --id NAME --out DIR");
  const keyFiles = (values["agent-key"] ?? []).map((file) => resolve(cwd, file));
  const context: Record<string, string | undefined> = {
    [MODE_CONTEXT]: mode,
    stackName: values["stack-name"],
    domain: values.domain,
    senders: values.senders,
    agentKeys: keyFiles.length > 0 ? keyFiles.join(",") : undefined,
    region: values.region,
    configurationSet: values["configuration-set"],
    concurrency: values.concurrency,
    directMx: values["direct-mx"],
  };
  const parameters = parametersFromContext({ tryGetContext: (key: string) => context[key] }, mode);
  return { args: Object.entries(context).flatMap(([key, value]) => (value === undefined ? [] : ["-c", `${key}=${value}`])), parameters };
}

/**
 * A script's command line (`npm run deploy | synth | destroy -- …`): the parameters and the CDK
 * context arguments that pass them to the app, or the exit status after printing the help or what
 * is wrong (64, EX_USAGE).
 */
export function scriptArguments(mode: Mode, usage: string, argv = process.argv.slice(2)): { args: string[]; parameters: CloudParameters } | number {
  try {
    const { values } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false });
    if (values.help) {
      process.stdout.write(usage);
      return 0;
    }
    // npm runs scripts from the repository; relative key paths are meant from where the person typed.
    return contextArguments(values, mode, process.env.INIT_CWD ?? process.cwd());
  } catch (err) {
    if (!(err instanceof ParameterError) && (err as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS") !== true) throw err;
    process.stderr.write(`homerelay ${mode}: ${(err as Error).message}\n\n${usage}`);
    return 64;
  }
}

/** The mode the app runs in (`synth` unless the scripts say otherwise). */
export function modeOf(node: Pick<Node, "tryGetContext">): Mode {
  const mode = String(node.tryGetContext(MODE_CONTEXT) ?? "synth");
  if (mode !== "synth" && mode !== "deploy" && mode !== "destroy") throw new ParameterError(`${MODE_CONTEXT} must be synth, deploy or destroy, not ${mode}`);
  return mode;
}

/** The stack's parameters from the app's context, checked, with example values where a synth or destroy lacks them. */
export function parametersFromContext(node: Pick<Node, "tryGetContext">, mode: Mode): CloudParameters {
  const text = (key: string): string | undefined => {
    const value = node.tryGetContext(key) as unknown;
    return value === undefined || value === null || String(value).trim() === "" ? undefined : String(value).trim();
  };
  const domain = (text("domain") ?? (mode === "deploy" ? undefined : EXAMPLE_DOMAIN))?.toLowerCase();
  if (domain === undefined) throw new ParameterError("a deployment needs a domain (-c domain=example.net, or npm run deploy -- --domain example.net)");
  if (!DNS_NAME.test(domain)) throw new ParameterError(`--domain ${domain} is not a domain name`);
  const keyFiles = text("agentKeys")?.split(",") ?? [];
  if (mode === "deploy" && keyFiles.length === 0) throw new ParameterError("a deployment needs at least one agent key (--agent-key FILE)");
  const agentKeys = keyFiles.length > 0 ? keyFiles.map(keyOrThrow) : [EXAMPLE_AGENT_KEY];
  const ids = agentKeys.map((k) => k.id);
  const twice = ids.find((id, i) => ids.indexOf(id) !== i);
  if (twice !== undefined) throw new ParameterError(`two agent keys have the id ${twice}: each agent needs its own key id`);
  const directMxHelo = text("directMx")?.toLowerCase();
  if (directMxHelo !== undefined && !DNS_NAME.test(directMxHelo)) throw new ParameterError(`--direct-mx ${directMxHelo} is not a host name (the HELO name, which the Elastic IP's PTR record names)`);
  return {
    stackName: text("stackName") ?? DEFAULT_STACK,
    ...(text("region") !== undefined ? { region: text("region") } : {}),
    domain,
    senders: senders(text("senders"), domain, directMxHelo === undefined),
    agentKeys,
    ...(text("configurationSet") !== undefined ? { configurationSet: text("configurationSet") } : {}),
    ...concurrency(text("concurrency")),
    ...(directMxHelo !== undefined ? { directMx: { helo: directMxHelo } } : {}),
  };
}

function keyOrThrow(file: string): AgentKey {
  try {
    return readAgentKey(file);
  } catch (err) {
    throw new ParameterError((err as Error).message);
  }
}

/** The sender patterns; through SES every one must be of the verified domain, which is all SES sends for. */
function senders(list: string | undefined, domain: string, throughSes: boolean): string[] {
  const patterns = list === undefined ? [`*@${domain}`] : list.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (patterns.length === 0) throw new ParameterError("--senders is empty: give at least one pattern such as *@" + domain);
  if (throughSes) {
    const foreign = patterns.find((p) => p.slice(p.lastIndexOf("@") + 1).toLowerCase() !== domain);
    if (foreign !== undefined) throw new ParameterError(`sender pattern ${foreign} is not of ${domain}: SES sends only as its verified identity ${domain} (use user@${domain} or *@${domain})`);
  }
  return patterns;
}

function concurrency(value: string | undefined): { concurrency?: number } {
  if (value === "unreserved") return {};
  if (value === undefined) return { concurrency: DEFAULT_CONCURRENCY };
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1000) throw new ParameterError(`--concurrency ${value}: expected 1 to 1000, or unreserved`);
  return { concurrency: n };
}
