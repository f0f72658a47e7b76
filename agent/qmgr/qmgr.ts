/**
 * qmgr — the queue manager (Postfix qmgr(8)). Takes messages from active/, routes each pending
 * recipient and walks its fallback chain, records outcomes durably before acting on them, has
 * bounces, delay warnings and success notices sent, removes a message once every recipient is
 * done, and otherwise parks it in deferred/ (or hold/) with its next attempt time as the file's
 * mtime. When nothing can be reached it waits quietly and flushes the queue once something can.
 */
import { readdir, stat, unlink, utimes } from "node:fs/promises";
import type { EnvelopeRecipient } from "../../shared/envelope.js";
import type { MailLog } from "../../shared/log.js";
import type { Notifier } from "../bounce/notifier.js";
import { CorruptQueueFile, moveQueueFile, openContent, readQueueFile, type QueuedMessage } from "../queue/queue-file.js";
import { isQueueId } from "../queue/queue-id.js";
import type { QueueState, Spool } from "../queue/spool.js";
import { appendStatus, isFinal, readStatus, removeStatus, type RecipientStatus, type StatusLog } from "../queue/status-log.js";
import { routeName, type RouteChoice, type RouteStep } from "../router/router.js";
import type { DirectRouteAdvisor } from "../reroute/direct-route-advisor.js";
import type { DeliveryResult, Transport } from "./transport.js";

/** The most message content that messages waiting for their first attempt keep in memory, octets. */
const FRESH_CONTENT_BUDGET = 8 * 1024 * 1024;

/** Retry and notification timing, in seconds (Postfix names in brackets). */
export interface QueueTiming {
  /** [minimal_backoff_time] */
  minBackoff: number;
  /** [maximal_backoff_time] */
  maxBackoff: number;
  /** [maximal_queue_lifetime] */
  lifetime: number;
  /** [delay_warning_time]; 0 = never. */
  delayWarning: number;
  /** [queue_run_delay] */
  scanInterval: number;
}

/** What the queue manager is built from. */
export interface QmgrOptions {
  spool: Spool;
  log: MailLog;
  route(recipient: string, sender: string): RouteChoice;
  /** The transport for each kind of route step (`local`, `mx`, `smarthost`, `cloud`). */
  transports: Partial<Record<RouteStep["kind"], Transport>>;
  notifier: Notifier;
  /** Told each recipient's outcome of each attempt (the HTTP API's status records). */
  outcome?(id: string, status: RecipientStatus): void;
  /** Judges direct-delivery refusals and learns the receivers that refuse the home address; without it, no re-routing. */
  directRoutes?: DirectRouteAdvisor;
  timing: QueueTiming;
  /** Messages in delivery at once. */
  concurrency: number;
  now?: () => number;
}

/** A recipient's result in this attempt, with the route step that produced it. */
type Attempt = DeliveryResult & { time: number };

/** The queue manager of one agent. */
export class QueueManager {
  private readonly waiting: string[] = [];
  private readonly queued = new Set<string>();
  private readonly running = new Map<string, Promise<void>>();
  /** Messages just committed by intake: their record is known and they have no status log yet. */
  private readonly fresh = new Map<string, QueuedMessage>();
  /** Octets of content the fresh messages hold in memory, at most FRESH_CONTENT_BUDGET. */
  private freshContent = 0;
  /**
   * Final outcomes of messages whose bookkeeping failed after delivery (a read-only or full spool):
   * remembered here so that the retry only finishes the bookkeeping and delivers nothing twice.
   */
  private readonly settled = new Map<string, RecipientStatus[]>();
  private scanTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private offline = false;
  private readonly now: () => number;

