/**
 * cloud-transport — the agent's `cloud` way out: the queued message POSTed to the cloud half
 * (`{url}/v1/messages`), signed with the agent's Ed25519 key (RFC 9421), the envelope in
 * `Envelope-From` / `Envelope-To`, and an `Idempotency-Key` that stays the same while a request
 * goes unanswered. The cloud's answer becomes one result per recipient, as an SMTP next hop's
 * replies do; a refused key holds the message instead of bouncing it (see docs/protocol.md).
 */
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import type { EnvelopeRecipient } from "../../shared/envelope.js";
import type { MailLog } from "../../shared/log.js";
import { contentDigest } from "../../shared/protocol/content-digest.js";
import { defaultEd25519, seedFromPkcs8Pem, type Ed25519 } from "../../shared/protocol/ed25519.js";
import { formatEnvelopeFrom, formatEnvelopeTo } from "../../shared/protocol/envelope-fields.js";
import { MESSAGE_COMPONENTS, signRequest } from "../../shared/protocol/signed-request.js";
import type { AgentConfig } from "../config.js";
import type { DeliveryRequest, DeliveryResult, Transport } from "../qmgr/transport.js";
import { readSecretFile, SecretFileError } from "../../shared/secret-file.js";
import { Semaphore } from "../smtp/semaphore.js";

/** The agent's `cloud:` section. */
export type CloudConfig = NonNullable<AgentConfig["cloud"]>;

/** What the cloud transport is built from. */
export interface CloudTransportOptions {
  cloud: CloudConfig;
  /** Requests to the cloud at once (`delivery.destinationConcurrency`: the cloud is one destination). */
  concurrency: number;
  log: MailLog;
}

/** How long the answer of `GET /v1/info` is trusted, and how long a cloud without one is not asked again. */
const INFO_TTL_MS = 3600_000;
const NO_INFO_TTL_MS = 600_000;
/** Longest piece of a cloud's problem text kept in a detail. */
const MAX_PROBLEM_TEXT = 300;

/** Read the agent's private key; refuses a file others may read or write, and anything but a PKCS#8 PEM Ed25519 key. */
export function loadCloudKey(file: string): Uint8Array {
  const pem = readSecretFile(file, "cloud.keyFile");
  try {
    return seedFromPkcs8Pem(pem);
  } catch (err) {
    throw new SecretFileError(`cloud.keyFile ${file}: ${(err as Error).message} (make one with homerelay keygen)`);
  }
}

/** The `cloud` route's transport. */
export class CloudTransport implements Transport {
  readonly name = "cloud";
  /** `cloud[https://relay.example.net]`, in logs and status records. */
  private readonly relay: string;
  private readonly limit: Semaphore;
  /** The cloud's maximum message size (null: it names none) and until when it is trusted. */
  private info: { maxMessageSize: number | null; until: number } | null = null;

  private constructor(
    private readonly o: CloudTransportOptions,
    private readonly seed: Uint8Array,
    private readonly ed25519: Ed25519,
  ) {
    this.relay = `cloud[${o.cloud.url}]`;
    this.limit = new Semaphore(o.concurrency);
  }

  /** Load the key (throws SecretFileError, as the agent's start refuses) and choose the Ed25519 implementation. */
  static async create(o: CloudTransportOptions): Promise<CloudTransport> {
    return new CloudTransport(o, loadCloudKey(o.cloud.keyFile), await defaultEd25519());
  }

  async deliver(request: DeliveryRequest): Promise<DeliveryResult[]> {
    return this.limit.run(() => this.attempt(request));
  }

  private async attempt(request: DeliveryRequest): Promise<DeliveryResult[]> {
    const { message, recipients } = request;
    const all = (result: Omit<DeliveryResult, "recipient" | "relay">): DeliveryResult[] => recipients.map((r) => ({ recipient: r.address, relay: this.relay, ...result }));

    const info = await this.maxMessageSize();
    if (!info.ok) return all({ status: "deferred", dsn: info.dsn, detail: info.detail, unreachable: true });
    if (info.max !== null && message.size > info.max) {
      return all({ status: "deferred", dsn: "4.3.4", detail: `message size ${message.size} exceeds the cloud's maximum message size of ${info.max} bytes`, tooLarge: true });
    }

    const body = await readAll(request.content());
    const results: DeliveryResult[] = [];
    for (const batch of envelopeBatches(recipients)) results.push(...(await this.post(message, body, batch)));
    return results;
  }

