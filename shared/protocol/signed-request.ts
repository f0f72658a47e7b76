/**
 * signed-request — signing and verifying homerelay's requests with RFC 9421 and Ed25519: which
 * components must be covered, `created` within a window, a `nonce` for the replay guard, and a
 * verdict the cloud turns into its problem responses. Any signature label is accepted.
 */
import type { Ed25519 } from "./ed25519.js";
import { parseSignatures, serializeSignatureParams, signatureBase, SignatureSyntaxError, type SignedMessage } from "./message-signature.js";

/** Components every message submission must cover (plus `content-encoding` when present). */
export const MESSAGE_COMPONENTS = ["@method", "@authority", "@path", "content-type", "content-digest", "envelope-from", "envelope-to", "idempotency-key"];

/** Components a request without a body (GET /v1/whoami) must cover. */
export const BARE_COMPONENTS = ["@method", "@authority", "@path"];

/** How to sign one request. */
export interface SignOptions {
  keyid: string;
  seed: Uint8Array;
  ed25519: Ed25519;
  components: string[];
  /** Unix seconds; default now. */
  created?: number;
  nonce?: string;
  label?: string;
}

/** The `Signature-Input` and `Signature` field values for `message`. */
export async function signRequest(message: SignedMessage, o: SignOptions): Promise<{ signatureInput: string; signature: string }> {
  const label = o.label ?? "hr";
  const params = {
    created: o.created ?? Math.floor(Date.now() / 1000),
    ...(o.nonce !== undefined ? { nonce: o.nonce } : {}),
    alg: "ed25519",
    keyid: o.keyid,
  };
  const serialized = serializeSignatureParams(o.components, params);
  const base = signatureBase(message, o.components, serialized);
  const sig = await o.ed25519.sign(new TextEncoder().encode(base), o.seed);
  return { signatureInput: `${label}=${serialized}`, signature: `${label}=:${Buffer.from(sig).toString("base64")}:` };
}

/** Why a request's signature is not accepted. */
export type SignatureProblem = "missing" | "malformed" | "components" | "unknown-key" | "expired" | "bad-signature";

/** A verified signature: who signed, when, and the nonce to check for replay. */
export interface VerifiedSignature {
  keyid: string;
  created: number;
  nonce: string;
  label: string;
}

/** What the verifier needs to know. */
export interface VerifyOptions {
  ed25519: Ed25519;
  /** The raw public key of `keyid`, or null for an unknown key. */
  publicKey(keyid: string): Uint8Array | null;
  /** Components that must be covered. */
  required: string[];
  /** Now, in Unix seconds. */
  now: number;
  /** Accepted difference between `created` and now, seconds (both directions). */
  window: number;
}

/** Check the request's signatures; the first that covers what is required decides. */
export async function verifyRequest(
  message: SignedMessage,
  o: VerifyOptions,
): Promise<{ ok: true; signature: VerifiedSignature } | { ok: false; problem: SignatureProblem; detail: string }> {
  const input = message.header("signature-input");
  const value = message.header("signature");
  if (input === null || value === null) return { ok: false, problem: "missing", detail: "the request has no Signature-Input and Signature fields" };
  let signatures;
  try {
    signatures = parseSignatures(input, value);
  } catch (err) {
    return { ok: false, problem: "malformed", detail: (err as Error).message };
  }
  const candidate = signatures.find((s) => o.required.every((c) => s.components.includes(c)));
  if (!candidate) return { ok: false, problem: "components", detail: `a signature must cover ${o.required.join(" ")}` };
  const { params } = candidate;
  if (params.alg !== undefined && params.alg !== "ed25519") return { ok: false, problem: "malformed", detail: `algorithm ${params.alg} is not accepted; use ed25519` };
  if (params.keyid === undefined || params.created === undefined || params.nonce === undefined) {
    return { ok: false, problem: "malformed", detail: "the signature needs keyid, created and nonce parameters" };
  }
  if (Math.abs(o.now - params.created) > o.window) return { ok: false, problem: "expired", detail: `created ${params.created} is more than ${o.window} s from the server's time ${o.now}` };
  if (params.expires !== undefined && params.expires < o.now) return { ok: false, problem: "expired", detail: "the signature has expired" };
  const key = o.publicKey(params.keyid);
  if (!key) return { ok: false, problem: "unknown-key", detail: `unknown key ${params.keyid}` };
  let base: string;
  try {
    base = signatureBase(message, candidate.components, candidate.serializedParams);
  } catch (err) {
    if (err instanceof SignatureSyntaxError) return { ok: false, problem: "malformed", detail: err.message };
    throw err;
  }
  if (!(await o.ed25519.verify(new TextEncoder().encode(base), candidate.signature, key))) {
    return { ok: false, problem: "bad-signature", detail: "the signature does not match the request" };
  }
  return { ok: true, signature: { keyid: params.keyid, created: params.created, nonce: params.nonce, label: candidate.label } };
}
