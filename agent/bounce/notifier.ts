/**
 * notifier — the bounce service (Postfix bounce(8)): turns final failures, long delays and asked-for
 * successes into RFC 3464 notices from MAILER-DAEMON and queues them like any other mail. It never
 * bounces a bounce: a failed null-sender message is logged and, if configured, reported to postmaster.
 */
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { EnvelopeRecipient } from "../../shared/envelope.js";
import type { MailLog } from "../../shared/log.js";
import { IncomingQueueFile, openContent, type QueuedMessage } from "../queue/queue-file.js";
import type { Spool } from "../queue/spool.js";
import type { RecipientStatus } from "../queue/status-log.js";
import { composeDsn, wantsDsn, type DsnKind, type DsnRecipient } from "./dsn.js";

/** One recipient to report on: its envelope entry (for NOTIFY and ORCPT) and its outcome. */
export interface NoticeItem {
  recipient: EnvelopeRecipient;
  result: Omit<RecipientStatus, "time"> & { time: number };
}

/** What the notifier needs. */
export interface NotifierOptions {
  spool: Spool;
  hostname: string;
  log: MailLog;
  /** Send postmaster a report of bounces that cannot be returned (null sender). */
  notifyPostmaster: boolean;
  /** A notice was committed to active/. */
  queued(message: QueuedMessage): void;
}

/** Sends delivery status notifications. */
export class Notifier {
  constructor(private readonly o: NotifierOptions) {}

  /** Recipients that bounced (or expired): a non-delivery notification to the sender. */
  async failure(message: QueuedMessage, items: NoticeItem[], now: Date): Promise<void> {
    const { sender } = message.record.envelope;
    if (sender === "") {
      const id = message.record.id;
      this.o.log.info(`${id}: undeliverable notice or null-sender mail; never bouncing a bounce`);
      // Postmaster hears of it once (Postfix's double bounce); a failed report to postmaster itself stops here.
      if (this.o.notifyPostmaster && !this.isPostmasterReport(message)) {
        await this.send("failure", message, items, this.postmaster, "postmaster non-delivery notification", now);
      }
      return;
    }
    const wanted = items.filter((i) => wantsDsn("failure", i.recipient.notify));
    if (wanted.length > 0) await this.send("failure", message, wanted, sender, "sender non-delivery notification", now);
  }

  /** Recipients still deferred after the warning time: one "still trying" notice per message. */
  async delay(message: QueuedMessage, items: NoticeItem[], retryUntil: Date, now: Date): Promise<void> {
    const { sender } = message.record.envelope;
    if (sender === "") return;
    const wanted = items.filter((i) => wantsDsn("delay", i.recipient.notify));
    if (wanted.length > 0) await this.send("delay", message, wanted, sender, "sender delay notification", now, retryUntil);
  }

  /** Recipients delivered that asked for NOTIFY=SUCCESS and whose next hop will not report it. */
  async success(message: QueuedMessage, items: NoticeItem[], now: Date): Promise<void> {
    const { sender } = message.record.envelope;
    if (sender === "") return;
    await this.send("success", message, items, sender, "sender delivery status notification", now);
  }

  private get postmaster(): string {
    return `postmaster@${this.o.hostname}`;
  }

  /** A notice this service sent to postmaster (and nobody else). */
  private isPostmasterReport(message: QueuedMessage): boolean {
    const { record } = message;
    return record.origin === "bounce" && record.envelope.recipients.every((r) => r.address.toLowerCase() === this.postmaster.toLowerCase());
  }

  private async send(kind: DsnKind, message: QueuedMessage, items: NoticeItem[], to: string, what: string, now: Date, retryUntil?: Date): Promise<void> {
    const { record } = message;
    const recipients: DsnRecipient[] = items.map(({ recipient, result }) => {
      // Remote-MTA names an SMTP server; the cloud route's relay is a URL, not one.
      const host = result.relay.startsWith("cloud[") ? undefined : /^([^[\s]+)\[/.exec(result.relay)?.[1];
      const fromHost = /^host \S+ said: (.*) \(in reply to .*\)$/.exec(result.detail)?.[1];
      return {
        address: recipient.address,
        ...(recipient.orcpt ? { orcpt: recipient.orcpt } : {}),
        action: kind === "failure" ? "failed" : kind === "delay" ? "delayed" : result.relay === "local" ? "delivered" : "relayed",
        status: result.dsn,
        ...(host ? { remoteMta: `dns; ${host}` } : {}),
        // composeDsn adds the diagnostic type (smtp; or X-Homerelay;) itself.
        diagnostic: fromHost ?? result.detail,
        lastAttempt: new Date(result.time),
        ...(retryUntil ? { willRetryUntil: retryUntil } : {}),
      };
    });
    const dsn = await composeDsn({
      kind,
      hostname: this.o.hostname,
      queueId: record.id,
      sender: to,
      arrival: new Date(record.arrival),
      ...(record.envelope.envid ? { envid: record.envelope.envid } : {}),
      // Postfix returns the whole message with a bounce (within a size limit) and only headers with warnings.
      ret: kind === "failure" ? (record.envelope.ret ?? "FULL") : "HDRS",
      recipients,
      original: openContent(this.o.spool, message),
      messageId: `<${record.id}.${kind}.${now.getTime()}@${this.o.hostname}>`,
      date: now,
      maxReturnedSize: 50_000,
    });
    const file = await IncomingQueueFile.create(this.o.spool, { envelope: { sender: "", recipients: [{ address: to }] }, origin: "bounce" });
    let queued: QueuedMessage;
    try {
      await pipeline(Readable.from([dsn]), file.content());
      queued = await file.commit();
    } catch (err) {
      await file.abort();
      throw err;
    }
    this.o.log.info(`${record.id}: ${what}: ${file.id}`);
    this.o.queued(queued);
  }
}
