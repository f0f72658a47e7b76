/**
 * function-config — the cloud configuration document the Lambda function reads from
 * $HOMERELAY_CLOUD_CONFIG, built from the stack's parameters and checked with the cloud's own
 * schema at synth time: a bad key or sender pattern fails the synth, not the first request.
 */
import { parseCloudConfig } from "../../cloud/config.js";
import type { AgentKey } from "./agent-keys.js";

/** How the function relays onward: SES (the default stack) or direct to MX from the VPC's Elastic IP. */
export type FunctionOnward = { transport: "ses"; region: string; configurationSet: string } | { transport: "mx"; helo: string };

/** What the document is made of; `table` may be a CDK token (the table's generated name). */
export interface FunctionConfigInput {
  /** The accepted `@authority`: the Function URL's host. */
  authority: string;
  keys: AgentKey[];
  /** Sender patterns every key may use, e.g. `*@example.net`. */
  senders: string[];
  onward: FunctionOnward;
  table: string;
}

/** The configuration document; throws the cloud's ConfigError when the cloud would refuse it. */
export function functionConfig(input: FunctionConfigInput): Record<string, unknown> {
  const document = {
    authority: [input.authority],
    keys: input.keys.map((key) => ({ id: key.id, publicKey: key.publicKey, senders: input.senders })),
    onward: input.onward,
    store: { dynamodb: { table: input.table } },
    log: { format: "json", level: "info" },
  };
  parseCloudConfig(JSON.stringify(document), "the stack's parameters");
  return document;
}
