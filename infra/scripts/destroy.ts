/**
 * destroy — `npm run destroy [-- --region NAME --stack-name NAME]`: removes the cloud stack (the
 * function, its URL, table, logs, SES identity and configuration set) with the workspace's CDK.
 */
import { failureOf, runCdk, WITHOUT_VALIDATION } from "../lib/cdk-cli.js";
import { OPTIONS_HELP, scriptArguments } from "../lib/parameters.js";

const USAGE = `usage: npm run destroy [-- --region NAME --stack-name NAME]

Removes homerelay's cloud relay from AWS. The agents' mail for the cloud route then waits in
their queues (or takes the route's fallback) until a relay answers again.

${OPTIONS_HELP}
`;

async function main(): Promise<number> {
  const parsed = scriptArguments("destroy", USAGE);
  if (typeof parsed === "number") return parsed;
  const { args: context, parameters } = parsed;
  const stack = parameters.stackName;
  const run = await runCdk(["destroy", stack, "--force", ...context], WITHOUT_VALIDATION);
  if (run.code !== 0) {
    const failure = failureOf(run);
    process.stderr.write(
      failure === "no-credentials"
        ? "\nhomerelay destroy: no usable AWS credentials: set AWS_PROFILE or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, then run it again\n"
        : `\nhomerelay destroy: cdk destroy failed (exit ${run.code}); its messages are above\n`,
    );
    return 69;
  }
  process.stdout.write(
    [
      `homerelay destroy: ${stack} is removed.`,
      "Left for you: the DNS records you published (DKIM CNAMEs, the MAIL FROM MX and SPF), the agents' cloud: sections,",
      "and the CDK's own CDKToolkit stack (shared by every CDK app in this account and region; delete it in CloudFormation if nothing else uses it).",
      "",
    ].join("\n"),
  );
  return 0;
}

process.exit(await main());
