/**
 * onward — the contract between the cloud app and its ways out (SES, an SMTP upstream, direct
 * MX): relay one message for its envelope and say what happened to each recipient. The cloud
 * keeps no queue: temporary failures come back as `deferred` for the agent to retry.
 */
import type { Envelope } from "../../shared/envelope.js";

/** What happened to one recipient, as sent back to the agent in the 200 answer. */
export interface RecipientResult {
  recipient: string;
  status: "sent" | "deferred" | "failed";
  /** RFC 3463 enhanced status code. */
  dsn: string;
  detail: string;
}

/** The JSON body of a successful POST /v1/messages. */
export interface RelayResult {
  /** The cloud's id for this relay (e.g. the SES message id, or a generated one). */
  id: string;
  results: RecipientResult[];
}

/** A message to relay: the envelope and the raw RFC 5322 bytes (already decompressed and digest-checked). */
export interface OnwardMessage {
  envelope: Envelope;
  raw: Buffer;
  /** The header From: address(es), for transports that need them (SES identities). */
  headerFrom: string[];
}

/** Why a transport will not even try this message (the agent takes the route's next fallback). */
export class OnwardRefusal extends Error {
  constructor(
    /** Stable problem type suffix, e.g. `null-sender-not-supported`. */
    readonly type: string,
    readonly httpStatus: 403 | 413 | 422 | 429 | 503,
    message: string,
    /** Seconds, for 429/503 answers. */
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}

/** One way onward. */
export interface OnwardTransport {
  readonly name: "ses" | "smtp" | "mx";
  /** Throws OnwardRefusal for messages it cannot take; otherwise one result per envelope recipient. */
  relay(message: OnwardMessage): Promise<RelayResult>;
  close?(): Promise<void>;
}
