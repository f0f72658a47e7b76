/**
 * app — the cloud half as one Hono app over web-standard Request/Response: `POST /v1/messages`
 * takes a signed message, raw or as JSON (cheapest checks first, the signature before the body),
 * and relays it onward; `GET /v1/info`, `/v1/whoami`, `/healthz`. The Node and Lambda entries only wrap it.
 */
import { createHash, randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { gunzip } from "node:zlib";
import { Hono, type Context } from "hono";
import { parseItem, serializeDictionary, type BareItem, type Item } from "structured-headers";
import { parseAddress, senderMatches } from "../shared/address.js";
import type { Envelope } from "../shared/envelope.js";
import type { MailLog } from "../shared/log.js";
import { DigestCheck, expectedDigest } from "../shared/protocol/content-digest.js";
import type { Ed25519 } from "../shared/protocol/ed25519.js";
import { EnvelopeFieldError, parseEnvelopeFrom, parseEnvelopeTo } from "../shared/protocol/envelope-fields.js";
import { headerFromAddresses } from "../shared/submission/header-from.js";
import { readJsonMessageBody } from "../shared/submission/json-message.js";
import type { SignedMessage } from "../shared/protocol/message-signature.js";
import { BARE_COMPONENTS, MESSAGE_COMPONENTS, verifyRequest, type SignatureProblem, type VerifiedSignature } from "../shared/protocol/signed-request.js";
import type { CloudConfig } from "./config.js";
import { OnwardRefusal, type OnwardTransport, type RelayResult } from "./onward/onward.js";
import { ProblemError, problemResponse } from "../shared/problem-details.js";
import { refusalProblem, requestProblem, type ProblemName } from "./problems.js";
import type { CloudStore } from "./store/store.js";

/** The version of the wire protocol, as `/v1/info` reports it. */
export const PROTOCOL_VERSION = 1;

/** How long an in-progress idempotency record blocks retries if the relay never finishes (a crash), seconds. */
const IN_PROGRESS_SECONDS = 900;
/** The most recipients one request may name (Postfix smtpd_recipient_limit). */
const MAX_RECIPIENTS = 1000;
/** The longest nonce accepted; longer ones would only fill the store. */
const MAX_NONCE_LENGTH = 128;

/** What the app is built from. */
export interface CloudAppDeps {
  config: CloudConfig;
  store: CloudStore;
  onward: OnwardTransport;
  ed25519: Ed25519;
  log: MailLog;
  /** Milliseconds since the epoch; default Date.now. */
  now?: () => number;
  /** The caller's IP address as the entry sees it (the socket's peer on Node, the Function URL's sourceIp on Lambda); default `unknown`. */
  clientAddress?: (c: Context) => string;
}

/** What one request's log line says, filled in as the request is handled. */
interface RequestRecord {
  keyid?: string;
  recipients?: number;
  results?: Record<RelayResult["results"][number]["status"], number>;
  problem?: string;
}

type CloudEnv = { Variables: { record: RequestRecord } };

/** The cloud app; `app.fetch(request)` answers one request. */
export type CloudApp = Hono<CloudEnv>;

/** Build the cloud app from its dependencies. */
export function createCloudApp(deps: CloudAppDeps): CloudApp {
  const { config, store, onward, log } = deps;
  const now = deps.now ?? Date.now;
  const clientAddress = deps.clientAddress ?? (() => "unknown");
  const keys = new Map(config.keys.map((k) => [k.id, { ...k, raw: new Uint8Array(Buffer.from(k.publicKey, "base64")) }]));
  const authorities = new Set(config.authority.map((a) => a.toLowerCase()));
  const rates = new KeyRateLimiter();
  const app = new Hono<CloudEnv>();

  /**
   * Check the request's signature over `required` and claim its nonce; returns the verified signature.
   * A request for an authority this relay does not serve is 401 too: like a bad key it is the
   * agent's configuration to fix, and the agent holds its mail for a 401 rather than bouncing it.
   */
  const authenticate = async (request: Request, required: string[]): Promise<VerifiedSignature> => {
    const message = signedMessage(request);
    if (!authorities.has(message.url.host.toLowerCase())) {
      throw requestProblem("wrong-authority", `${message.url.host} is not an authority of this relay`, { "accept-signature": acceptSignature(required) });
    }
    const nowSeconds = Math.floor(now() / 1000);
    const verdict = await verifyRequest(message, {
      ed25519: deps.ed25519,
      publicKey: (keyid) => keys.get(keyid)?.raw ?? null,
      required,
      now: nowSeconds,
      window: config.signatureWindow,
    });
    const unauthorized = (name: ProblemName, detail: string) => requestProblem(name, detail, { "accept-signature": acceptSignature(required) });
    if (!verdict.ok) throw unauthorized(SIGNATURE_PROBLEMS[verdict.problem], verdict.detail);
    const { keyid, nonce, created } = verdict.signature;
    if (nonce.length === 0 || nonce.length > MAX_NONCE_LENGTH) throw unauthorized("signature-malformed", `a nonce must have 1 to ${MAX_NONCE_LENGTH} characters`);
    // Remembered for as long as the signature would pass the window check.
    if (!(await store.claimNonce(keyid, nonce, created + config.signatureWindow, nowSeconds))) {
      throw unauthorized("replayed", "a request with this signature nonce was already accepted");
    }
    return verdict.signature;
  };

  app.use(async (c, next) => {
    const started = now();
    const record: RequestRecord = {};
    c.set("record", record);
    await next();
    const { status } = c.res;
    const { method, path } = c.req;
    const client = clientAddress(c);
    const duration = (now() - started) / 1000;
    const r = record.results;
    const text = [
      `${method} ${path} status=${status}`,
      `client=${client}`,
      ...(record.keyid ? [`keyid=${record.keyid}`] : []),
      ...(record.recipients !== undefined ? [`rcpt=${record.recipients}`] : []),
      ...(r ? [`sent=${r.sent} deferred=${r.deferred} failed=${r.failed}`] : []),
      ...(record.problem ? [`problem=${record.problem}`] : []),
      `duration=${duration.toFixed(3)}`,
    ].join(" ");
    const fields = { method, path, status, client, keyid: record.keyid, recipients: record.recipients, results: r, problem: record.problem, duration };
    if (path === "/healthz") log.debug(text, fields);
    else log.info(text, fields);
  });

  // `@query` is not among the signed components, so a query string could be changed unseen.
  app.use(async (c, next) => {
    if (c.req.url.includes("?")) throw requestProblem("query-not-allowed", "send the request without a query string");
    await next();
  });

  app.onError((err, c) => {
    const problem = err instanceof ProblemError ? err : internalError(log, err);
    c.get("record").problem = problem.problem.type.slice(problem.problem.type.lastIndexOf("/") + 1);
    return problemResponse(problem);
  });
  app.notFound(() => problemResponse(requestProblem("not-found", "the resources are POST /v1/messages, GET /v1/info, GET /v1/whoami and GET /healthz")));

  app.post("/v1/messages", async (c) => {
    const request = c.req.raw;
    const record = c.get("record");
    const field = (name: string) => request.headers.get(name);

    // Header checks that need no key and no body.
    const contentType = field("content-type");
    const mediaType = contentType?.split(";")[0]!.trim().toLowerCase();
    if (mediaType !== "message/rfc822" && mediaType !== "application/json") {
      throw requestProblem("unsupported-media-type", `Content-Type is ${contentType ?? "missing"}; send message/rfc822 or application/json`);
    }
    const coding = field("content-encoding")?.trim().toLowerCase();
    if (coding !== undefined && coding !== "gzip" && coding !== "identity") {
      throw requestProblem("unsupported-content-encoding", `Content-Encoding ${coding} is not accepted; send gzip or nothing`);
    }
    const missing = ["content-digest", "envelope-from", "envelope-to", "idempotency-key"].filter((name) => field(name) === null);
    if (missing.length > 0) throw requestProblem("missing-field", `the request has no ${missing.join(", ")} field`);

    // The signature, over the header fields only.
    const required = coding === undefined ? MESSAGE_COMPONENTS : [...MESSAGE_COMPONENTS, "content-encoding"];
    const { keyid } = await authenticate(request, required);
    record.keyid = keyid;
    const key = keys.get(keyid)!;

    // What the signed fields say.
    const envelope = readEnvelope(field("envelope-from")!, field("envelope-to")!);
    record.recipients = envelope.recipients.length;
    if (envelope.sender === "") {
      if (!key.nullSender) throw requestProblem("null-sender-not-allowed", `key ${keyid} may not send with the null sender <>`);
    } else if (!key.senders.some((p) => senderMatches(envelope.sender, p))) {
      throw requestProblem("sender-not-allowed", `key ${keyid} may not send for <${envelope.sender}>`);
    }
    const wait = rates.take(keyid, key.ratePerMinute, now());
    if (wait > 0) throw requestProblem("rate-limited", `key ${keyid} may send ${key.ratePerMinute} requests per minute`, { "retry-after": String(wait) });
    const idempotencyKey = readIdempotencyKey(field("idempotency-key")!);
    const digest = expectedDigest(field("content-digest")!);
    if (!digest) throw requestProblem("bad-content-digest", "Content-Digest must carry sha-256 or sha-512 as a byte sequence");
    const declared = field("content-length");
    if (declared !== null && Number(declared) > config.maxMessageSize) {
      throw requestProblem("too-large", `the body has ${declared} octets; this relay accepts at most ${config.maxMessageSize}`);
    }

    // The body: its size and digest, then the content coding.
    const sent = await readBody(request, config.maxMessageSize, new DigestCheck(digest), declared !== null && /^\d+$/.test(declared));
    const body = coding === "gzip" ? await gunzipCapped(sent, config.maxMessageSize) : sent;
    const { raw, headerFrom } = mediaType === "application/json" ? await composeJson(body, envelope, config) : { raw: body, headerFrom: readHeaderFrom(body) };
    const foreign = headerFrom.find((address) => !key.senders.some((p) => senderMatches(address, p)));
    if (foreign !== undefined) throw requestProblem("from-not-allowed", `key ${keyid} may not send with From: <${foreign}>`);

    // Idempotency: one relay per (key id, Idempotency-Key) and message.
    const fingerprint = createHash("sha256")
      .update(JSON.stringify([digest.algorithm, digest.digest.toString("base64"), envelope]))
      .digest("hex");
    const nowSeconds = Math.floor(now() / 1000);
    const existing = await store.beginIdempotent(keyid, idempotencyKey, fingerprint, nowSeconds + Math.min(IN_PROGRESS_SECONDS, config.idempotencyTtl), nowSeconds);
    if (existing) {
      if (existing.fingerprint !== fingerprint) throw requestProblem("idempotency-key-reused", "this Idempotency-Key was used for a different message or envelope; use a new key");
      if (existing.state === "in-progress") throw requestProblem("idempotency-in-progress", "a request with this Idempotency-Key is still being relayed");
      const kept = JSON.parse(existing.body) as RelayResult | Record<string, unknown>;
      if (isRelayResult(kept)) record.results = countResults(kept);
      return jsonTextResponse(existing.status, existing.body);
    }

    let result: RelayResult;
    try {
      result = await onward.relay({ envelope, raw, headerFrom });
    } catch (err) {
      await store.abandonIdempotent(keyid, idempotencyKey);
      throw err instanceof OnwardRefusal ? refusalProblem(err) : err;
    }
    record.results = countResults(result);
    const answer = JSON.stringify(result);
    // Only deferrals: nothing happened that a retry could repeat, so the same key may try again.
    if (result.results.every((r) => r.status === "deferred")) await store.abandonIdempotent(keyid, idempotencyKey);
    else {
      await store
        .finishIdempotent(keyid, idempotencyKey, { state: "done", fingerprint, expiresAt: Math.floor(now() / 1000) + config.idempotencyTtl, status: 200, body: answer })
        .catch((err: Error) => log.error(`the answer for Idempotency-Key ${idempotencyKey} of ${keyid} was not saved: ${err.message}`));
    }
    return jsonTextResponse(200, answer);
  });

  app.get("/v1/whoami", async (c) => {
    const { keyid } = await authenticate(c.req.raw, BARE_COMPONENTS);
    c.get("record").keyid = keyid;
    return jsonResponse(200, { ip: clientAddress(c), keyid });
  });

  app.get("/v1/info", () =>
    jsonResponse(200, {
      protocol: PROTOCOL_VERSION,
      signature: { algorithm: "ed25519", components: MESSAGE_COMPONENTS, componentsWhenPresent: ["content-encoding"], window: config.signatureWindow },
      contentEncodings: ["gzip"],
      maxMessageSize: config.maxMessageSize,
    }),
  );

  app.get("/healthz", () => new Response("ok\n", { headers: { "content-type": "text/plain" } }));

  for (const [path, allow] of [
    ["/v1/messages", "POST"],
    ["/v1/whoami", "GET"],
    ["/v1/info", "GET"],
    ["/healthz", "GET"],
  ] as const) {
    app.all(path, (c) => {
      throw requestProblem("method-not-allowed", `${c.req.method} is not allowed for ${path}; use ${allow}`, { allow });
    });
  }
  return app;
}

/** The verifier's verdicts as problem types. */
const SIGNATURE_PROBLEMS: Record<SignatureProblem, ProblemName> = {
  missing: "signature-missing",
  malformed: "signature-malformed",
  components: "signature-incomplete",
  "unknown-key": "unknown-key",
  expired: "signature-expired",
  "bad-signature": "bad-signature",
};

/** The request as the signature verifier sees it. */
function signedMessage(request: Request): SignedMessage {
  return { method: request.method, url: new URL(request.url), header: (name) => request.headers.get(name) };
}

/** `Accept-Signature` (RFC 9421 section 5.1): any label, these components, with created, nonce and Ed25519. */
export function acceptSignature(components: string[]): string {
  const params = new Map<string, BareItem>([
    ["created", true],
    ["nonce", true],
    ["alg", "ed25519"],
  ]);
  return serializeDictionary(new Map([["hr", [components.map((c): Item => [c, new Map()]), params]]]));
}

/** The envelope from its two fields; every address must be one SMTP would take. */
function readEnvelope(from: string, to: string): Envelope {
  let envelope: Envelope;
  try {
    envelope = { ...parseEnvelopeFrom(from), recipients: parseEnvelopeTo(to) };
  } catch (err) {
    if (err instanceof EnvelopeFieldError) throw requestProblem("bad-envelope", err.message);
    throw err;
  }
  if (envelope.recipients.length > MAX_RECIPIENTS) throw requestProblem("bad-envelope", `more than ${MAX_RECIPIENTS} recipients`);
  for (const address of [...(envelope.sender === "" ? [] : [envelope.sender]), ...envelope.recipients.map((r) => r.address)]) {
    const parsed = parseAddress(address);
    if (!parsed.ok || parsed.flaws.includes("source-route")) throw requestProblem("bad-envelope", `<${address}> is not a mailbox address`);
  }
  return envelope;
}

/** The Idempotency-Key field: a structured-field string (the IETF draft's form). */
function readIdempotencyKey(value: string): string {
  let item: Item;
  try {
    item = parseItem(value);
  } catch {
    throw requestProblem("bad-idempotency-key", "Idempotency-Key is not a structured field item");
  }
  const [key] = item;
  if (typeof key !== "string" || key.length === 0 || key.length > 255) throw requestProblem("bad-idempotency-key", `Idempotency-Key ${value.slice(0, 80)} is not a quoted string of 1 to 255 characters`);
  return key;
}

/**
 * Read the body as sent, at most `limit` octets, and check its digest. A body with a declared
 * length (already checked against the limit) is read whole, since the HTTP layer delivers no more
 * than it declares: on the Node entry that skips building a web stream and a full Request per
 * submission (about a sixth of the CPU a 4 KiB one took). A chunked body is checked as it streams
 * and cut off at the limit.
 */
async function readBody(request: Request, limit: number, check: DigestCheck, declaresLength: boolean): Promise<Buffer> {
  const incomplete = (err: Error) => {
    throw requestProblem("incomplete-body", `the body could not be read: ${err.message}`);
  };
  const tooLarge = () => requestProblem("too-large", `the body is larger than ${limit} octets, the most this relay accepts`);
  let body: Buffer;
  if (declaresLength) {
    body = Buffer.from(await request.arrayBuffer().catch(incomplete));
    if (body.length > limit) throw tooLarge();
    check.update(body);
  } else {
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (request.body) {
      const reader = request.body.getReader();
      for (;;) {
        const next = await reader.read().catch(incomplete);
        if (next.done) break;
        size += next.value.length;
        if (size > limit) {
          reader.cancel().catch(() => {});
          throw tooLarge();
        }
        check.update(next.value);
        chunks.push(next.value);
      }
    }
    body = Buffer.concat(chunks, size);
  }
  if (!check.matches()) throw requestProblem("digest-mismatch", "the body does not match its Content-Digest");
  return body;
}

const gunzipAsync = promisify(gunzip);

/** Decompress a gzip body, stopping as soon as it would exceed `limit` octets (no zip bombs). */
async function gunzipCapped(body: Buffer, limit: number): Promise<Buffer> {
  try {
    return await gunzipAsync(body, { maxOutputLength: limit });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
      throw requestProblem("too-large", `the message is larger than ${limit} octets once decompressed, the most this relay accepts`);
    }
    throw requestProblem("bad-content-encoding", `the body does not decompress: ${(err as Error).message}`);
  }
}