  constructor(private o: QmgrOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Take new routing, transports and timing (configuration reload). */
  reconfigure(o: QmgrOptions): void {
    this.o = o;
    if (this.scanTimer) {
      clearInterval(this.scanTimer);
      this.startScanning();
    }
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
    this.startScanning();
  }

  private startScanning(): void {
    this.scanTimer = setInterval(() => {
      void this.scanDeferred();
      if (this.offline) void this.probe();
    }, this.o.timing.scanInterval * 1000);
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
    if (fresh) {
      // A backlog keeps its content on disk only: what waits in memory stays bounded.
      const { content, ...rest } = fresh;
      const keep = content !== undefined && this.freshContent + content.length <= FRESH_CONTENT_BUDGET;
      if (keep) this.freshContent += content.length;
      this.fresh.set(id, keep ? fresh : rest);
    }
    this.queued.add(id);
    this.waiting.push(id);
    this.pump();
  }

  /**
   * Move deferred messages back to active/: those whose retry time has come, or all of them
   * with `force` (queue flush), or only the given ids / domain's messages.
   */
  async scanDeferred(force = false, only?: (message: QueuedMessage) => boolean): Promise<number> {
    const { spool, log } = this.o;
    let moved = 0;
    let names: string[];
    try {
      names = (await readdir(spool.dir("deferred"))).sort();
    } catch (err) {
      log.warn(`cannot scan deferred queue: ${(err as Error).message}`);
      return 0;
    }
    const now = this.now();
    for (const id of names) {
      if (this.stopped) break;
      try {
        const due = (await stat(spool.file("deferred", id))).mtimeMs;
        // A due time further ahead than the longest backoff means the clock was set back: due now.
        if (!force && due > now && due - now <= this.o.timing.maxBackoff * 1000) continue;
        if (only && !only(await readQueueFile(spool, "deferred", id))) continue;
        await moveQueueFile(spool, id, "deferred", "active");
        moved++;
        this.enqueue(id);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") log.warn(`${id}: cannot move to active queue: ${(err as Error).message}`);
      }
    }
    return moved;
  }

  /** Offline: try the oldest deferred message now, to notice as soon as the network is back. */
  private async probe(): Promise<void> {
    const names = (await readdir(this.o.spool.dir("deferred")).catch(() => [] as string[])).filter(isQueueId).sort();
    const oldest = names[0];
    if (oldest === undefined) return;
    await moveQueueFile(this.o.spool, oldest, "deferred", "active").then(
      () => this.enqueue(oldest),
      () => {},
    );
  }

  /** Resolves once nothing is waiting or being delivered (tests, orderly shutdown). */
  async idle(): Promise<void> {
    while (this.running.size > 0 || this.waiting.length > 0) {
      await Promise.allSettled([...this.running.values()]);
      await new Promise((r) => setImmediate(r));
    }
  }

  /** The message is waiting for or in delivery: the queue tools must not move it now. */
  busy(id: string): boolean {
    return this.queued.has(id) || this.running.has(id);
  }

  /** Whether the last deliveries found nothing reachable. */
  get isOffline(): boolean {
    return this.offline;
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.o.concurrency && this.waiting.length > 0) {
      const id = this.waiting.shift()!;
      this.queued.delete(id);
      const work = this.process(id)
        .catch((err: Error) => {
          // Storage trouble mid-pass (ENOSPC, EROFS): the message stays in active/ and is tried again later.
          this.o.log.error(`${id}: ${err.message}; will try again in ${this.o.timing.minBackoff}s`);
          setTimeout(() => this.enqueue(id), this.o.timing.minBackoff * 1000).unref();
        })
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
    this.freshContent -= fresh?.content?.length ?? 0;
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
    const history: StatusLog = fresh ? { latest: new Map(), delayWarned: false } : await readStatus(spool, id);
    for (const r of this.settled.get(id) ?? []) history.latest.set(r.recipient, r);
    const { envelope } = message.record;
    const pending = envelope.recipients.filter((r) => !isFinal(history.latest.get(r.address)?.status ?? "deferred"));
    const started = this.now();

    const { results, held } = await this.deliverPending(message, pending, started);
    this.expire(message, results);
    this.log(message, results, started);
    for (const r of results.values()) history.latest.set(r.recipient, r);
    this.noteReachability(results);

    // Notices first, status second: a crash in between repeats a notice, never loses one.
    await this.notify(message, results, history);
    this.settled.set(
      id,
      [...history.latest.values()].filter((r) => isFinal(r.status)),
    );

    const unfinished = envelope.recipients.some((r) => !isFinal(history.latest.get(r.address)?.status ?? "deferred"));
    if (!unfinished) {
      // No sync: should the unlink be lost in a crash, the message is delivered again (a duplicate, never a loss).
      await unlink(spool.file("active", id));
      if (!fresh) await removeStatus(spool, id);
      this.settled.delete(id);
      log.info(`${id}: removed`);
      return;
    }
    // Final outcomes must be durable before the message waits, or they would be repeated;
    // deferral reasons only serve the queue tools and need no fsync. A retry after a failure here
    // writes all that is remembered, not only this attempt's results.
    const entries = [...results.values(), ...(this.settled.get(id) ?? []).filter((r) => !results.has(r.recipient))];
    await appendStatus(spool, id, entries, entries.some((r) => isFinal(r.status)) || history.delayWarnedNow === true, history.delayWarnedNow);
    this.settled.delete(id);
    await this.park(message, held);
  }

  /**
   * Route every pending recipient and walk its fallback chain; returns the last outcome of each,
   * and why the message must wait in hold/ (null: it need not).
   */
  private async deliverPending(message: QueuedMessage, pending: EnvelopeRecipient[], started: number): Promise<{ results: Map<string, Attempt>; held: string | null }> {
    const results = new Map<string, Attempt>();
    let held: string | null = null;
    const chains = new Map<string, { choice: RouteChoice; recipients: EnvelopeRecipient[] }>();
    for (const r of pending) {
      const choice = this.o.route(r.address, message.record.envelope.sender);
      // Only direct MX delivery goes per domain; a smarthost or the cloud takes every domain in one go.
      const steps = choice.steps.map(routeName).join(">");
      const key = choice.steps.some((s) => s.kind === "mx" || s.kind === "local") ? `${choice.domain}|${steps}` : steps;
      const chain = chains.get(key) ?? { choice, recipients: [] };
      chain.recipients.push(r);
      chains.set(key, chain);
    }
    await Promise.all(
      [...chains.values()].map(async ({ choice, recipients }) => {
        let left = recipients;
        /** Recipients a step asked to hold, with the reason; they are held only if no later step takes them. */
        const holdReasons = new Map<string, string>();
        for (const [index, step] of choice.steps.entries()) {
          if (left.length === 0) break;
          if (step.kind === "hold") {
            held ??= "routed to the hold queue";
            for (const r of left) results.delete(r.address);
            left = [];
            break;
          }
          const fallback = choice.steps[index + 1];
          // A receiver learned to refuse the home address gets its mail by the fallback straight away.
          if (step.kind === "mx" && step.auto && fallback && (await this.skipDirect(choice.domain))) continue;
          const outcomes = step.kind === "reject" ? rejectAll(left, step.text) : await this.attempt(message, left, step, choice.domain);
          const time = this.now();
          const next: EnvelopeRecipient[] = [];
          let learnt = false;
          for (const [i, o] of outcomes.entries()) {
            // A refusal of the home address is neither bounced nor left to wait: the fallback takes it now.
            const refusal = step.kind === "mx" && o.status !== "sent" && o.reply !== undefined ? (this.o.directRoutes?.refusal(o.reply) ?? null) : null;
            if (refusal && !learnt) {
              learnt = true;
              await this.o.directRoutes!.learn(choice.domain, o.reply!, refusal).catch((err: Error) => this.o.log.warn(`cannot record the learned route of ${choice.domain}: ${err.message}`));
            }
            if (refusal && fallback) {
              this.logAttempt(message, { ...o, time }, started, "rerouted", `${o.detail}; via ${routeName(fallback)}`);
              next.push(left[i]!);
              continue;
            }
            results.set(o.recipient, { ...o, time });
            if (o.hold) holdReasons.set(o.recipient, o.detail);
            // Only a temporary failure goes on to the fallback; a domain that does not exist still bounces.
            if (o.status === "deferred") next.push(left[i]!);
          }
          left = next;
        }
        // Whoever is still deferred at the end of the chain: too large for the last way out bounces
        // (no fallback is left to take it); refused for a reason the owner must fix is held.
        for (const r of left) {
          const last = results.get(r.address)!;
          const reason = holdReasons.get(r.address);
          if (last.tooLarge) results.set(r.address, { ...last, status: "bounced", dsn: "5.3.4" });
          else if (reason !== undefined) {
            results.set(r.address, { ...last, hold: true });
            held ??= reason;
          }
        }
      }),
    );
    return { results, held };
  }

  /** Whether direct delivery to `domain` is to be skipped for its fallback (a lookup failure means no). */
  private async skipDirect(domain: string): Promise<boolean> {
    if (!this.o.directRoutes) return false;
    return (await this.o.directRoutes.skipReason(domain).catch(() => null)) !== null;
  }

  private async attempt(message: QueuedMessage, recipients: EnvelopeRecipient[], step: RouteStep, domain: string): Promise<DeliveryResult[]> {
    const transport = this.o.transports[step.kind];
    if (!transport) {
      return recipients.map((r) => ({ recipient: r.address, status: "deferred", dsn: "4.3.5", relay: "none", detail: `no transport for route ${routeName(step)}` }));
    }
    try {
      const outcomes = await transport.deliver({ message, recipients, step, domain, content: () => openContent(this.o.spool, message) });
      const byRecipient = new Map(outcomes.map((o) => [o.recipient, o]));
      return recipients.map(
        (r) => byRecipient.get(r.address) ?? { recipient: r.address, status: "deferred", dsn: "4.3.0", relay: transport.name, detail: `${transport.name} transport gave no result` },
      );
    } catch (err) {
      // A transport bug must not lose mail: every recipient is deferred and retried.
      const detail = `${transport.name} transport failed: ${(err as Error).message}`;
      return recipients.map((r) => ({ recipient: r.address, status: "deferred", dsn: "4.3.0", relay: transport.name, detail }));
    }
  }

  /** Past the queue lifetime, a deferred recipient is returned to the sender (Postfix: status=expired). */
  private expire(message: QueuedMessage, results: Map<string, Attempt>): void {
    if (this.now() - message.record.arrival < this.o.timing.lifetime * 1000) return;
    for (const [rcpt, r] of results) {
      // A held recipient waits for its owner, however long that takes.
      if (r.status !== "deferred" || r.hold) continue;
      // The DSN of an expired recipient is permanent: keep the detail of the last attempt, class 5 (e.g. 4.4.1 → 5.4.1).
      results.set(rcpt, { ...r, status: "bounced", dsn: `5${r.dsn.slice(1)}`, detail: `message expired after ${formatAge(this.now() - message.record.arrival)} in the queue: ${r.detail}`, expired: true });
    }
  }

  private log(message: QueuedMessage, results: Map<string, Attempt>, started: number): void {
    for (const r of results.values()) {
      this.logAttempt(message, r, started);
      const { recipient, status, dsn, relay, detail, time, expired } = r;
      this.o.outcome?.(message.record.id, { recipient, status, dsn, relay, detail, time, ...(expired ? { expired } : {}) });
    }
  }

  /** One delivery line, Postfix style; `status` and `detail` override the result's own (a re-routed attempt). */
  private logAttempt(message: QueuedMessage, r: Attempt, started: number, status?: "rerouted", detail = r.detail): void {
    const { id, arrival } = message.record;
    const delay = ((r.time - arrival) / 1000).toFixed(2);
    const inQueue = ((started - arrival) / 1000).toFixed(2);
    const attempt = ((r.time - started) / 1000).toFixed(2);
    const shown = status ?? (r.status === "bounced" && r.expired ? "expired" : r.status);
    // One event, one line: a peer's multi-line reply or a library's message never splits it.
    const text = detail.replace(/[\x00-\x1f\x7f]+/g, " ").trim();
    this.o.log.info(`${id}: to=<${r.recipient}>, relay=${r.relay}, delay=${delay}, delays=${inQueue}/0/0/${attempt}, dsn=${r.dsn}, status=${shown} (${text})`, {
      queueId: id,
      to: r.recipient,
      relay: r.relay,
      delay: Number(delay),
      dsn: r.dsn,
      status: status ?? (r.expired ? "expired, returned to sender" : r.status),
    });
  }

  /** Offline when every attempt failed to reach anything; back online at the first success: flush. */
  private noteReachability(results: Map<string, Attempt>): void {
    const remote = [...results.values()].filter((r) => r.relay !== "local");
    if (remote.length === 0) return;
    const reachedSomething = remote.some((r) => !r.unreachable);
    if (!reachedSomething && !this.offline) {
      this.offline = true;
      this.o.log.warn("no network: nothing could be reached; mail is deferred until a host answers again");
    } else if (reachedSomething && this.offline) {
      this.offline = false;
      this.o.log.info("network is back: flushing the deferred queue");
      void this.scanDeferred(true);
    }
  }

  private async notify(message: QueuedMessage, results: Map<string, Attempt>, history: StatusLog): Promise<void> {
    const byAddress = new Map(message.record.envelope.recipients.map((r) => [r.address, r]));
    const failed = [...results.values()].filter((r) => r.status === "bounced");
    const now = new Date(this.now());
    if (failed.length > 0) await this.o.notifier.failure(message, failed.map((r) => ({ result: r, recipient: byAddress.get(r.recipient)! })), now);
    const succeeded = [...results.values()].filter((r) => r.status === "sent" && byAddress.get(r.recipient)?.notify?.includes("SUCCESS") && !r.dsnOffered);
    if (succeeded.length > 0) await this.o.notifier.success(message, succeeded.map((r) => ({ result: r, recipient: byAddress.get(r.recipient)! })), now);
    const warning = this.o.timing.delayWarning;
    const deferred = [...results.values()].filter((r) => r.status === "deferred");
    if (warning > 0 && !history.delayWarned && deferred.length > 0 && this.now() - message.record.arrival >= warning * 1000) {
      await this.o.notifier.delay(message, deferred.map((r) => ({ result: r, recipient: byAddress.get(r.recipient)! })), new Date(message.record.arrival + this.o.timing.lifetime * 1000), new Date(this.now()));
      history.delayWarned = true;
      history.delayWarnedNow = true;
    }
  }

  /**
   * Park the message with its next attempt time as mtime (backoff doubles with its age in the
   * queue): in deferred/, or in hold/ when `held` says why it must wait for the owner.
   */
  private async park(message: QueuedMessage, held: string | null): Promise<void> {
    const state: Extract<QueueState, "deferred" | "hold"> = held === null ? "deferred" : "hold";
    const { spool, timing } = this.o;
    const id = message.record.id;
    const now = this.now();
    const age = Math.max(0, (now - message.record.arrival) / 1000);
    const backoff = Math.min(timing.maxBackoff, Math.max(timing.minBackoff, age));
    const due = new Date(now + backoff * 1000);
    await utimes(spool.file("active", id), due, due);
    await moveQueueFile(spool, id, "active", state);
    if (held !== null) this.o.log.info(`${id}: hold: ${held}`);
  }
}

function rejectAll(recipients: EnvelopeRecipient[], text: string): DeliveryResult[] {
  return recipients.map((r) => ({ recipient: r.address, status: "bounced", dsn: "5.7.1", relay: "none", detail: text }));
}

function formatAge(ms: number): string {
  const h = ms / 3600_000;
  const [n, unit] = h >= 48 ? [Math.round(h / 24), "day"] : [Math.round(h), "hour"];
  return `${n} ${unit}${n === 1 ? "" : "s"}`;
}

