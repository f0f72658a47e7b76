/**
 * queue-listing — what is in the queue (Postfix showq(8)): every message in active/, deferred/,
 * hold/ and corrupt/ with its size, arrival, sender and recipients with their last error, in
 * mailq's layout or as JSON. Reads the spool directly, so it works whether the agent runs or not.
 */
import { readdir } from "node:fs/promises";
import { readQueueFile } from "../queue/queue-file.js";
import { isQueueId } from "../queue/queue-id.js";
import type { QueueState, Spool } from "../queue/spool.js";
import { isFinal, readStatus } from "../queue/status-log.js";

/** One queued message as the queue tools show it. */
export interface QueueEntry {
  id: string;
  state: QueueState;
  size: number;
  /** Arrival time, ISO 8601. */
  arrival: string;
  sender: string;
  /** Recipients still to be delivered, with the reason of their last failed attempt. */
  recipients: { address: string; reason?: string }[];
}

const LISTED: QueueState[] = ["active", "deferred", "hold", "corrupt"];

/** Every message in the queue, oldest first; `id` restricts to one message. */
export async function listQueue(spool: Spool, id?: string): Promise<QueueEntry[]> {
  const entries: QueueEntry[] = [];
  for (const state of LISTED) {
    let names: string[];
    try {
      names = await readdir(spool.dir(state));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw err;
    }
    for (const name of names) {
      if (!isQueueId(name) || (id !== undefined && name !== id)) continue;
      try {
        const message = await readQueueFile(spool, state, name);
        const status = await readStatus(spool, name);
        entries.push({
          id: name,
          state,
          size: message.size,
          arrival: new Date(message.record.arrival).toISOString(),
          sender: message.record.envelope.sender,
          recipients: message.record.envelope.recipients
            .filter((r) => !isFinal(status.latest.get(r.address)?.status ?? "deferred"))
            .map((r) => {
              const reason = status.latest.get(r.address)?.detail;
              return reason ? { address: r.address, reason } : { address: r.address };
            }),
        });
      } catch (err) {
        // Moved or delivered while we looked, or unreadable (corrupt/): list what can be listed.
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
        entries.push({ id: name, state, size: 0, arrival: "", sender: "?", recipients: [{ address: "?", reason: (err as Error).message }] });
      }
    }
  }
  return entries.sort((a, b) => a.id.localeCompare(b.id));
}

/** mailq's layout: `*` after the ID for active, `!` for hold, `#` for corrupt. */
export function formatMailq(entries: QueueEntry[]): string {
  if (entries.length === 0) return "Mail queue is empty\n";
  const mark: Record<QueueState, string> = { active: "*", deferred: " ", hold: "!", corrupt: "#", incoming: " " };
  const lines = ["-Queue ID-        --Size-- ----Arrival Time---- -Sender/Recipient-------"];
  let bytes = 0;
  for (const e of entries) {
    bytes += e.size;
    const when = e.arrival ? mailqDate(new Date(e.arrival)) : "?";
    lines.push(`${(e.id + mark[e.state]).padEnd(17)} ${String(e.size).padStart(8)} ${when.padEnd(20)}  ${e.sender || "MAILER-DAEMON"}`);
    for (const r of e.recipients) {
      if (r.reason) lines.push(`${" ".repeat(48)}(${r.reason})`);
      lines.push(`${" ".repeat(48)}${r.address}`);
    }
    lines.push("");
  }
  lines.push(`-- ${Math.ceil(bytes / 1024)} Kbytes in ${entries.length} Request${entries.length === 1 ? "" : "s"}.`);
  return lines.join("\n") + "\n";
}

/** `Thu Nov 26 05:56:45`, mailq's arrival time (UTC). */
function mailqDate(d: Date): string {
  const [day, date, month, , time] = d.toUTCString().replace(",", "").split(" ");
  return `${day} ${month} ${date!.padStart(2)} ${time}`;
}