/**
 * A JSON message (the agent's local API form, for scripts away from home) composed with
 * nodemailer's MailComposer. Its envelope must be the one the signed Envelope-From/To fields
 * state: those were checked against the key before the body was read, and their DSN parameters are relayed.
 */
async function composeJson(body: Buffer, envelope: Envelope, config: CloudConfig): Promise<{ raw: Buffer; headerFrom: string[] }> {
  const read = readJsonMessageBody(body);
  if (!read.ok) throw new ProblemError(read.problem);
  const addresses = (e: Envelope) => [e.sender, ...e.recipients.map((r) => r.address)].map((a) => a.toLowerCase()).join(" ");
  if (addresses(read.envelope) !== addresses(envelope)) {
    throw requestProblem("bad-envelope", "Envelope-From and Envelope-To must name the JSON message's envelope sender and recipients, in order");
  }
  const raw = Buffer.concat(await read.compose({ messageId: `<${randomUUID()}@${config.authority[0]}>` }).toArray());
  if (raw.length > config.maxMessageSize) throw requestProblem("too-large", `the composed message has ${raw.length} octets; this relay accepts at most ${config.maxMessageSize}`);
  return { raw, headerFrom: read.headerFrom };
}

/** The addresses of the message's one From: header field. */
function readHeaderFrom(raw: Buffer): string[] {
  const from = headerFromAddresses(raw);
  if (!from.ok) throw requestProblem("bad-message", from.problem.detail ?? "the From: header field cannot be read");
  return from.addresses;
}

