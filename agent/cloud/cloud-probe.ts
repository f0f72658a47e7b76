/**
 * cloud-probe — the agent's two questions to the cloud half besides sending mail: `GET /v1/info`
 * (unsigned: protocol, signature window, maximum size) and `GET /v1/whoami` (signed with the
 * agent's key: is the key accepted, and which public address does the cloud see). Each answer
 * keeps the cloud's `Date` and when it was asked, so callers can judge the clock.
 */
import { randomBytes } from "node:crypto";
import { isIP } from "node:net";
import { problemName } from "../../shared/problem-details.js";
import { defaultEd25519, publicKeyFromSeed, type Ed25519 } from "../../shared/protocol/ed25519.js";
import { BARE_COMPONENTS, signRequest } from "../../shared/protocol/signed-request.js";
import { loadCloudKey, type CloudConfig } from "./cloud-transport.js";

/** What `GET /v1/info` says, as far as the agent uses it. */
export interface CloudInfo {
  protocol: number | null;
  /** Seconds a signature's `created` may differ from the cloud's clock. */
  signatureWindow: number | null;
  maxMessageSize: number | null;
}

/** What `GET /v1/whoami` says. */
export interface CloudIdentity {
  /** The agent's public address as the cloud sees it. */
  ip: string;
  keyid: string;
}

/** A 200 answer: its content, the cloud's `Date` (ms, null without one), and when the request left and the answer came. */
export interface CloudAnswer<T> {
  ok: true;
  value: T;
  date: number | null;
  sentAt: number;
  receivedAt: number;
}

/** No usable answer: the HTTP status and problem type when the cloud answered, else null; and why, in words. */
export interface CloudFailure {
  ok: false;
  status: number | null;
  /** The problem type's short name (`unknown-key`, `signature-expired`), when the answer was a problem. */
  problem: string | null;
  detail: string;
}

/** Asks the cloud of the `cloud:` section. */
export class CloudProbe {
  private constructor(
    private readonly cloud: CloudConfig,
    private readonly seed: Uint8Array,
    private readonly ed25519: Ed25519,
    private readonly timeoutSeconds: number,
  ) {}

  /** Load the key (throws SecretFileError when it is unsafe or unreadable). */
  static async create(cloud: CloudConfig, timeoutSeconds: number): Promise<CloudProbe> {
    return new CloudProbe(cloud, loadCloudKey(cloud.keyFile), await defaultEd25519(), timeoutSeconds);
  }

  /** The cloud's base URL, for messages. */
  get url(): string {
    return this.cloud.url;
  }

  /** The key id the agent signs with. */
  get keyId(): string {
    return this.cloud.keyId;
  }

  /** The agent's public key as the cloud's `keys:` list holds it (base64 of the raw 32 bytes). */
  get publicKey(): string {
    return Buffer.from(publicKeyFromSeed(this.seed)).toString("base64");
  }

  /** `GET /v1/info`. */
  async info(): Promise<CloudAnswer<CloudInfo> | CloudFailure> {
    const answer = await this.get("/v1/info", {});
    if (!answer.ok) return answer;
    const v = answer.value;
    const signature = v.signature !== null && typeof v.signature === "object" ? (v.signature as Record<string, unknown>) : {};
    return { ...answer, value: { protocol: positive(v.protocol), signatureWindow: positive(signature.window), maxMessageSize: positive(v.maxMessageSize) } };
  }

  /** `GET /v1/whoami`, signed afresh. */
  async whoami(): Promise<CloudAnswer<CloudIdentity> | CloudFailure> {
    const url = new URL(`${this.cloud.url}/v1/whoami`);
    const signed = await signRequest(
      { method: "GET", url, header: () => null },
      { keyid: this.cloud.keyId, seed: this.seed, ed25519: this.ed25519, components: BARE_COMPONENTS, nonce: randomBytes(16).toString("base64url") },
    );
    const answer = await this.get("/v1/whoami", { "signature-input": signed.signatureInput, signature: signed.signature });
    if (!answer.ok) return answer;
    const { ip, keyid } = answer.value;
    if (typeof ip !== "string" || isIP(ip) === 0 || typeof keyid !== "string") {
      return { ok: false, status: 200, problem: null, detail: `the cloud's /v1/whoami answer names no address (${JSON.stringify(ip)?.slice(0, 60)})` };
    }
    return { ...answer, value: { ip, keyid } };
  }

  private async get(path: string, headers: Record<string, string>): Promise<CloudAnswer<Record<string, unknown>> | CloudFailure> {
    const url = new URL(`${this.cloud.url}${path}`);
    const sentAt = Date.now();
    let response: Response;
    let parsed: unknown;
    try {
      response = await fetch(url, { headers, redirect: "manual", signal: AbortSignal.timeout(this.timeoutSeconds * 1000) });
      // A body that is no JSON reads as null: the status says what went wrong then.
      parsed = await response.json().catch(() => null);
    } catch (err) {
      const e = err as Error & { cause?: Error & { code?: string } };
      const why = e.name === "TimeoutError" ? `no answer within ${this.timeoutSeconds} s` : (e.cause?.code ?? e.cause?.message ?? e.message);
      return { ok: false, status: null, problem: null, detail: `cannot reach the cloud at ${url.origin}${path}: ${why}` };
    }
    const receivedAt = Date.now();
    const body = parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
    if (response.status !== 200) {
      const problem = typeof body.type === "string" ? problemName({ type: body.type, title: "", status: response.status, detail: "" }) : null;
      const detail = typeof body.detail === "string" ? body.detail : response.statusText;
      return { ok: false, status: response.status, problem, detail: `${path} answered ${response.status}${problem ? ` ${problem}` : ""}: ${detail}`.replace(/[\x00-\x1f\x7f]+/g, " ").slice(0, 300) };
    }
    const date = response.headers.get("date");
    return { ok: true, value: body, date: date !== null && !Number.isNaN(Date.parse(date)) ? Date.parse(date) : null, sentAt, receivedAt };
  }
}

/** `value` when it is a positive integer, else null. */
function positive(value: unknown): number | null {
  return typeof value === "number" && Number.isInteger(value) && value > 0 ? value : null;
}
