/**
 * message-problems — the problem types of a message submitted over HTTP, the same for the agent's
 * local API and the cloud: a JSON message that cannot be read or composed, an address that is no
 * mailbox, a header field that would smuggle in another (CR, LF, NUL), a raw message without From:.
 */
import type { ProblemType } from "../problem-details.js";

/** Every problem type of a submitted message. */
export const MESSAGE_PROBLEMS = {
  "invalid-json": { status: 400, title: "The body is not valid JSON" },
  "invalid-message": { status: 400, title: "The JSON message does not have the expected form" },
  "unknown-field": { status: 400, title: "The JSON message has a member this API does not know" },
  "header-injection": { status: 400, title: "A header field value or address contains CR, LF or NUL" },
  "bad-address": { status: 400, title: "An address is not a mailbox address" },
  "no-recipients": { status: 400, title: "The message names no recipient" },
  "bad-message": { status: 400, title: "The message has no single readable From: header field" },
} as const satisfies Record<string, ProblemType>;

/** The name of a message problem type, e.g. `header-injection`. */
export type MessageProblemName = keyof typeof MESSAGE_PROBLEMS;
