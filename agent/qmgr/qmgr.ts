/**
 * qmgr — the queue manager (Postfix qmgr(8)). Takes messages from active/, hands their pending
 * recipients to transports, records every outcome durably before acting on it, removes a message
 * once every recipient is done, and otherwise parks it in deferred/ with its next attempt time as
 * the file's mtime, as Postfix does. Messages whose time has come move back to active/.
 */
import { readdir, stat, unlink, utimes } from "node:fs/promises";
import type { EnvelopeRecipient } from "../../shared/envelope.js";
import type { MailLog } from "../../shared/log.js";
import { CorruptQueueFile, moveQueueFile, openContent, readQueueFile, type QueuedMessage } from "../queue/queue-file.js";
import { isQueueId } from "../queue/queue-id.js";
import type { Spool } from "../queue/spool.js";
import { appendStatus, isFinal, readStatus, removeStatus, type RecipientStatus } from "../queue/status-log.js";
import type { DeliveryResult, Transport } from "./transport.js";

/** Where a recipient goes: a transport, or a reason it cannot go anywhere yet (deferred). */
export type RouteDecision = { transport: Transport } | { defer: string };

/** Retry timing (Postfix minimal_backoff_time, maximal_backoff_time, queue_run_delay). */
export interface RetrySchedule {
  /** Seconds before the first retry. */
  minBackoff: number;
  /** Upper bound of the doubling backoff, seconds. */
  maxBackoff: number;
  /** How often deferred/ is scanned for messages that are due, seconds. */
  scanInterval: number;
}

/** What the queue manager is built from. */
export interface QmgrOptions {
  spool: Spool;
  log: MailLog;
  route(recipient: EnvelopeRecipient, message: QueuedMessage): RouteDecision;
  retry: RetrySchedule;
  /** Messages in delivery at once. */
  concurrency: number;
  now?: () => number;
}

/** The queue manager of one agent. */
export class QueueManager {
  private readonly waiting: string[] = [];
  private readonly queued = new Set<string>();
  /** Messages just committed by intake: their record is known and they have no status log yet. */
  private readonly fresh = new Map<string, QueuedMessage>();
  private readonly running = new Map<string, Promise<void>>();
  private scanTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly now: () => number;

  constructor(private readonly o: QmgrOptions) {
    this.now = o.now ?? Date.now;
  }

  /**
   * Recover after a stop or crash: files left in incoming/ were never acknowledged and are
   * removed; everything in active/ is delivered again (at worst a duplicate, never a loss).
   */
  async start(): Promise<void> {
    const { spool, log } = this.o;
    for (const name of await readdir(spool.dir("incoming"))) {
      await unlink(spool.file("incoming", name)).catch(() => {});
      log.info(`${name}: removed unfinished queue file from incoming/`);
    }
    for (const name of (await readdir(spool.dir("active"))).sort()) this.enqueue(name);
    this.scanTimer = setInterval(() => void this.scanDeferred(), this.o.retry.scanInterval * 1000);
    this.scanTimer.unref();
  }

  /** Stop taking new work and wait for deliveries in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.scanTimer) clearInterval(this.scanTimer);
    await Promise.allSettled([...this.running.values()]);
  }

  /** A message has arrived in active/; `fresh` is its record when intake just wrote it. */
  enqueue(id: string, fresh?: QueuedMessage): void {
    if (!isQueueId(id) || this.queued.has(id) || this.running.has(id)) return;
    if (fresh) this.fresh.set(id, fresh);
    this.queued.add(id);
    this.waiting.push(id);
    this.pump();
  }

  /** Move every deferred message whose retry time has come (or all, with `force`) back to active/. */
  async scanDeferred(force = false): Promise<number> {
    const { spool, log } = this.o;
    let moved = 0;
    let names: string[];
    try {
      names = (await readdir(spool.dir("deferred"))).sort();
    } catch (err) {
      log.warn(`cannot scan deferred queue: ${(err as Error).message}`);
      return 0;
    }
    for (const id of names) {
      if (this.stopped) break;
      try {
        if (!force && (await stat(spool.file("deferred", id))).mtimeMs > this.now()) continue;
        await moveQueueFile(spool, id, "deferred", "active");
        moved++;
        this.enqueue(id);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") log.warn(`${id}: cannot move to active queue: ${(err as Error).message}`);
      }
    }
    return moved;
  }

