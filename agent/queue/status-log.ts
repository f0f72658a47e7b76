/**
 * status-log — per-message record of what happened to each recipient, one JSON line per
 * delivery attempt, appended and fsynced before the queue manager acts on it (Postfix keeps the
 * same facts in its defer/ and bounce/ logs and in done-marks in the queue file).
 */
import { open, readFile, unlink } from "node:fs/promises";
import type { Spool } from "./spool.js";

/** The outcome of one delivery attempt for one recipient. */
export interface RecipientStatus {
  /** The envelope recipient, exactly as in the queue file. */
  recipient: string;
  /** `sent` and `bounced` are final; `deferred` will be retried. */
  status: "sent" | "deferred" | "bounced";
  /** RFC 3463 enhanced status code, e.g. `2.0.0`. */
  dsn: string;
  /** Where it went: `local`, `mx.example.org[192.0.2.1]:25`, `none`. */
  relay: string;
  /** The reply or reason, as shown in the log and in DSNs. */
  detail: string;
  /** Time of the attempt, milliseconds since the epoch. */
  time: number;
  /** The recipient was bounced because the message outlived the queue lifetime. */
  expired?: boolean;
}

/** What the status log says of a message: each recipient's latest outcome, and whether the sender was warned of the delay. */
export interface StatusLog {
  latest: Map<string, RecipientStatus>;
  delayWarned: boolean;
  /** Set by the queue manager when it sent the warning in this attempt (to be recorded). */
  delayWarnedNow?: boolean;
}

/** True for outcomes after which the recipient needs nothing more. */
export function isFinal(status: RecipientStatus["status"]): boolean {
  return status !== "deferred";
}

/**
 * Append outcomes (and, with `delayWarned`, the fact that the sender was warned) to the status
 * log of message `id`; with `durable`, fsynced before this resolves.
 */
export async function appendStatus(spool: Spool, id: string, entries: RecipientStatus[], durable = true, delayWarned = false): Promise<void> {
  const lines = entries.map((e) => JSON.stringify(e) + "\n");
  if (delayWarned) lines.push(JSON.stringify({ event: "delay-warning" }) + "\n");
  if (lines.length === 0) return;
  const fh = await open(spool.statusFile(id), "a", 0o600);
  let created = false;
  try {
    created = (await fh.stat()).size === 0;
    await fh.writeFile(lines.join(""));
    if (durable) await fh.sync();
  } finally {
    await fh.close();
  }
  if (created && durable) await spool.syncDir(spool.statusDir);
}

/** The latest outcome per recipient of message `id` (empty when nothing was attempted yet). */
export async function readStatus(spool: Spool, id: string): Promise<StatusLog> {
  const log: StatusLog = { latest: new Map(), delayWarned: false };
  let text: string;
  try {
    text = await readFile(spool.statusFile(id), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return log;
    throw err;
  }
  for (const line of text.split("\n")) {
    // A crash can leave a torn last line: it was never acted on, so it is ignored.
    if (!line) continue;
    try {
      const entry = JSON.parse(line) as RecipientStatus | { event: "delay-warning" };
      if ("event" in entry) log.delayWarned = true;
      else log.latest.set(entry.recipient, entry);
    } catch {
      continue;
    }
  }
  return log;
}

/** Remove the status log of a message that has left the queue. */
export async function removeStatus(spool: Spool, id: string): Promise<void> {
  await unlink(spool.statusFile(id)).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
}
