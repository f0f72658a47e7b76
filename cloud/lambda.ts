/**
 * lambda — the cloud app as an AWS Lambda function behind a Function URL (payload format 2.0),
 * through `hono/aws-lambda`, which decodes the base64 request bodies Function URLs deliver. The
 * configuration document (YAML or JSON) comes from `$HOMERELAY_CLOUD_CONFIG`; the store is the
 * DynamoDB table it names. The app is built on the first request and kept for the container's life.
 */
import type { Context } from "hono";
import { handle, type APIGatewayProxyResult, type ApiGatewayRequestContextV2, type LambdaContext, type LambdaEvent } from "hono/aws-lambda";
import { createMailLog, type MailLog } from "../shared/log.js";
import { nodeCryptoEd25519 } from "../shared/protocol/ed25519.js";
import { createCloudApp } from "./app.js";
import { parseCloudConfig, type CloudConfig } from "./config.js";
import type { OnwardTransport } from "./onward/onward.js";
import { createSesTransport } from "./onward/ses.js";
import { DynamoDbStore } from "./store/dynamodb-store.js";

/** The environment variable that holds the cloud configuration document. */
export const CONFIG_VARIABLE = "HOMERELAY_CLOUD_CONFIG";

/** A Lambda handler for Function URL (and API Gateway) events. */
export type LambdaHandler = (event: LambdaEvent, lambdaContext?: LambdaContext) => Promise<APIGatewayProxyResult>;

let built: Promise<LambdaHandler> | undefined;

/** The function's handler: builds the app on the first invocation, then reuses it. */
export const handler: LambdaHandler = async (event, lambdaContext) => {
  built ??= build();
  return (await built)(event, lambdaContext);
};

async function build(): Promise<LambdaHandler> {
  const text = process.env[CONFIG_VARIABLE];
  if (text === undefined || text.trim() === "") {
    throw new Error(`${CONFIG_VARIABLE} is not set: put the cloud configuration document (YAML or JSON) in the function's environment`);
  }
  const config = parseCloudConfig(text, `$${CONFIG_VARIABLE}`);
  if (typeof config.store === "string") {
    throw new Error(`on Lambda the store must be a DynamoDB table (store: { dynamodb: { table: … } }), not the directory ${config.store}: a Lambda container's disk does not outlive it`);
  }
  // Standard error is a pipe on Lambda, written synchronously: no line is lost when the container freezes.
  const log = createMailLog({ format: config.log.format, level: config.log.level, destination: process.stderr }, "cloud");
  const app = createCloudApp({
    config,
    store: new DynamoDbStore(config.store.dynamodb),
    onward: await onward(config, log),
    ed25519: await nodeCryptoEd25519(),
    log,
    clientAddress: sourceIp,
  });
  return handle(app);
}

/**
 * The configured onward transport. SMTP and direct MX (the latter only from a VPC with a NAT
 * gateway and port 25 open) come through the Node entry's module, loaded only when chosen, so
 * the usual SES function does not pay for the Node server's imports at a cold start.
 */
async function onward(config: CloudConfig, log: MailLog): Promise<OnwardTransport> {
  if (config.onward.transport === "ses") return createSesTransport(config.onward, { log: log.component("ses") });
  return (await import("./serve.js")).onwardFromConfig(config);
}

/** The caller's address as the Function URL saw it. */
function sourceIp(c: Context): string {
  const context = (c.env as { requestContext?: Partial<ApiGatewayRequestContextV2> } | undefined)?.requestContext;
  return context?.http?.sourceIp ?? "unknown";
}
