/**
 * queue-control — what administrators may do to queued mail while the agent runs (Postfix
 * postqueue -f/-i and postsuper -h/-H/-d): flush, hold, release and delete, coordinated with the
 * queue manager so that nothing is moved out from under a delivery in progress; and forgetting a
 * learned route, which the running agent's table must see.
 */
import { readdir, unlink } from "node:fs/promises";
import { moveQueueFile, readQueueFile } from "../queue/queue-file.js";
import { isQueueId } from "../queue/queue-id.js";
import type { QueueState, Spool } from "../queue/spool.js";
import { removeStatus } from "../queue/status-log.js";
import type { QueueManager } from "../qmgr/qmgr.js";
import type { LearnedRoutes } from "../reroute/learned-routes.js";
import type { MailLog } from "../../shared/log.js";

/** A request from `homerelay queue …` or `homerelay sendmail -q`. */
export type ControlRequest =
  | { op: "flush"; id?: string; domain?: string }
  | { op: "hold"; id: string }
  | { op: "release"; id: string }
  | { op: "delete"; id?: string; allDeferred?: boolean }
  | { op: "forget-route"; key: string };

/** The answer: how many messages were affected, or why nothing was done. */
export type ControlReply = { ok: true; count: number; message: string } | { ok: false; error: string };

/** Carries out control requests against the spool and the running queue manager. */
export class QueueControl {
  constructor(
    private readonly spool: Spool,
    private readonly qmgr: QueueManager,
    private readonly log: MailLog,
    /** The running agent's learned routes (`homerelay routes forget`). */
    private readonly learned: () => LearnedRoutes,
  ) {}

  async handle(request: ControlRequest): Promise<ControlReply> {
    if ("id" in request && request.id !== undefined && !isQueueId(request.id)) return { ok: false, error: `${request.id}: not a queue ID` };
    switch (request.op) {
      case "flush":
        return this.flush(request.id, request.domain);
      case "hold":
        return this.move(request.id, ["deferred"], "hold", "placed on hold");
      case "release":
        return this.release(request.id);
      case "delete":
        return this.remove(request.id, request.allDeferred === true);
      case "forget-route":
        return this.forgetRoute(request.key);
      default:
        return { ok: false, error: `unknown request ${(request as { op: string }).op}` };
    }
  }

  private async flush(id?: string, domain?: string): Promise<ControlReply> {
    if (id !== undefined) {
      const state = await this.where(id);
      if (state !== "deferred") return { ok: false, error: state ? `${id}: in ${state}/, not deferred` : `${id}: no such message in the queue` };
      await moveQueueFile(this.spool, id, "deferred", "active");
      this.qmgr.enqueue(id);
      this.log.info(`${id}: flushed by administrator`);
      return { ok: true, count: 1, message: `${id}: queued for delivery` };
    }
    const lower = domain?.toLowerCase();
    const count = await this.qmgr.scanDeferred(true, lower ? (m) => m.record.envelope.recipients.some((r) => r.address.toLowerCase().endsWith(`@${lower}`)) : undefined);
    this.log.info(`flush${lower ? ` of ${lower}` : ""} requested: ${count} message${count === 1 ? "" : "s"}`);
    return { ok: true, count, message: `${count} message${count === 1 ? "" : "s"} queued for delivery` };
  }

  private async release(id: string): Promise<ControlReply> {
    const reply = await this.move(id, ["hold"], "active", "released from hold");
    if (reply.ok) this.qmgr.enqueue(id);
    return reply;
  }

  private async move(id: string, from: QueueState[], to: QueueState, what: string): Promise<ControlReply> {
    const state = await this.where(id);
    if (state === null) return { ok: false, error: `${id}: no such message in the queue` };
    if (this.qmgr.busy(id) || !from.includes(state)) return { ok: false, error: `${id}: in ${state}/${this.qmgr.busy(id) ? " and being delivered" : ""}; only messages in ${from.join("/, ")}/ can be ${what}` };
    await moveQueueFile(this.spool, id, state, to);
    this.log.info(`${id}: ${what}`);
    return { ok: true, count: 1, message: `${id}: ${what}` };
  }

  private async remove(id: string | undefined, allDeferred: boolean): Promise<ControlReply> {
    const ids: { id: string; state: QueueState }[] = [];
    if (allDeferred) {
      for (const name of await readdir(this.spool.dir("deferred"))) if (isQueueId(name)) ids.push({ id: name, state: "deferred" });
    } else if (id !== undefined) {
      const state = await this.where(id);
      if (state === null) return { ok: false, error: `${id}: no such message in the queue` };
      if (state === "active" || this.qmgr.busy(id)) return { ok: false, error: `${id}: being delivered; hold or delete it once it is deferred` };
      ids.push({ id, state });
    } else return { ok: false, error: "delete needs a queue ID or --all-deferred" };
    let count = 0;
    for (const m of ids) {
      if (this.qmgr.busy(m.id)) continue;
      try {
        await unlink(this.spool.file(m.state, m.id));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw err;
      }
      await removeStatus(this.spool, m.id);
      this.log.info(`${m.id}: removed by administrator`);
      count++;
    }
    await this.spool.syncDir(this.spool.dir("deferred"));
    return { ok: true, count, message: `${count} message${count === 1 ? "" : "s"} deleted` };
  }

  private async forgetRoute(key: string): Promise<ControlReply> {
    if (!(await this.learned().forget(key, Date.now()))) return { ok: false, error: `nothing is learned about ${key}` };
    this.log.info(`learned route of ${key} forgotten by administrator: direct delivery is tried again`);
    return { ok: true, count: 1, message: `${key}: forgotten; direct delivery is tried again` };
  }

  /** Which state directory holds message `id`, or null. */
  private async where(id: string): Promise<QueueState | null> {
    for (const state of ["active", "deferred", "hold", "corrupt"] as const) {
      try {
        await readQueueFile(this.spool, state, id);
        return state;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
        if (state === "corrupt") return state;
        throw err;
      }
    }
    return null;
  }
}
