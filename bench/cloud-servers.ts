/**
 * cloud-servers — the HTTP servers the cloud bench loads, one per process, all on @hono/node-server:
 *   app   — the built cloud app (dist/) put together as serveCloud does it (file store, node:crypto
 *           Ed25519, JSON log on standard error), except onward: an instrument that accepts every
 *           recipient at once;
 *   bare  — a bare Hono handler that reads the body and answers 200;
 *   floor — bare plus what any signed API must do: the body's SHA-256 digest and one node:crypto
 *           Ed25519 verify (of a fixed signature base of the same shape as the app's).
 *
 *   node --import tsx bench/cloud-servers.ts app CONFIG_JSON | bare | floor   (prints "listening PORT")
 */
import { createHash, generateKeyPairSync, randomUUID, sign, verify } from "node:crypto";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { serve } from "@hono/node-server";
import { getConnInfo } from "@hono/node-server/conninfo";
import { Hono } from "hono";
import type { OnwardTransport } from "../cloud/onward/onward.js";
import { serializeSignatureParams, signatureBase } from "../shared/protocol/message-signature.js";
import { MESSAGE_COMPONENTS } from "../shared/protocol/signed-request.js";

const [mode, configJson] = process.argv.slice(2);

/** A module of the built cloud half (dist/, what `homerelay-cloud serve` runs), typed as its source. */
const built = <T>(path: string): Promise<T> => import(pathToFileURL(join(resolve(import.meta.dirname, "../dist"), path)).href) as Promise<T>;

/**
 * An instrument, not a transport: it stands in for SES and answers "sent" for every recipient at
 * once, so that the figure is the cloud app's own cost and not the next hop's.
 */
const instantOnward: OnwardTransport = {
  name: "ses",
  async relay({ envelope }) {
    return { id: randomUUID(), results: envelope.recipients.map((r) => ({ recipient: r.address, status: "sent", dsn: "2.0.0", detail: "accepted by the bench instrument" })) };
  },
};

/** Serve `fetch` on a loopback port the way serveCloud does (plain HTTP/1.1, a node:http Server). */
async function start(fetch: (request: Request, env?: unknown) => Response | Promise<Response>): Promise<{ server: Server; port: number }> {
  const server = serve({ fetch, hostname: "127.0.0.1", port: 0 }) as Server;
  const address = await new Promise<AddressInfo>((resolve, reject) => {
    server.once("listening", () => resolve(server.address() as AddressInfo));
    server.once("error", reject);
  });
  return { server, port: address.port };
}

/** What SIGTERM closes after the server: the app's store. */
let closeStore: () => Promise<void> = async () => {};
let server: Server;
let port: number;
if (mode === "app") {
  const { createCloudApp } = await built<typeof import("../cloud/app.js")>("cloud/app.js");
  const { parseCloudConfig } = await built<typeof import("../cloud/config.js")>("cloud/config.js");
  const { FileStore } = await built<typeof import("../cloud/store/file-store.js")>("cloud/store/file-store.js");
  const { createMailLog } = await built<typeof import("../shared/log.js")>("shared/log.js");
  const { defaultEd25519 } = await built<typeof import("../shared/protocol/ed25519.js")>("shared/protocol/ed25519.js");
  const config = parseCloudConfig(configJson!, "cloud bench");
  const store = await FileStore.open(config.store as string);
  const log = createMailLog({ format: config.log.format, level: config.log.level }, "cloud");
  const app = createCloudApp({ config, store, onward: instantOnward, ed25519: await defaultEd25519(), log, clientAddress: (c) => getConnInfo(c).remote.address ?? "unknown" });
  ({ server, port } = await start(app.fetch));
  // As serveCloud does: responses still being worked on at close are the last on their connections.
  const inFlight = new Set<ServerResponse>();
  server.on("request", (_request: IncomingMessage, response: ServerResponse) => {
    inFlight.add(response);
    response.once("close", () => inFlight.delete(response));
  });
  closeStore = () => store.close();
  process.once("SIGTERM", () => {
    for (const response of inFlight) if (!response.headersSent) response.setHeader("connection", "close");
  });
} else if (mode === "bare") {
  const app = new Hono();
  app.post("/v1/messages", async (c) => {
    await c.req.arrayBuffer();
    return c.text("ok\n");
  });
  ({ server, port } = await start(app.fetch));
} else if (mode === "floor") {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const headers: Record<string, string> = {
    "content-type": "message/rfc822",
    "content-digest": `sha-256=:${createHash("sha256").update("bench").digest("base64")}:`,
    "envelope-from": "<bench@example.net>",
    "envelope-to": "<rcpt@example.org>",
    "idempotency-key": `"${randomUUID()}"`,
  };
  const params = serializeSignatureParams(MESSAGE_COMPONENTS, { created: Math.floor(Date.now() / 1000), nonce: randomUUID(), alg: "ed25519", keyid: "bench" });
  const base = Buffer.from(signatureBase({ method: "POST", url: new URL("http://relay.bench.example/v1/messages"), header: (name) => headers[name] ?? null }, MESSAGE_COMPONENTS, params));
  const signature = sign(null, base, privateKey);
  const app = new Hono();
  app.post("/v1/messages", async (c) => {
    const body = await c.req.arrayBuffer();
    createHash("sha256").update(new Uint8Array(body)).digest();
    if (!verify(null, base, publicKey, signature)) throw new Error("the fixed signature does not verify");
    return c.text("ok\n");
  });
  ({ server, port } = await start(app.fetch));
} else {
  throw new Error(`usage: cloud-servers.ts app CONFIG_JSON | bare | floor (not ${mode})`);
}

// A clean exit on SIGTERM (the store closed; node --cpu-prof writes its profile only on a normal exit).
process.once("SIGTERM", () => {
  server.close(() => void closeStore().then(() => process.exit(0)));
});
process.stdout.write(`listening ${port}\n`);
