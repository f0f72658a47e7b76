/**
 * ses — the Amazon SES onward transport: SES v1 `SendRawEmail` with the envelope as `Source` and
 * `Destinations` and the message bytes untouched, paced to the account's send rate. SES insists
 * that `Source` and the header From: are verified identities and uses its own MAIL FROM, so the
 * null sender, forwarded mail with a foreign From: and SMTPUTF8 local parts are refused up front
 * (422) and the agent takes the route's next fallback. SES "sent" means accepted by SES for
 * delivery: bounces and complaints come later, from SES, to the sender's identity.
 */
import { randomUUID } from "node:crypto";
import { domainToASCII } from "node:url";
import { GetSendQuotaCommand, SendRawEmailCommand, SESClient } from "@aws-sdk/client-ses";
import { silentLog, type MailLog } from "../../shared/log.js";
import type { CloudConfig } from "../config.js";
import { OnwardRefusal, type OnwardMessage, type OnwardTransport, type RecipientResult, type RelayResult } from "./onward.js";

/** The `onward` section of the cloud configuration when it names SES. */
export type SesOnwardConfig = Extract<CloudConfig["onward"], { transport: "ses" }>;

/** What tests and entry points may supply instead of the defaults. */
export interface SesTransportOptions {
  /** A ready client; by default one is made from the configuration (region, endpoint). */
  client?: SESClient;
  /** Milliseconds since the epoch, for pacing and the quota cache. */
  now?: () => number;
  log?: MailLog;
}

/** SES takes at most 50 destinations per SendRawEmail; larger envelopes go in several calls. */
const MAX_DESTINATIONS = 50;
/** How long a GetSendQuota answer (or the failure to get one) is trusted, ms. */
const QUOTA_TTL_MS = 60_000;
/** GetSendQuota answers in tens of ms; a longer wait is not worth holding a message for. */
const QUOTA_TIMEOUT_MS = 1_000;

/**
 * The SES transport. Each SES call is tried once (no SDK retries): the cloud keeps no queue,
 * and a retry inside it would hold the agent's request open, hide throttling from the agent's
 * Retry-After, and could send twice after a lost answer. The agent's queue does the retrying.
 */
export function createSesTransport(config: SesOnwardConfig, options: SesTransportOptions = {}): OnwardTransport {
  const client =
    options.client ??
    new SESClient({
      region: config.region,
      ...(config.endpoint !== undefined ? { endpoint: config.endpoint } : {}),
      maxAttempts: 1,
      requestHandler: { connectionTimeout: 5_000, requestTimeout: 30_000 },
    });
  const ownsClient = options.client === undefined;
  const now = options.now ?? Date.now;
  const log = options.log ?? silentLog;
  const pacer = new SendRatePacer(client, now, log);

  return {
    name: "ses",
    async relay(message: OnwardMessage): Promise<RelayResult> {
      const { source, destinations } = sesAddresses(message);
      await pacer.take(destinations.length);

      const results: RecipientResult[] = [];
      const messageIds: string[] = [];
      for (let i = 0; i < destinations.length; i += MAX_DESTINATIONS) {
        const batch = destinations.slice(i, i + MAX_DESTINATIONS);
        const recipients = message.envelope.recipients.slice(i, i + MAX_DESTINATIONS).map((r) => r.address);
        try {
          const answer = await client.send(
            new SendRawEmailCommand({
              Source: source,
              Destinations: batch,
              RawMessage: { Data: message.raw },
              ...(config.configurationSet !== undefined ? { ConfigurationSetName: config.configurationSet } : {}),
            }),
          );
          const id = answer.MessageId ?? "(no MessageId)";
          messageIds.push(id);
          for (const recipient of recipients) results.push({ recipient, status: "sent", dsn: "2.0.0", detail: `SES accepted, MessageId ${id}` });
        } catch (err) {
          const outcome = classify(err);
          if (outcome.kind === "rejected") {
            for (const recipient of recipients) results.push({ recipient, status: "failed", dsn: "5.7.1", detail: `SES rejected the message: ${outcome.message}` });
            continue;
          }
          // Nothing decided yet: refuse the whole request, so the agent retries it as it is.
          if (results.length === 0) throw outcome.refusal;
          // Earlier batches were decided and must not be sent again: the rest is deferred.
          const dsn = outcome.refusal.httpStatus === 429 ? "4.4.5" : "4.4.0";
          for (const recipient of message.envelope.recipients.slice(i).map((r) => r.address)) {
            results.push({ recipient, status: "deferred", dsn, detail: outcome.refusal.message });
          }
          break;
        }
      }
      return { id: messageIds[0] ?? randomUUID(), results };
    },
    async close() {
      if (ownsClient) client.destroy();
    },
  };
}

/** Source and Destinations as SES takes them, or the refusal of a message SES cannot send. */
function sesAddresses(message: OnwardMessage): { source: string; destinations: string[] } {
  const { sender, recipients } = message.envelope;
  if (sender === "") {
    throw new OnwardRefusal("null-sender-not-supported", 422, "SES cannot send with the null sender <>: it sets its own MAIL FROM, so bounces need another route");
  }
  const senderDomain = domainOf(sender);
  const foreign = message.headerFrom.find((from) => domainOf(from) !== senderDomain);
  if (foreign !== undefined) {
    throw new OnwardRefusal(
      "foreign-from-not-supported",
      422,
      `SES cannot send a From: of ${foreign} for the envelope sender ${sender}: the header From: must be a verified identity of the sender's domain (forwarded mail needs another route)`,
    );
  }
  const addresses = [sender, ...recipients.map((r) => r.address)];
  const ascii = addresses.map(asciiAddress);
  const unsendable = addresses.find((_, i) => ascii[i] === null);
  if (unsendable !== undefined) {
    throw new OnwardRefusal("smtputf8-not-supported", 422, `SES does not support SMTPUTF8: the address ${unsendable} has a non-ASCII local part`);
  }
  const [source, ...destinations] = ascii as string[];
  return { source: source!, destinations };
}

