/**
 * homerelay-client — a small typed client of homerelay's HTTP submission, on `fetch`: the agent's
 * local API (a bearer token; `202` once the message is queued) or a cloud (requests signed with an
 * Ed25519 key as RFC 9421 and docs/protocol.md say; `200` once its onward relay has answered).
 * `import { HomerelayClient } from "homerelay/client"`.
 */
import { contentDigest } from "../protocol/content-digest.js";
import { defaultEd25519, seedFromPkcs8Pem, type Ed25519 } from "../protocol/ed25519.js";
import { formatEnvelopeFrom, formatEnvelopeTo } from "../protocol/envelope-fields.js";
import { MESSAGE_COMPONENTS, signRequest } from "../protocol/signed-request.js";
import type { Envelope } from "../envelope.js";
import type { ProblemDetails } from "../problem-details.js";
import { readJsonMessage, type JsonMessage } from "../submission/json-message.js";
import type { MessageStatus, SubmissionAccepted } from "../submission/submission-answers.js";

export type { JsonMessage } from "../submission/json-message.js";
export type { MessageStatus, SubmissionAccepted } from "../submission/submission-answers.js";
export type { ProblemDetails } from "../problem-details.js";

/** The agent's local API: `http://127.0.0.1:8025` and a token from its `http.tokens`. */
export interface LocalApiOptions {
  url: string;
  token: string;
  fetch?: typeof fetch;
}

/** A cloud: its base URL, and the key id and private key it lists (from `homerelay keygen`). */
export interface CloudOptions {
  url: string;
  keyId: string;
  /** PKCS#8 PEM as keygen writes it, or the raw 32-byte seed. */
  privateKey: string | Uint8Array;
  fetch?: typeof fetch;
  /** Default: node:crypto where it exists, else tweetnacl. */
  ed25519?: Ed25519;
}

/** What the cloud did for one recipient. */
export interface RelayedRecipient {
  recipient: string;
  status: "sent" | "deferred" | "failed";
  dsn: string;
  detail: string;
}

/** The agent's answer: the message is in its queue. */
export type Queued = { kind: "queued" } & SubmissionAccepted;

/** The cloud's answer: what its onward relay did for each recipient. */
export interface Relayed {
  kind: "relayed";
  id: string;
  results: RelayedRecipient[];
}

/** What a submission answers, by the kind of client: queued by an agent, relayed by a cloud. */
export type SubmissionResult<O = LocalApiOptions | CloudOptions> = O extends LocalApiOptions ? Queued : Relayed;

/** Options of one submission. */
export interface SendOptions {
  /** For the cloud: the same key on a retry gets the first answer instead of a second relay. Default: a new one. */
  idempotencyKey?: string;
}

/** An answer other than success; `problem` holds the RFC 9457 details when the server sent them. */
export class HomerelayError extends Error {
  constructor(
    readonly status: number,
    readonly problem: ProblemDetails | null,
    /** Seconds from Retry-After (429, 503), or null. */
    readonly retryAfter: number | null,
    message: string,
  ) {
    super(message);
    this.name = "HomerelayError";
  }
}

/** A client of one agent (given a token) or one cloud (given a key). */
export class HomerelayClient<O extends LocalApiOptions | CloudOptions = LocalApiOptions | CloudOptions> {
  private readonly base: string;
  private readonly fetch: typeof fetch;
  private signer: Promise<{ seed: Uint8Array; ed25519: Ed25519 }> | null = null;

  constructor(private readonly options: O) {
    this.base = options.url.replace(/\/+$/, "");
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  /** Submit a JSON message (nodemailer's member names). Invalid messages are refused before anything is sent. */
  async send(message: JsonMessage, options: SendOptions = {}): Promise<SubmissionResult<O>> {
    const read = readJsonMessage(message);
    if (!read.ok) throw new HomerelayError(read.problem.status, read.problem, null, `${read.problem.title}: ${read.problem.detail}`);
    return this.submit("application/json", new TextEncoder().encode(JSON.stringify(message)), read.envelope, options);
  }

  /** Submit a raw RFC 5322 message with its envelope. */
  async sendRaw(message: Uint8Array, envelope: { from: string; to: string[] }, options: SendOptions = {}): Promise<SubmissionResult<O>> {
    return this.submit("message/rfc822", message, { sender: envelope.from, recipients: envelope.to.map((address) => ({ address })) }, options);
  }

  /** Where a message queued by the local API stands (only messages submitted with this client's token; the cloud keeps no queue). */
  async status(this: HomerelayClient<LocalApiOptions>, id: string): Promise<MessageStatus> {
    const response = await this.fetch(`${this.base}/v1/messages/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${this.options.token}` } });
    return (await answer(response, 200)) as MessageStatus;
  }

  private async submit(type: string, body: Uint8Array, envelope: Envelope, options: SendOptions): Promise<SubmissionResult<O>> {
    const url = `${this.base}/v1/messages`;
    const headers: Record<string, string> = { "content-type": type };
    // The agent reads a JSON message's envelope from the JSON; the cloud checks the signed fields before the body.
    if (type === "message/rfc822" || !("token" in this.options)) {
      headers["envelope-from"] = formatEnvelopeFrom(envelope);
      headers["envelope-to"] = formatEnvelopeTo(envelope.recipients);
    }
    if ("token" in this.options) {
      headers.authorization = `Bearer ${this.options.token}`;
      const response = await this.fetch(url, { method: "POST", headers, body });
      const queued: Queued = { kind: "queued", ...((await answer(response, 202)) as SubmissionAccepted) };
      return queued as SubmissionResult<O>;
    }
    headers["content-digest"] = contentDigest(body);
    headers["idempotency-key"] = `"${options.idempotencyKey ?? globalThis.crypto.randomUUID()}"`;
    const { seed, ed25519 } = await this.signingKey(this.options);
    const signed = await signRequest(
      { method: "POST", url: new URL(url), header: (name) => headers[name] ?? null },
      { keyid: this.options.keyId, seed, ed25519, components: MESSAGE_COMPONENTS, nonce: globalThis.crypto.randomUUID() },
    );
    const response = await this.fetch(url, { method: "POST", headers: { ...headers, "signature-input": signed.signatureInput, signature: signed.signature }, body });
    const answered = (await answer(response, 200)) as Omit<Relayed, "kind">;
    const relayed: Relayed = { kind: "relayed", id: answered.id, results: answered.results };
    return relayed as SubmissionResult<O>;
  }

  private signingKey(options: CloudOptions): Promise<{ seed: Uint8Array; ed25519: Ed25519 }> {
    this.signer ??= (async () => ({
      seed: typeof options.privateKey === "string" ? seedFromPkcs8Pem(options.privateKey) : options.privateKey,
      ed25519: options.ed25519 ?? (await defaultEd25519()),
    }))();
    return this.signer;
  }
}

/** The JSON body of an answer with status `expected`; anything else becomes a HomerelayError. */
async function answer(response: Response, expected: number): Promise<unknown> {
  const text = await response.text();
  const json = parseJson(text);
  if (response.status === expected && json !== null) return json;
  const problem = json !== null && typeof json.type === "string" && typeof json.title === "string" ? (json as unknown as ProblemDetails) : null;
  const after = Number(response.headers.get("retry-after"));
  const said = problem ? `${problem.title}: ${problem.detail}` : `HTTP ${response.status} ${text.slice(0, 200)}`;
  throw new HomerelayError(response.status, problem, Number.isFinite(after) && after > 0 ? after : null, said);
}

function parseJson(text: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
