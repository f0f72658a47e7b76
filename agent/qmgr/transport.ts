/**
 * transport — the contract between the queue manager and each way out (local delivery, SMTP,
 * cloud): given a message and some of its recipients, try once and say what happened to each.
 */
import type { EnvelopeRecipient } from "../../shared/envelope.js";
import type { RouteStep } from "../router/router.js";
import type { QueuedMessage } from "../queue/queue-file.js";
import type { RecipientStatus } from "../queue/status-log.js";

/** One delivery attempt handed to a transport. */
export interface DeliveryRequest {
  message: QueuedMessage;
  /** The recipients this transport is to try now; all share the same route step and domain. */
  recipients: EnvelopeRecipient[];
  /** The way out being tried (a transport may serve several, e.g. `mx` and `smarthost:isp`). */
  step: RouteStep;
  /** The recipients' domain, lower case. */
  domain: string;
  /** A fresh stream of the message content (CRLF line ends). */
  content(): NodeJS.ReadableStream;
}

/** The outcome for one recipient, before the queue manager stamps the time. */
export type DeliveryResult = Omit<RecipientStatus, "time"> & {
  /** Nothing could be reached (network or DNS down): the queue manager may consider itself offline. */
  unreachable?: boolean;
  /** The next hop offered DSN; without it, NOTIFY=SUCCESS gets a "relayed" notice from us. */
  dsnOffered?: boolean;
  /**
   * A `deferred` that is the owner's to fix, not the sender's (the cloud refused the agent's key):
   * unless a fallback delivers it, the message waits in hold/ for `homerelay queue release`, and never expires.
   */
  hold?: true;
  /** A `deferred` because the message is too large for this way out: the fallback may take it; at the end of the chain it bounces with 5.3.4. */
  tooLarge?: true;
  /** The next hop's 4xx/5xx reply as sent, when it answered: judged for a refusal of the home address. */
  reply?: string;
};

/** A way out of the queue. A transport never throws for a recipient: it reports `deferred`. */
export interface Transport {
  /** Name in logs and routes: `local`, `smtp`, `cloud`. */
  readonly name: string;
  deliver(request: DeliveryRequest): Promise<DeliveryResult[]>;
}