  /** One signed request for the message to `recipients`; one result for each. */
  private async post(message: DeliveryRequest["message"], body: Buffer, recipients: EnvelopeRecipient[]): Promise<DeliveryResult[]> {
    const all = (result: Omit<DeliveryResult, "recipient" | "relay">): DeliveryResult[] => recipients.map((r) => ({ recipient: r.address, relay: this.relay, ...result }));
    const url = new URL(`${this.o.cloud.url}/v1/messages`);
    const headers: Record<string, string> = {
      "content-type": "message/rfc822",
      "content-digest": contentDigest(body),
      "envelope-from": formatEnvelopeFrom(message.record.envelope),
      "envelope-to": formatEnvelopeTo(recipients),
      "idempotency-key": `"${idempotencyKey(message.record.id, recipients)}"`,
    };
    const signed = await signRequest(
      { method: "POST", url, header: (name) => headers[name] ?? null },
      { keyid: this.o.cloud.keyId, seed: this.seed, ed25519: this.ed25519, components: MESSAGE_COMPONENTS, nonce: randomBytes(16).toString("base64url") },
    );
    let response: Response;
    let text: string;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { ...headers, "signature-input": signed.signatureInput, signature: signed.signature },
        body,
        redirect: "manual",
        signal: AbortSignal.timeout(this.o.cloud.timeout * 1000),
      });
      text = await response.text();
    } catch (err) {
      return all({ status: "deferred", ...this.networkFailure(url, err), unreachable: true });
    }

    if (response.status === 200) return this.relayResults(recipients, text);
    const problem = `${response.status} ${describeProblem(response, text)}`;
    const id = message.record.id;
    switch (response.status) {
      case 401:
        return all({
          status: "deferred",
          dsn: "4.7.0",
          detail: `cloud refused the agent's key (${problem}); check that key ${this.o.cloud.keyId} with the public key of ${this.o.cloud.keyFile} is in the cloud's keys: list and that this machine's clock is right, then: homerelay queue release ${id}`,
          hold: true,
        });
      case 403:
        // SES refusing an unverified identity is the owner's to fix at SES, not in the cloud's keys.
        if (problem.includes("/ses-not-verified]")) {
          return all({ status: "deferred", dsn: "4.7.0", detail: `cloud's SES account refused the message (${problem}); verify the sending domain in SES or leave the SES sandbox (docs/aws.md), then: homerelay queue release ${id}`, hold: true });
        }
        return all({
          status: "deferred",
          dsn: "4.7.0",
          detail: `cloud refused the agent's key (${problem}); allow key ${this.o.cloud.keyId} to send as <${message.record.envelope.sender}> (and the message's From:) in its senders: in the cloud's configuration, then: homerelay queue release ${id}`,
          hold: true,
        });
      case 413:
        // The cloud's limit may have changed: ask /v1/info again next time.
        this.info = null;
        return all({ status: "deferred", dsn: "4.3.4", detail: `message size ${message.size} is too large for the cloud (${problem})`, tooLarge: true });
      case 429:
      case 503: {
        const after = response.headers.get("retry-after");
        return all({ status: "deferred", dsn: "4.3.2", detail: `cloud is busy (${problem}${after ? `; Retry-After: ${after.slice(0, 40)}` : ""})` });
      }
      case 422:
        return all({ status: "deferred", dsn: "4.3.5", detail: `cloud cannot relay this message (${problem})` });
      default:
        return all({ status: "deferred", dsn: "4.3.0", detail: `cloud answered ${problem}` });
    }
  }

  /** The cloud's maximum message size from `GET /v1/info` (cached; null when it names none), or why the cloud cannot be reached. */
  private async maxMessageSize(): Promise<{ ok: true; max: number | null } | { ok: false; dsn: string; detail: string }> {
    if (this.info && this.info.until > Date.now()) return { ok: true, max: this.info.maxMessageSize };
    const url = new URL(`${this.o.cloud.url}/v1/info`);
    let response: Response;
    let text: string;
    try {
      response = await fetch(url, { redirect: "manual", signal: AbortSignal.timeout(this.o.cloud.timeout * 1000) });
      text = await response.text();
    } catch (err) {
      return { ok: false, ...this.networkFailure(url, err) };
    }
    const named = response.status === 200 ? jsonObject(text).maxMessageSize : undefined;
    // Without a usable limit, the POST's 413 will say so.
    const max = typeof named === "number" && Number.isInteger(named) && named > 0 ? named : null;
    if (max === null) this.o.log.warn(`cloud ${this.o.cloud.url}: GET /v1/info names no maximum message size (HTTP ${response.status}); relying on 413 answers`);
    this.info = { maxMessageSize: max, until: Date.now() + (max === null ? NO_INFO_TTL_MS : INFO_TTL_MS) };
    return { ok: true, max };
  }

  /** The dsn and detail of a request that got no answer. */
  private networkFailure(url: URL, err: unknown): { dsn: string; detail: string } {
    const e = err as Error & { cause?: Error & { code?: string } };
    if (e.name === "TimeoutError") return { dsn: "4.4.2", detail: `cloud at ${url.origin} did not answer ${url.pathname} within ${this.o.cloud.timeout} s` };
    return { dsn: "4.4.1", detail: `cannot reach the cloud at ${url.origin}: ${e.cause?.message || e.cause?.code || e.message}` };
  }

  /** One result per recipient from a 200 answer's `{ id, results: [{ recipient, status, dsn, detail }] }`. */
  private relayResults(recipients: EnvelopeRecipient[], text: string): DeliveryResult[] {
    const { results } = jsonObject(text);
    const listed = Array.isArray(results) ? (results as unknown[]).filter((x): x is Record<string, unknown> => x !== null && typeof x === "object") : null;
    return recipients.map((r): DeliveryResult => {
      const found = listed?.find((x) => x.recipient === r.address);
      if (!found || !["sent", "deferred", "failed"].includes(found.status as string)) {
        const why = listed ? "has no result for this recipient" : "is not a relay result";
        return { recipient: r.address, status: "deferred", dsn: "4.3.0", relay: this.relay, detail: `cloud's 200 answer ${why}` };
      }
      const status = found.status === "failed" ? "bounced" : (found.status as "sent" | "deferred");
      // The class of the code follows the status, whatever the cloud wrote.
      const klass = { sent: "2", deferred: "4", bounced: "5" }[status];
      const dsn = typeof found.dsn === "string" && /^[245]\.\d{1,3}\.\d{1,3}$/.test(found.dsn) ? `${klass}${found.dsn.slice(1)}` : `${klass}.0.0`;
      const detail = typeof found.detail === "string" && found.detail !== "" ? found.detail : `${found.status as string} by the cloud`;
      return { recipient: r.address, status, dsn, relay: this.relay, detail };
    });
  }
}

