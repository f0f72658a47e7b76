/**
 * synth — `npm run synth [-- --domain NAME --agent-key FILE …]`: the cloud stack's CloudFormation
 * template and Lambda bundle in infra/cdk.out/, with example values for what is not given. Needs
 * no AWS credentials and reaches no AWS service.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { INFRA_DIR, runCdk } from "../lib/cdk-cli.js";
import { OPTIONS_HELP, scriptArguments } from "../lib/parameters.js";

const USAGE = `usage: npm run synth [-- options]

Writes the cloud stack's template to infra/cdk.out/ without touching AWS; options not given
take example values (example.net, RFC 8032's test key as home-1).

${OPTIONS_HELP}
`;

async function main(): Promise<number> {
  const parsed = scriptArguments("synth", USAGE);
  if (typeof parsed === "number") return parsed;
  const { args: context, parameters } = parsed;
  const started = performance.now();
  // No credentials are looked for on an instance's metadata service, and no notices fetched: a synth stays offline.
  const run = await runCdk(["synth", "--quiet", "--no-notices", ...context], { AWS_EC2_METADATA_DISABLED: "true" });
  if (run.code !== 0) return run.code;
  const stack = parameters.stackName;
  const template = JSON.parse(await readFile(join(INFRA_DIR, "cdk.out", `${stack}.template.json`), "utf8")) as { Resources: object; Outputs: object };
  process.stdout.write(
    `homerelay synth: infra/cdk.out/${stack}.template.json, ${Object.keys(template.Resources).length} resources, ${Object.keys(template.Outputs).length} outputs (${((performance.now() - started) / 1000).toFixed(1)} s)\n`,
  );
  return 0;
}

process.exit(await main());
