/**
 * file-store — the embedded store of `cloud serve`: state in memory, each change appended to a
 * JSON-lines journal before it counts, replayed and compacted at start. Appends are plain writes,
 * one per turn of the event loop (they survive the process being killed), made durable by an
 * fsync about SYNC_INTERVAL_MS later: an fsync per request would make every submission wait for the
 * disk (see CloudStore for what that costs at worst). One process owns the directory: conditional
 * writes are decided in its memory, which holds each live idempotency record as its journal line
 * (one flat string: a busy relay keeps a day of them, and the collector need not trace each one).
 */
import { closeSync, fdatasync, fdatasyncSync, fsyncSync, ftruncateSync, openSync, renameSync, writeSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { CloudStore, IdempotencyRecord } from "./store.js";

/** One line of the journal. */
type JournalEntry =
  | { op: "nonce"; keyid: string; nonce: string; expiresAt: number }
  | { op: "idempotency"; keyid: string; key: string; record: IdempotencyRecord }
  | { op: "forget"; keyid: string; key: string };

/** The longest an appended line waits for its fsync, milliseconds. */
const SYNC_INTERVAL_MS = 100;

/** Journal lines appended since the last compaction that start another one (and at least twice the live entries). */
const COMPACT_AFTER_LINES = 100_000;

/** A live idempotency record: when it expires, and the journal line that set it. */
interface KeptRecord {
  expiresAt: number;
  line: string;
}

/**
 * The map key of (keyid, nonce or idempotency key). Key ids are letters, digits and `._-` (the
 * cloud configuration), nonces and idempotency keys structured-field strings (printable ASCII,
 * RFC 8941): a line feed occurs in none of them.
 */
const itemId = (keyid: string, name: string) => `${keyid}\n${name}`;

/** The journal-backed store. */
export class FileStore implements CloudStore {
  private readonly nonces = new Map<string, number>();
  private readonly records = new Map<string, KeptRecord>();
  /** The journal's file descriptor, appended to with write(2); null once closed. */
  private fd: number | null = null;
  /** Entries waiting for this turn's write, with what takes each caller's change back out of memory. */
  private batch: { line: string; resolve: () => void; reject: (err: Error) => void; undo?: () => void }[] = [];
  private batchTimer: NodeJS.Immediate | null = null;
  /** The fsync that makes the lines appended so far durable, when one is due or running. */
  private syncTimer: NodeJS.Timeout | null = null;
  private syncing: Promise<void> | null = null;
  private appended = 0;
  /** Octets of the journal known to be whole: a failed write is cut back to this. */
  private size = 0;
  private liveAtCompaction = 0;
  /** The latest time an operation was given, Unix seconds: what expiry is judged by when compacting. */
  private clock: number;

  private constructor(
    private readonly file: string,
    private readonly dir: string,
    now: number,
  ) {
    this.clock = now;
  }

  /**
   * Open the store in `dir` (created mode 0700 if missing): replay the journal, drop what has
   * expired at `now` (Unix seconds) and the in-progress claims of the process that wrote it.
   */
  static async open(dir: string, now = Math.floor(Date.now() / 1000)): Promise<FileStore> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, "journal.jsonl");
    const store = new FileStore(file, dir, now);
    let text = "";
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    const lines = text.split("\n");
    lines.forEach((line, i) => {
      if (line === "") return;
      let entry: JournalEntry;
      try {
        entry = JSON.parse(line) as JournalEntry;
      } catch {
        // Only the last line can be torn, by a crash in the middle of an append that was never acknowledged.
        if (i === lines.length - 1) return;
        throw new Error(`${file}:${i + 1}: journal line is not JSON; the store is damaged`);
      }
      if (entry.op === "nonce") store.nonces.set(itemId(entry.keyid, entry.nonce), entry.expiresAt);
      // A relay in progress when the process stopped is not in progress any more: its retry may go ahead.
      else if (entry.op === "forget" || entry.record.state === "in-progress") store.records.delete(itemId(entry.keyid, entry.key));
      // Serialized again rather than kept as read: a piece of the journal's text would hold all of it
      // in memory, and journals written before answers were kept as text hold the answer as an object.
      else {
        const { body } = entry.record;
        store.keep(itemId(entry.keyid, entry.key), typeof body === "string" ? entry : { ...entry, record: { ...entry.record, body: JSON.stringify(body) } });
      }
    });
    store.compact();
    return store;
  }

  async claimNonce(keyid: string, nonce: string, expiresAt: number, now: number): Promise<boolean> {
    this.clock = Math.max(this.clock, now);
    const id = itemId(keyid, nonce);
    const seen = this.nonces.get(id);
    if (seen !== undefined && seen > now) return false;
    // Claimed in memory at once, so that a concurrent claim of the same nonce sees it.
    this.nonces.set(id, expiresAt);
    await this.append(journalLine({ op: "nonce", keyid, nonce, expiresAt }), () => {
      if (this.nonces.get(id) === expiresAt) this.nonces.delete(id);
    });
    return true;
  }

  async beginIdempotent(keyid: string, key: string, fingerprint: string, expiresAt: number, now: number): Promise<IdempotencyRecord | null> {
    this.clock = Math.max(this.clock, now);
    const id = itemId(keyid, key);
    const existing = this.records.get(id);
    if (existing && existing.expiresAt > now) return (JSON.parse(existing.line) as Extract<JournalEntry, { op: "idempotency" }>).record;
    const kept = this.keep(id, { op: "idempotency", keyid, key, record: { state: "in-progress", fingerprint, expiresAt } });
    // Not written, so not claimed: a retry must not meet a 409 for a relay that never started.
    await this.append(kept.line, () => {
      if (this.records.get(id) === kept) this.records.delete(id);
    });
    return null;
  }

  async finishIdempotent(keyid: string, key: string, record: Extract<IdempotencyRecord, { state: "done" }>): Promise<void> {
    await this.append(this.keep(itemId(keyid, key), { op: "idempotency", keyid, key, record }).line);
  }

  async abandonIdempotent(keyid: string, key: string): Promise<void> {
    this.records.delete(itemId(keyid, key));
    await this.append(journalLine({ op: "forget", keyid, key }));
  }

  /** Write what is waiting, make it durable, then close the journal. */
  async close(): Promise<void> {
    if (this.batchTimer) clearImmediate(this.batchTimer);
    this.writeBatch();
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    await this.syncing;
    if (this.fd === null) return;
    fdatasyncSync(this.fd);
    closeSync(this.fd);
    this.fd = null;
  }

  /** Set the record `id` in memory to what `entry` says; returns what is kept. */
  private keep(id: string, entry: Extract<JournalEntry, { op: "idempotency" }>): KeptRecord {
    const kept = { expiresAt: entry.record.expiresAt, line: journalLine(entry) };
    this.records.set(id, kept);
    return kept;
  }

  /**
   * Append one line to the journal; resolves once it is written. The lines of one turn of the
   * event loop share one write(2) (a syscall costs some 15 µs on a VM, more than the rest of the
   * append), and an fsync follows about SYNC_INTERVAL_MS later. When the write fails, the promise
   * rejects, the journal is as it was, and `undo`, when given, takes the caller's change back out
   * of memory (claims are undone; a final answer or a forgotten key stays in memory only).
   */
  private append(line: string, undo?: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.batch.push({ line, resolve, reject, ...(undo ? { undo } : {}) });
      this.batchTimer ??= setImmediate(() => this.writeBatch());
    });
  }

  private writeBatch(): void {
    this.batchTimer = null;
    const batch = this.batch;
    if (batch.length === 0) return;
    this.batch = [];
    const fail = (err: Error) => {
      for (const b of batch) {
        b.undo?.();
        b.reject(err);
      }
    };
    if (this.fd === null) return fail(new Error("the store is closed"));
    const text = Buffer.from(batch.map((b) => b.line).join(""));
    try {
      // A compaction's snapshot comes from memory, which already holds this batch's changes: it writes them too.
      if (this.appended >= Math.max(COMPACT_AFTER_LINES, 2 * this.liveAtCompaction)) this.compact();
      else {
        const written = writeSync(this.fd, text);
        if (written !== text.length) throw new Error(`short write to ${this.file} (${written} of ${text.length} octets): is the disk full?`);
        this.size += text.length;
        this.appended += batch.length;
      }
    } catch (err) {
      // A torn tail would make every later line unreadable at the next start: cut it off, or,
      // when even that fails, write nothing more (the next start skips a torn last line).
      try {
        if (this.fd !== null) ftruncateSync(this.fd, this.size);
      } catch {
        if (this.fd !== null) closeSync(this.fd);
        this.fd = null;
      }
      return fail(err as Error);
    }
    this.syncTimer ??= setTimeout(() => this.sync(), SYNC_INTERVAL_MS).unref();
    for (const b of batch) b.resolve();
  }

  /** The background fsync of what was appended; one that fails or overlaps a running one is tried again later. */
  private sync(): void {
    this.syncTimer = null;
    const fd = this.fd;
    if (fd === null) return;
    const again = () => (this.syncTimer ??= setTimeout(() => this.sync(), SYNC_INTERVAL_MS).unref());
    if (this.syncing) {
      again();
      return;
    }
    this.syncing = new Promise<void>((resolve) =>
      fdatasync(fd, (err) => {
        this.syncing = null;
        if (err) again();
        resolve();
      }),
    );
  }

  /**
   * Drop expired entries and write the live ones to a new journal that replaces the old one
   * atomically (write, fsync, rename, fsync the directory). Replaying entries appended later on
   * top of this snapshot gives the same state: every entry sets or removes one item outright.
   * Synchronous, like the appends it must not interleave with: some milliseconds per 100 000 requests.
   */
  private compact(): void {
    const live: string[] = [];
    for (const [id, expiresAt] of this.nonces) {
      if (expiresAt <= this.clock) this.nonces.delete(id);
      else {
        const at = id.indexOf("\n");
        live.push(journalLine({ op: "nonce", keyid: id.slice(0, at), nonce: id.slice(at + 1), expiresAt }));
      }
    }
    for (const [id, { expiresAt, line }] of this.records) {
      if (expiresAt <= this.clock) this.records.delete(id);
      else live.push(line);
    }
    const next = `${this.file}.new`;
    const text = Buffer.from(live.join(""));
    const out = openSync(next, "w", 0o600);
    try {
      if (writeSync(out, text) !== text.length) throw new Error(`short write to ${next}: is the disk full?`);
      fsyncSync(out);
    } finally {
      closeSync(out);
    }
    // Opened before the rename, so that no failure can leave appends going to the replaced file.
    const fresh = openSync(next, "a", 0o600);
    try {
      renameSync(next, this.file);
    } catch (err) {
      closeSync(fresh);
      throw err;
    }
    // The old journal is replaced; a background fsync may still hold its descriptor.
    const old = this.fd;
    if (old !== null) void (this.syncing ?? Promise.resolve()).then(() => closeSync(old)).catch(() => {});
    this.fd = fresh;
    this.appended = 0;
    this.size = text.length;
    this.liveAtCompaction = live.length;
    try {
      const dir = openSync(this.dir, "r");
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    } catch {
      // The new journal is in place and complete; only its name may not survive a power loss yet.
    }
  }
}

/** An entry as a line of the journal. */
function journalLine(entry: JournalEntry): string {
  return `${JSON.stringify(entry)}\n`;
}