/** The lower-case domain of an address (after its last @). */
function domainOf(address: string): string {
  return address.slice(address.lastIndexOf("@") + 1).toLowerCase();
}

/** An address with its domain in Punycode, or null when the local part is not ASCII (SES has no SMTPUTF8). */
function asciiAddress(address: string): string | null {
  const at = address.lastIndexOf("@");
  const local = address.slice(0, at);
  if (/[^\x00-\x7f]/.test(local)) return null;
  const domain = address.slice(at + 1);
  return /[^\x00-\x7f]/.test(domain) ? `${local}@${domainToASCII(domain) || domain}` : address;
}

/** What an SES error means for the message. */
function classify(err: unknown): { kind: "rejected"; message: string } | { kind: "refused"; refusal: OnwardRefusal } {
  const { name, message } = err instanceof Error ? err : { name: "Error", message: String(err) };
  // "Email address is not verified": an identity still pending DKIM, or any recipient while the
  // account is in the SES sandbox. A setup problem, not the recipients' fault: held, not bounced.
  if (name === "MessageRejected" && /not verified/i.test(message)) {
    return { kind: "refused", refusal: new OnwardRefusal("ses-not-verified", 403, `SES: ${message} (verify the identity, or leave the SES sandbox)`) };
  }
  if (name === "MessageRejected") return { kind: "rejected", message };
  if (name === "Throttling" || name === "ThrottlingException") {
    // SES says "Daily message quota exceeded." when the 24-hour quota is used up; the rate limit clears in a second.
    const retryAfter = /daily/i.test(message) ? 3_600 : 1;
    return { kind: "refused", refusal: new OnwardRefusal("ses-throttled", 429, `SES throttled the request: ${message}`, retryAfter) };
  }
  // Server errors, network trouble, credentials, a paused account: the hop failed, not the
  // recipients. 503 rather than per-recipient "deferred": SES gave no verdict on anyone, and a
  // refusal leaves no final idempotency answer behind, so the agent's retry really retries.
  return { kind: "refused", refusal: new OnwardRefusal("ses-unavailable", 503, `SES did not take the message: ${name}: ${message}`, 60) };
}

/**
 * A token bucket filled at the account's MaxSendRate (recipients per second, as SES counts),
 * holding one second's worth. Pacing is per process: concurrent Lambda containers each pace
 * alone, and SES's own Throttling answer (429) covers what they send together.
 */
class SendRatePacer {
  private rate: number | null = null;
  private checkedAt = -Infinity;
  private pending: Promise<void> | null = null;
  private tokens = 0;
  private filledAt = 0;

  constructor(
    private readonly client: SESClient,
    private readonly now: () => number,
    private readonly log: MailLog,
  ) {}

  /** Take `recipients` tokens, or throw a 429 refusal saying when there will be enough. */
  async take(recipients: number): Promise<void> {
    await this.refreshQuota();
    const rate = this.rate;
    if (rate === null) return;
    const t = this.now();
    this.tokens = Math.min(rate, this.tokens + ((t - this.filledAt) / 1000) * rate);
    this.filledAt = t;
    // A message for more recipients than one second's worth goes out from a full bucket and leaves a debt.
    const needed = Math.min(recipients, rate);
    if (this.tokens < needed) {
      const retryAfter = Math.max(1, Math.ceil((needed - this.tokens) / rate));
      throw new OnwardRefusal("send-rate-exceeded", 429, `the SES account's send rate of ${rate} per second is used up`, retryAfter);
    }
    this.tokens -= recipients;
  }

  private async refreshQuota(): Promise<void> {
    if (this.now() - this.checkedAt < QUOTA_TTL_MS) return;
    this.pending ??= this.fetchQuota().finally(() => {
      this.pending = null;
    });
    await this.pending;
  }

  private async fetchQuota(): Promise<void> {
    try {
      const quota = await this.client.send(new GetSendQuotaCommand({}), { abortSignal: AbortSignal.timeout(QUOTA_TIMEOUT_MS) });
      const rate = quota.MaxSendRate !== undefined && quota.MaxSendRate > 0 ? quota.MaxSendRate : null;
      // A first quota, or a raised one, starts with a full bucket.
      if (rate !== null && (this.rate === null || rate > this.rate)) {
        this.tokens = rate;
        this.filledAt = this.now();
      }
      this.rate = rate;
    } catch (err) {
      // Without the quota send unpaced; SES's Throttling still answers 429.
      const { name, message } = err as Error;
      if (/AccessDenied/i.test(name)) {
        // GetSendQuota cannot be scoped to a resource, so a least-privilege role may not have it: ask once, not every minute.
        this.log.warn(`no permission for ses:GetSendQuota (${message}); pacing only by SES's own Throttling answers`);
        this.rate = null;
        this.checkedAt = Infinity;
        return;
      }
      this.log.warn(`cannot read the SES send quota (${name}: ${message}); sending unpaced for now`);
      this.rate = null;
    }
    this.checkedAt = this.now();
  }
}
