/**
 * submission-journal — what the HTTP API remembers of each message it queued, in `<spool>/http/`:
 * which token submitted it (a token sees only its own messages) and every delivery outcome the
 * queue manager reports, so that the status is known after the message has left the queue (the
 * queue keeps no record of a delivered message). A record is dropped a week after its last change,
 * once its message is no longer queued.
 */
import { appendFile, mkdir, open, readdir, readFile, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { MailLog } from "../../shared/log.js";
import { isQueueId } from "../queue/queue-id.js";
import type { Spool } from "../queue/spool.js";
import type { RecipientStatus } from "../queue/status-log.js";
import { queueStateOf } from "./message-status.js";

/** How long a record is kept after its last change once the message has left the queue. */
const RETENTION_MS = 7 * 86400_000;
/** How often old records are looked for. */
const PRUNE_INTERVAL_MS = 3600_000;

/** What was submitted: the first line of a record. */
export interface SubmissionRecord {
  v: 1;
  id: string;
  /** SHA-256 of the submitting token, hex. */
  token: string;
  /** Arrival, milliseconds since the epoch. */
  arrival: number;
  sender: string;
  recipients: string[];
}

/** A delivery outcome for one recipient of a queued message, as the queue manager logs it. */
export interface DeliveryOutcome extends RecipientStatus {
  id: string;
}

/** A record read back: the submission and each recipient's latest outcome. */
export interface JournalEntry extends SubmissionRecord {
  outcomes: Map<string, RecipientStatus>;
}

/** The journal of one spool. */
export class SubmissionJournal {
  private readonly ids = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private appendFailing = false;

  private constructor(
    private readonly spool: Spool,
    private readonly dir: string,
    private readonly log: MailLog,
  ) {}

  /** Open (creating `<spool>/http/`), drop old records, and keep dropping them every hour. */
  static async open(spool: Spool, log: MailLog): Promise<SubmissionJournal> {
    const dir = join(spool.root, "http");
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const journal = new SubmissionJournal(spool, dir, log);
    for (const name of await readdir(dir)) if (isQueueId(name)) journal.ids.add(name);
    await journal.prune();
    journal.timer = setInterval(() => void journal.prune(), PRUNE_INTERVAL_MS);
    journal.timer.unref();
    return journal;
  }

  /** Record a submission, durably, before its queue file is committed. */
  async record(record: Omit<SubmissionRecord, "v">): Promise<void> {
    const fh = await open(join(this.dir, record.id), "wx", 0o600);
    try {
      await fh.writeFile(JSON.stringify({ v: 1, ...record }) + "\n");
      await fh.sync();
    } finally {
      await fh.close();
    }
    await this.spool.syncDir(this.dir);
    this.ids.add(record.id);
  }

  /** Remove the record of a submission whose queue file was not committed after all. */
  async forget(id: string): Promise<void> {
    this.ids.delete(id);
    await unlink(join(this.dir, id)).catch(() => {});
  }

  /** Add a delivery outcome to the record of its message, if the API queued it. Never throws: the status is an aid, not the mail. */
  note(outcome: DeliveryOutcome): void {
    if (!this.ids.has(outcome.id)) return;
    const { id, ...status } = outcome;
    appendFile(join(this.dir, id), JSON.stringify(status) + "\n").then(
      () => (this.appendFailing = false),
      (err: Error) => {
        // One line per run of failures, not one per recipient.
        if (!this.appendFailing) this.log.warn(`${id}: cannot record the delivery status for the HTTP API: ${err.message}`);
        this.appendFailing = true;
      },
    );
  }

  /** The record of message `id`, or null when the API did not queue it (or it was dropped). */
  async read(id: string): Promise<JournalEntry | null> {
    if (!isQueueId(id) || !this.ids.has(id)) return null;
    let text: string;
    try {
      text = await readFile(join(this.dir, id), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
    const [first, ...rest] = text.split("\n");
    const record = JSON.parse(first!) as SubmissionRecord;
    const outcomes = new Map<string, RecipientStatus>();
    for (const line of rest) {
      // A crash can leave a torn last line; it is ignored, as in the status log.
      if (!line) continue;
      try {
        const status = JSON.parse(line) as RecipientStatus;
        outcomes.set(status.recipient, status);
      } catch {
        continue;
      }
    }
    return { ...record, outcomes };
  }

  /** Stop looking for old records. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Drop records unchanged for RETENTION_MS whose message is no longer in the queue. */
  private async prune(): Promise<void> {
    const now = Date.now();
    for (const id of [...this.ids]) {
      try {
        const { mtimeMs } = await stat(join(this.dir, id));
        if (now - mtimeMs < RETENTION_MS || (await queueStateOf(this.spool, id)) !== null) continue;
        await this.forget(id);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") this.ids.delete(id);
        else this.log.warn(`cannot prune ${join(this.dir, id)}: ${(err as Error).message}`);
      }
    }
  }
}
