/**
 * file-store — the embedded store of `cloud serve`: state in memory, each change appended to a
 * JSON-lines journal before it counts, replayed and compacted at start. Appends are plain writes
 * (they survive the process being killed) made durable by an fsync within SYNC_INTERVAL_MS: an
 * fsync per request would make every submission wait for the disk (see CloudStore for what that
 * costs at worst). One process owns the directory: conditional writes are decided in its memory.
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

/** The journal-backed store. */
export class FileStore implements CloudStore {
  private readonly nonces = new Map<string, number>();
  private readonly records = new Map<string, { keyid: string; key: string; record: IdempotencyRecord }>();
  /** The journal's file descriptor, appended to with write(2); null once closed. */
  private fd: number | null = null;
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

  /** Open the store in `dir` (created mode 0700 if missing): replay the journal, drop what has expired at `now` (Unix seconds). */
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
      store.apply(entry);
    });
    store.compact();
    return store;
  }

  async claimNonce(keyid: string, nonce: string, expiresAt: number, now: number): Promise<boolean> {
    this.clock = Math.max(this.clock, now);
    const id = JSON.stringify([keyid, nonce]);
    const seen = this.nonces.get(id);
    if (seen !== undefined && seen > now) return false;
    this.append({ op: "nonce", keyid, nonce, expiresAt });
    this.nonces.set(id, expiresAt);
    return true;
  }

  async beginIdempotent(keyid: string, key: string, fingerprint: string, expiresAt: number, now: number): Promise<IdempotencyRecord | null> {
    this.clock = Math.max(this.clock, now);
    const id = JSON.stringify([keyid, key]);
    const existing = this.records.get(id);
    if (existing && existing.record.expiresAt > now) return existing.record;
    const record: IdempotencyRecord = { state: "in-progress", fingerprint, expiresAt };
    this.append({ op: "idempotency", keyid, key, record });
    this.records.set(id, { keyid, key, record });
    return null;
  }

  async finishIdempotent(keyid: string, key: string, record: Extract<IdempotencyRecord, { state: "done" }>): Promise<void> {
    this.append({ op: "idempotency", keyid, key, record });
    this.records.set(JSON.stringify([keyid, key]), { keyid, key, record });
  }

  async abandonIdempotent(keyid: string, key: string): Promise<void> {
    this.append({ op: "forget", keyid, key });
    this.records.delete(JSON.stringify([keyid, key]));
  }

  /** Make what was appended durable, then close the journal. */
  async close(): Promise<void> {
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    await this.syncing;
    if (this.fd === null) return;
    fdatasyncSync(this.fd);
    closeSync(this.fd);
    this.fd = null;
  }

  private apply(entry: JournalEntry): void {
    const id = JSON.stringify([entry.keyid, entry.op === "nonce" ? entry.nonce : entry.key]);
    if (entry.op === "nonce") this.nonces.set(id, entry.expiresAt);
    else if (entry.op === "idempotency") this.records.set(id, { keyid: entry.keyid, key: entry.key, record: entry.record });
    else this.records.delete(id);
  }

  /**
   * Append one entry to the journal (one write(2), no thread hop: a few microseconds) and see
   * that an fsync follows within SYNC_INTERVAL_MS. Throws, with the journal as it was, when the
   * write fails: the caller's change does not count.
   */
  private append(entry: JournalEntry): void {
    if (this.fd === null) throw new Error("the store is closed");
    // Compacted before the line, so the snapshot taken from memory and the journal agree.
    if (this.appended >= Math.max(COMPACT_AFTER_LINES, 2 * this.liveAtCompaction)) this.compact();
    const line = Buffer.from(`${JSON.stringify(entry)}\n`);
    try {
      const written = writeSync(this.fd, line);
      if (written !== line.length) throw new Error(`short write to ${this.file} (${written} of ${line.length} octets): is the disk full?`);
    } catch (err) {
      // A torn tail would make every later line unreadable at the next start: cut it off.
      try {
        ftruncateSync(this.fd, this.size);
      } catch {
        // The next start skips a torn last line; a later append after a failed cut is refused below.
      }
      throw err;
    }
    this.size += line.length;
    this.appended++;
    this.syncTimer ??= setTimeout(() => this.sync(), SYNC_INTERVAL_MS).unref();
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
    const live: JournalEntry[] = [];
    for (const [id, expiresAt] of this.nonces) {
      if (expiresAt <= this.clock) this.nonces.delete(id);
      else {
        const [keyid, nonce] = JSON.parse(id) as [string, string];
        live.push({ op: "nonce", keyid, nonce, expiresAt });
      }
    }
    for (const [id, { keyid, key, record }] of this.records) {
      if (record.expiresAt <= this.clock) this.records.delete(id);
      else live.push({ op: "idempotency", keyid, key, record });
    }
    const next = `${this.file}.new`;
    const text = Buffer.from(live.map((e) => `${JSON.stringify(e)}\n`).join(""));
    const out = openSync(next, "w", 0o600);
    try {
      if (writeSync(out, text) !== text.length) throw new Error(`short write to ${next}: is the disk full?`);
      fsyncSync(out);
    } finally {
      closeSync(out);
    }
    renameSync(next, this.file);
    const dir = openSync(this.dir, "r");
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    // The old journal is replaced; a background fsync may still hold its descriptor.
    const old = this.fd;
    if (old !== null) void (this.syncing ?? Promise.resolve()).then(() => closeSync(old)).catch(() => {});
    this.fd = openSync(this.file, "a", 0o600);
    this.appended = 0;
    this.size = text.length;
    this.liveAtCompaction = live.length;
  }
}
