/**
 * problems — every error the cloud answers, as RFC 9457 `application/problem+json` with a stable
 * `type` URI under https://homerelay.dev/problems/, so that clients act on the type, not the text.
 * The onward transports' refusals (OnwardRefusal) are listed here too and answered the same way.
 */
import { PROBLEM_BASE, ProblemError } from "../shared/problem-details.js";
import { MESSAGE_PROBLEMS } from "../shared/submission/message-problems.js";
import type { OnwardRefusal } from "./onward/onward.js";

/** Every problem type: its HTTP status and its title (the same for every occurrence). */
export const PROBLEMS = {
  // The request as a whole.
  "query-not-allowed": { status: 400, title: "The request has a query string, which the signature cannot cover" },
  "not-found": { status: 404, title: "No such resource" },
  "method-not-allowed": { status: 405, title: "The method is not allowed for this resource" },
  "unsupported-media-type": { status: 415, title: "The body must be a message/rfc822 message or a JSON message" },
  "unsupported-content-encoding": { status: 415, title: "The only content coding accepted is gzip" },
  "missing-field": { status: 400, title: "A required header field is missing" },
  // The signature (RFC 9421); every 401 carries Accept-Signature.
  "wrong-authority": { status: 401, title: "The request was not addressed to an authority of this relay" },
  "signature-missing": { status: 401, title: "The request is not signed" },
  "signature-malformed": { status: 401, title: "The Signature-Input or Signature field cannot be used" },
  "signature-incomplete": { status: 401, title: "No signature covers the required components" },
  "signature-expired": { status: 401, title: "The signature was created too long ago or in the future" },
  "unknown-key": { status: 401, title: "The signing key is not known to this relay" },
  "bad-signature": { status: 401, title: "The signature does not match the request" },
  replayed: { status: 401, title: "This signature nonce was already used" },
  // What the signed header fields say.
  "bad-envelope": { status: 400, title: "The Envelope-From or Envelope-To field is malformed" },
  "bad-idempotency-key": { status: 400, title: "Idempotency-Key must be a quoted string of 1 to 255 characters" },
  "bad-content-digest": { status: 400, title: "Content-Digest names no accepted algorithm (sha-256, sha-512)" },
  "sender-not-allowed": { status: 403, title: "The key may not send for this envelope sender" },
  "null-sender-not-allowed": { status: 403, title: "The key may not send with the null sender <>" },
  "rate-limited": { status: 429, title: "Too many requests for this key" },
  // The body.
  "too-large": { status: 413, title: "The message is larger than this relay accepts" },
  "incomplete-body": { status: 400, title: "The body ended before it was complete" },
  "digest-mismatch": { status: 400, title: "The body does not match its Content-Digest" },
  "bad-content-encoding": { status: 400, title: "The body is not valid gzip" },
  "from-not-allowed": { status: 403, title: "The key may not send with this header From: address" },
  // Idempotency.
  "idempotency-in-progress": { status: 409, title: "A request with this Idempotency-Key is still in progress" },
  "idempotency-key-reused": { status: 422, title: "This Idempotency-Key was used for a different message or envelope" },
  // Onward refusals (OnwardRefusal types of the transports).
  "null-sender-not-supported": { status: 422, title: "The onward transport cannot send with the null sender" },
  "foreign-from-not-supported": { status: 422, title: "The onward transport cannot send this header From: address" },
  "smtputf8-not-supported": { status: 422, title: "The onward transport cannot send SMTPUTF8 addresses" },
  "send-rate-exceeded": { status: 429, title: "The onward transport's send rate is used up" },
  "ses-throttled": { status: 429, title: "Amazon SES throttled the request" },
  "ses-unavailable": { status: 503, title: "Amazon SES did not take the message" },
  // 403, like a key not allowed to send: the owner's to fix (verify the identity, leave the sandbox); the agent holds the mail.
  "ses-not-verified": { status: 403, title: "Amazon SES refused an address that is not verified for this account" },
  // The relay itself.
  "internal-error": { status: 500, title: "The relay failed unexpectedly" },
  // A JSON message (or a raw one without a readable From:), as the agent's HTTP API refuses it too.
  ...MESSAGE_PROBLEMS,
} as const satisfies Record<string, { status: number; title: string }>;

/** The name of a problem type, e.g. `bad-signature`. */
export type ProblemName = keyof typeof PROBLEMS;

/** The problem `name` with `detail`, ready to throw. */
export function requestProblem(name: ProblemName, detail: string, headers: Record<string, string> = {}): ProblemError {
  const { status, title } = PROBLEMS[name];
  return new ProblemError({ type: PROBLEM_BASE + name, title, status, detail }, headers);
}

/** An onward transport's refusal as a problem, with Retry-After when the transport gave one. */
export function refusalProblem(refusal: OnwardRefusal): ProblemError {
  const known = (PROBLEMS as Record<string, { title: string }>)[refusal.type];
  return new ProblemError(
    { type: PROBLEM_BASE + refusal.type, title: known?.title ?? "The onward transport refused the message", status: refusal.httpStatus, detail: refusal.message },
    refusal.retryAfter !== undefined ? { "retry-after": String(Math.max(1, Math.ceil(refusal.retryAfter))) } : {},
  );
}
