/**
 * api-problems — every error the local submission API answers, as RFC 9457 problems with the
 * stable type URIs the cloud uses (same name where the meaning is the same: `sender-not-allowed`,
 * `too-large`, …), plus the message problems both APIs share. Refusals are thrown as ProblemError.
 */
import { problemOf, ProblemError, type ProblemType } from "../../shared/problem-details.js";
import { MESSAGE_PROBLEMS } from "../../shared/submission/message-problems.js";

/** Every problem type of the local API. */
export const API_PROBLEMS = {
  ...MESSAGE_PROBLEMS,
  "not-found": { status: 404, title: "No such resource" },
  "method-not-allowed": { status: 405, title: "The method is not allowed for this resource" },
  "unsupported-media-type": { status: 415, title: "The body must be application/json or message/rfc822" },
  "token-missing": { status: 401, title: "The request carries no bearer token" },
  "bad-token": { status: 401, title: "The bearer token is not one this agent accepts" },
  "missing-field": { status: 400, title: "A required header field is missing" },
  "bad-envelope": { status: 400, title: "The Envelope-From or Envelope-To field is malformed" },
  "sender-not-allowed": { status: 403, title: "The token may not send for this envelope sender" },
  "null-sender-not-allowed": { status: 403, title: "The token may not send with the null sender <>" },
  "from-not-allowed": { status: 403, title: "The token may not send with this header From: address" },
  "too-many-recipients": { status: 400, title: "The message has more recipients than this agent accepts" },
  "unknown-recipient": { status: 400, title: "A local recipient does not exist" },
  "too-large": { status: 413, title: "The message is larger than this agent accepts" },
  "line-too-long": { status: 400, title: "A line of the message is longer than this agent accepts" },
  "header-too-large": { status: 400, title: "The message header is larger than this agent accepts" },
  "mail-loop": { status: 400, title: "The message has too many Received: header fields: a mail loop" },
  "queue-unavailable": { status: 503, title: "The queue cannot take the message now; try again later" },
  "internal-error": { status: 500, title: "The agent failed unexpectedly" },
} as const satisfies Record<string, ProblemType>;

/** The name of a problem type of the local API. */
export type ApiProblemName = keyof typeof API_PROBLEMS;

/** The problem `name` with `detail`, ready to throw. */
export function apiProblem(name: ApiProblemName, detail: string, headers: Record<string, string> = {}): ProblemError {
  return new ProblemError(problemOf(API_PROBLEMS, name, detail), headers);
}
