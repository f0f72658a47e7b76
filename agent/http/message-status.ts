/**
 * message-status — where a message submitted over HTTP stands, for `GET /v1/messages/{id}`: the
 * queue directory it is in (or `done` once it has left the queue), and for each recipient the
 * latest outcome from the queue's status log or the API's journal: queued (not tried yet),
 * deferred with the last error, sent with the relay, or bounced.
 */
import { stat } from "node:fs/promises";
import type { MessageStatus, RecipientStatusAnswer } from "../../shared/submission/submission-answers.js";
import type { Spool } from "../queue/spool.js";
import { readStatus, type RecipientStatus } from "../queue/status-log.js";
import type { JournalEntry } from "./submission-journal.js";

const LOOKED_IN = ["active", "deferred", "hold", "corrupt"] as const;

/** Which queue directory holds message `id`, or null when it is in none (it has left the queue). */
export async function queueStateOf(spool: Spool, id: string): Promise<(typeof LOOKED_IN)[number] | null> {
  // A message moves between directories by rename; a second look catches one that moved while we looked.
  for (let pass = 0; pass < 2; pass++) {
    for (const state of LOOKED_IN) {
      try {
        await stat(spool.file(state, id));
        return state;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
  }
  return null;
}

/** The status of the message the journal entry describes. */
export async function messageStatus(spool: Spool, entry: JournalEntry): Promise<MessageStatus> {
  const state = await queueStateOf(spool, entry.id);
  // The status log holds what the queue manager made durable; the journal what it logged, also after removal.
  const logged = state === null ? new Map<string, RecipientStatus>() : (await readStatus(spool, entry.id)).latest;
  return {
    id: entry.id,
    state: state ?? "done",
    arrival: new Date(entry.arrival).toISOString(),
    from: entry.sender,
    recipients: entry.recipients.map((recipient) => recipientStatus(recipient, latest(logged.get(recipient), entry.outcomes.get(recipient)))),
  };
}

/** The later of two outcomes. */
function latest(a: RecipientStatus | undefined, b: RecipientStatus | undefined): RecipientStatus | undefined {
  if (!a || !b) return a ?? b;
  return b.time > a.time ? b : a;
}

function recipientStatus(recipient: string, outcome: RecipientStatus | undefined): RecipientStatusAnswer {
  if (!outcome) return { recipient, status: "queued" };
  return { recipient, status: outcome.status, dsn: outcome.dsn, relay: outcome.relay, detail: outcome.detail, time: new Date(outcome.time).toISOString() };
}
