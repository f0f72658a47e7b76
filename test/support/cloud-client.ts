/**
 * cloud-client — a test client of the cloud's signed HTTP protocol: Ed25519 keys, message
 * submissions signed with shared/protocol (RFC 9421, RFC 9530), sent over real HTTP on loopback
 * with node:http (so that Host can name the public authority), answers read back as JSON.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { request as httpRequest } from "node:http";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import type { CloudConfig } from "../../cloud/config.js";
import { serveCloud, type CloudServer } from "../../cloud/serve.js";
import type { MailLog } from "../../shared/log.js";
import { contentDigest } from "../../shared/protocol/content-digest.js";
import { nodeCryptoEd25519, publicKeyFromSeed } from "../../shared/protocol/ed25519.js";
import { signRequest, MESSAGE_COMPONENTS } from "../../shared/protocol/signed-request.js";

/** An agent key: its id, the private seed, and the public key as the cloud config lists it. */
export interface TestKey {
  id: string;
  seed: Uint8Array;
  publicKey: string;
}

/** A fresh Ed25519 key named `id`. */
export function makeKey(id: string): TestKey {
  const seed = new Uint8Array(randomBytes(32));
  return { id, seed, publicKey: Buffer.from(publicKeyFromSeed(seed)).toString("base64") };
}

/** An HTTP request as it will go on the wire; tests change any part after signing. */
export interface WireRequest {
  method: string;
  path: string;
  /** The Host field: the authority the client addressed. */
  host: string;
  /** Lower-case field names. */
  headers: Record<string, string>;
  body?: Buffer;
  /** Send the body in pieces with chunked transfer coding, without Content-Length. */
  chunked?: boolean;
}

/** A message submission's parts. */
export interface Submission {
  /** The body as sent (already gzipped when `contentEncoding` says so). */
  body: Buffer;
  envelopeFrom: string;
  envelopeTo: string;
  /** The field value, quotes included; default a fresh quoted UUID. */
  idempotencyKey?: string;
  contentEncoding?: string;
}

/** A POST /v1/messages request for `s`, unsigned, with Content-Digest over the body as sent. */
export function submission(host: string, s: Submission): WireRequest {
  return {
    method: "POST",
    path: "/v1/messages",
    host,
    headers: {
      "content-type": "message/rfc822",
      "content-digest": contentDigest(s.body),
      "envelope-from": s.envelopeFrom,
      "envelope-to": s.envelopeTo,
      "idempotency-key": s.idempotencyKey ?? `"${randomUUID()}"`,
      ...(s.contentEncoding ? { "content-encoding": s.contentEncoding } : {}),
    },
    body: s.body,
  };
}

/** How to sign: which components (default the message components, plus content-encoding when present), and the parameters. */
export interface SignWith {
  components?: string[];
  created?: number;
  nonce?: string;
  label?: string;
}

/** `request` with Signature-Input and Signature added, signed by `key` over the request as it stands. */
export async function signed(request: WireRequest, key: TestKey, o: SignWith = {}): Promise<WireRequest> {
  const components = o.components ?? (request.headers["content-encoding"] ? [...MESSAGE_COMPONENTS, "content-encoding"] : MESSAGE_COMPONENTS);
  const { signatureInput, signature } = await signRequest(
    { method: request.method, url: new URL(`http://${request.host}${request.path}`), header: (name) => request.headers[name] ?? null },
    {
      keyid: key.id,
      seed: key.seed,
      ed25519: await nodeCryptoEd25519(),
      components,
      nonce: o.nonce ?? randomUUID(),
      ...(o.created !== undefined ? { created: o.created } : {}),
      ...(o.label !== undefined ? { label: o.label } : {}),
    },
  );
  return { ...request, headers: { ...request.headers, "signature-input": signatureInput, signature } };
}

/** An HTTP answer. */
export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The parsed JSON body (problem details or the relay result), or null when it is not JSON. */
  json: Record<string, unknown> | null;
}

/** Send `request` to 127.0.0.1:`port` and read the whole answer. */
export function send(port: number, request: WireRequest): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...request.headers, host: request.host };
    if (request.body && !request.chunked) headers["content-length"] = String(request.body.length);
    const req = httpRequest({ host: "127.0.0.1", port, method: request.method, path: request.path, headers, agent: false });
    let answered = false;
    req.on("response", (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: Record<string, unknown> | null = null;
        if (/json/.test(res.headers["content-type"] ?? "")) json = JSON.parse(text) as Record<string, unknown>;
        resolve({ status: res.statusCode!, headers: res.headers, text, json });
      });
      res.on("error", reject);
    });
    // The server may answer (413, 401) before it has read the body; the answer is what counts.
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    if (request.body && request.chunked) {
      for (let at = 0; at < request.body.length; at += 16_384) req.write(request.body.subarray(at, at + 16_384));
      req.end();
    } else req.end(request.body);
  });
}

/**
 * Start the cloud's Node entry on a loopback port that its own configuration names (`authority`
 * must name the port before the server listens): take a port free a moment ago, and another if
 * someone took it in between.
 */
export async function serveCloudOnNamedPort(configFor: (port: number) => CloudConfig, log: MailLog): Promise<CloudServer> {
  for (let attempt = 1; ; attempt++) {
    const probe = createTcpServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise((resolve) => probe.close(resolve));
    try {
      return await serveCloud(configFor(port), log);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE" || attempt === 10) throw err;
    }
  }
}