  /** Resolves once nothing is waiting or being delivered (for tests and orderly shutdown). */
  async idle(): Promise<void> {
    while (this.running.size > 0 || this.waiting.length > 0) {
      await Promise.allSettled([...this.running.values()]);
      await new Promise((r) => setImmediate(r));
    }
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.o.concurrency && this.waiting.length > 0) {
      const id = this.waiting.shift()!;
      this.queued.delete(id);
      const work = this.process(id)
        .catch((err: Error) => this.o.log.error(`${id}: ${err.message}`))
        .finally(() => {
          this.running.delete(id);
          this.pump();
        });
      this.running.set(id, work);
    }
  }

  private async process(id: string): Promise<void> {
    const { spool, log } = this.o;
    let message: QueuedMessage;
    const fresh = this.fresh.get(id);
    this.fresh.delete(id);
    try {
      message = fresh ?? (await readQueueFile(spool, "active", id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      if (err instanceof CorruptQueueFile) {
        log.warn(`${err.message}; moved to corrupt/`);
        await moveQueueFile(spool, id, "active", "corrupt");
        return;
      }
      throw err;
    }
    const done = fresh ? new Map<string, RecipientStatus>() : await readStatus(spool, id);
    const hadStatus = done.size > 0;
    const pending = message.record.envelope.recipients.filter((r) => !isFinal(done.get(r.address)?.status ?? "deferred"));

    const started = this.now();
    const byTransport = new Map<Transport, EnvelopeRecipient[]>();
    const results: RecipientStatus[] = [];
    for (const r of pending) {
      const decision = this.o.route(r, message);
      if ("defer" in decision) {
        results.push({ recipient: r.address, status: "deferred", dsn: "4.3.0", relay: "none", detail: decision.defer, time: started });
        continue;
      }
      const list = byTransport.get(decision.transport) ?? [];
      list.push(r);
      byTransport.set(decision.transport, list);
    }
    const attempts = [...byTransport].map(async ([transport, recipients]) => {
      let outcome: DeliveryResult[];
      try {
        outcome = await transport.deliver({ message, recipients, content: () => openContent(spool, message) });
      } catch (err) {
        // A transport bug must not lose mail: treat it as a temporary failure of every recipient.
        const detail = `${transport.name} transport failed: ${(err as Error).message}`;
        outcome = recipients.map((r) => ({ recipient: r.address, status: "deferred", dsn: "4.3.0", relay: transport.name, detail }));
      }
      const finished = this.now();
      for (const o of outcome) results.push({ ...o, time: finished });
    });
    await Promise.all(attempts);

    for (const r of results) {
      const delay = ((r.time - message.record.arrival) / 1000).toFixed(2);
      const inQueue = ((started - message.record.arrival) / 1000).toFixed(2);
      const attempt = ((r.time - started) / 1000).toFixed(2);
      log.info(`${id}: to=<${r.recipient}>, relay=${r.relay}, delay=${delay}, delays=${inQueue}/0/0/${attempt}, dsn=${r.dsn}, status=${r.status} (${r.detail})`, {
        queueId: id,
        to: r.recipient,
        relay: r.relay,
        delay: Number(delay),
        dsn: r.dsn,
        status: r.status,
      });
    }
    for (const r of results) done.set(r.recipient, r);

    const unfinished = message.record.envelope.recipients.some((r) => !isFinal(done.get(r.address)?.status ?? "deferred"));
    if (!unfinished) {
      // No sync: should the unlink be lost in a crash, the message is delivered again (a duplicate, never a loss).
      await unlink(spool.file("active", id));
      if (hadStatus) await removeStatus(spool, id);
      log.info(`${id}: removed`);
      return;
    }
    // Final outcomes must be durable before the message waits for a retry, or they would be repeated;
    // deferrals are only the reason shown by the queue tools and need no fsync.
    await appendStatus(spool, id, results, results.some((r) => isFinal(r.status)));
    await this.defer(message);
  }

  /** Park the message in deferred/ with its next attempt time as mtime (doubling with its age in the queue). */
  private async defer(message: QueuedMessage): Promise<void> {
    const { spool, retry } = this.o;
    const id = message.record.id;
    const now = this.now();
    const age = Math.max(0, (now - message.record.arrival) / 1000);
    const backoff = Math.min(retry.maxBackoff, Math.max(retry.minBackoff, age));
    const due = new Date(now + backoff * 1000);
    await utimes(spool.file("active", id), due, due);
    await moveQueueFile(spool, id, "active", "deferred");
  }
}
