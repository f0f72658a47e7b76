/**
 * homerelay-cloud — the CDK app: one CloudStack from the parameters the deploy, synth and destroy
 * scripts pass as context (`-c domain=… -c agentKeys=…`), example values where a synth has none.
 * A deployment needs the account the CDK CLI found credentials for.
 */
import { App } from "aws-cdk-lib";
import { ConfigError } from "../../shared/config-file.js";
import { NO_CREDENTIALS } from "../lib/cdk-cli.js";
import { CloudStack, UNKNOWN_AUTHORITY } from "../lib/cloud-stack.js";
import { EXAMPLE_REGION, modeOf, ParameterError, parametersFromContext } from "../lib/parameters.js";

const app = new App({ analyticsReporting: false });
try {
  const mode = modeOf(app.node);
  const { stackName, region, ...parameters } = parametersFromContext(app.node, mode);
  const account = process.env.CDK_DEFAULT_ACCOUNT;
  if (mode !== "synth" && account === undefined) {
    throw new ParameterError(
      `${NO_CREDENTIALS}: the CDK found no usable credentials (set AWS_PROFILE, run aws configure or aws sso login, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)`,
    );
  }
  new CloudStack(app, stackName, {
    ...parameters,
    env: mode === "synth" ? { region: region ?? EXAMPLE_REGION } : { account, region: region ?? process.env.CDK_DEFAULT_REGION },
    description: `homerelay cloud relay for ${parameters.domain}: a Lambda Function URL and a DynamoDB store, sending ${parameters.directMx ? "direct to MX" : "through SES"}`,
    // Removing the stack reads nothing of its configuration: no lookup of the Function URL host.
    ...(mode === "destroy" ? { authority: UNKNOWN_AUTHORITY } : {}),
  });
  app.synth();
} catch (err) {
  // The parameters, or the cloud configuration made of them (checked with the cloud's own schema).
  if (!(err instanceof ParameterError) && !(err instanceof ConfigError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(64);
}