/**
 * The Idempotency-Key token of one request: the same for every try of a message to the same
 * recipients, a new one once the recipient set changes (some were delivered or bounced). The cloud
 * forgets a key whose answer deferred every recipient, so retrying under it relays again.
 */
export function idempotencyKey(queueId: string, recipients: EnvelopeRecipient[]): string {
  const addresses = recipients.map((r) => r.address).sort();
  return createHash("sha256").update([queueId, ...addresses].join("\n")).digest("base64url");
}

/** `Title: detail` of a problem answer, or the status text; one line, bounded. */
function describeProblem(response: Response, text: string): string {
  const problem = /json/i.test(response.headers.get("content-type") ?? "") ? jsonObject(text) : {};
  const title = typeof problem.title === "string" ? problem.title : response.statusText;
  const detail = typeof problem.detail === "string" ? `: ${problem.detail}` : "";
  const type = typeof problem.type === "string" ? ` [${problem.type.slice(0, 100)}]` : "";
  // The text may be cut, never the stable problem type an administrator greps for.
  const said = `${title}${detail}`.slice(0, MAX_PROBLEM_TEXT - type.length);
  return `${said}${type}`.replace(/[\x00-\x1f\x7f]+/g, " ");
}

/**
 * The longest Envelope-To field one request carries, octets. HTTP servers limit the header block
 * (Node: 16 KiB in all, Lambda Function URLs alike), so a message for many recipients goes in
 * several requests, each with its own idempotency key (the key covers the recipient set).
 */
const MAX_ENVELOPE_TO = 8192;

/** `recipients` in groups whose Envelope-To field stays under MAX_ENVELOPE_TO. */
function envelopeBatches(recipients: EnvelopeRecipient[]): EnvelopeRecipient[][] {
  const batches: EnvelopeRecipient[][] = [];
  let current: EnvelopeRecipient[] = [];
  for (const r of recipients) {
    if (current.length > 0 && formatEnvelopeTo([...current, r]).length > MAX_ENVELOPE_TO) {
      batches.push(current);
      current = [];
    }
    current.push(r);
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/** The JSON object `text` holds, or an empty one when it holds anything else. */
function jsonObject(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}
