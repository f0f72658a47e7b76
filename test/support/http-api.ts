/**
 * http-api — what the tests of HTTP submission share: the agent's API configuration with known
 * tokens, its port among the agent's listeners, requests over real HTTP on loopback, the problem
 * answers they expect, the spool as a refused request must leave it, and a cloud that relays
 * signed submissions to an SMTP upstream.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { parseCloudConfig } from "../../cloud/config.js";
import type { CloudServer } from "../../cloud/serve.js";
import { silentLog } from "../../shared/log.js";
import type { AgentProcess } from "./agent-process.js";
import { send, serveCloudOnNamedPort, type Answer, type TestKey } from "./cloud-client.js";
import { allQueueFiles } from "./queue-durability.js";
import type { SmtpUpstream } from "./smtp-upstream.js";

/** A token that may send as anyone at home.example.net. */
export const TOKEN = "cron-token-0123456789abcdefghij";
/** A second token, configured by its hash only, for other@example.com (and the null sender). */
export const OTHER_TOKEN = "other-token-0123456789abcdefghij";

/** The `http:` section with both tokens, listening on a port the system picks. */
export function httpSection(extraTokens: Record<string, unknown>[] = []): Record<string, unknown> {
  return {
    listen: "127.0.0.1:0",
    tokens: [
      { name: "cron", token: TOKEN, senders: ["*@home.example.net"] },
      { name: "other", hash: `sha256:${createHash("sha256").update(OTHER_TOKEN).digest("hex")}`, senders: ["other@example.com"], nullSender: true },
      ...extraTokens,
    ],
  };
}

/** The API's port: its listener starts after the SMTP listeners, so it is logged last. */
export function apiPort(agent: AgentProcess): number {
  const port = agent.ports.at(-1);
  assert.ok(port !== undefined && /listening on 127\.0\.0\.1:\d+ \(http submission\)/.test(agent.log()), "the agent runs the HTTP API");
  return port;
}

/** One request to the API. */
export interface ApiRequest {
  method?: string;
  path?: string;
  /** The bearer token; none without. */
  token?: string;
  /** Content-Type. */
  type?: string;
  body?: Buffer | string;
  headers?: Record<string, string>;
  chunked?: boolean;
}

/** Send `r` to the API on 127.0.0.1:`port`. */
export function apiRequest(port: number, r: ApiRequest): Promise<Answer> {
  return send(port, {
    method: r.method ?? "POST",
    path: r.path ?? "/v1/messages",
    host: `127.0.0.1:${port}`,
    headers: {
      ...(r.token !== undefined ? { authorization: `Bearer ${r.token}` } : {}),
      ...(r.type !== undefined ? { "content-type": r.type } : {}),
      ...r.headers,
    },
    ...(r.body !== undefined ? { body: Buffer.from(r.body) } : {}),
    ...(r.chunked ? { chunked: true } : {}),
  });
}

/** POST a JSON message with `token`. */
export function postJson(port: number, json: unknown, token = TOKEN): Promise<Answer> {
  return apiRequest(port, { token, type: "application/json", body: JSON.stringify(json) });
}

/** Assert an `application/problem+json` answer with `status` and the problem type `name`. */
export function assertProblem(answer: Answer, status: number, name: string): Record<string, unknown> {
  assert.equal(answer.status, status, answer.text);
  assert.equal(answer.headers["content-type"], "application/problem+json");
  assert.equal(answer.json?.type, `https://homerelay.dev/problems/${name}`, answer.text);
  assert.equal(answer.json?.status, status);
  assert.equal(typeof answer.json?.title, "string");
  assert.equal(typeof answer.json?.detail, "string");
  return answer.json!;
}

/** Assert that no queue file exists in any state and the API recorded no submission. */
export async function assertNothingQueued(spool: string): Promise<void> {
  assert.deepEqual(await allQueueFiles(spool), []);
  assert.deepEqual(await readdir(join(spool, "http")), []);
}

/** A cloud's Node entry on loopback that takes `key` for *@example.net and relays to `upstream` (AUTH u/p), its store in `store`. */
export function startCloudRelay(key: TestKey, upstream: SmtpUpstream, store: string): Promise<CloudServer> {
  return serveCloudOnNamedPort(
    (port) =>
      parseCloudConfig(
        JSON.stringify({
          listen: `127.0.0.1:${port}`,
          authority: [`127.0.0.1:${port}`],
          keys: [{ id: key.id, publicKey: key.publicKey, senders: ["*@example.net"] }],
          onward: { transport: "smtp", host: "127.0.0.1", port: upstream.port, tls: "starttls", verify: false, auth: { user: "u", password: "p" } },
          store,
        }),
        "cloud-relay.yaml",
      ),
    silentLog,
  );
}