function countResults(result: RelayResult): Record<RelayResult["results"][number]["status"], number> {
  const counts = { sent: 0, deferred: 0, failed: 0 };
  for (const r of result.results) counts[r.status]++;
  return counts;
}

function isRelayResult(body: RelayResult | Record<string, unknown>): body is RelayResult {
  return Array.isArray(body.results);
}

function jsonResponse(status: number, body: unknown): Response {
  return jsonTextResponse(status, JSON.stringify(body));
}

function jsonTextResponse(status: number, text: string): Response {
  return new Response(text, { status, headers: { "content-type": "application/json" } });
}

function internalError(log: MailLog, err: Error): ProblemError {
  log.error(`request failed: ${err.message}`);
  return requestProblem("internal-error", "the relay failed; try again later");
}

/** Requests per minute per key: a token bucket holding up to a minute's worth, in memory (per process). */
class KeyRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  /** Take one request for `keyid`: 0 when it may go ahead, else the seconds until it may. */
  take(keyid: string, perMinute: number, nowMs: number): number {
    const bucket = this.buckets.get(keyid) ?? { tokens: perMinute, at: nowMs };
    bucket.tokens = Math.min(perMinute, bucket.tokens + ((nowMs - bucket.at) * perMinute) / 60_000);
    bucket.at = nowMs;
    this.buckets.set(keyid, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - bucket.tokens) * 60) / perMinute);
  }
}
