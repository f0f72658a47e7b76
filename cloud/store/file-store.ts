/**
 * file-store — the embedded store of `cloud serve`: state in memory, each change appended to a
 * JSON-lines journal and fsynced before it counts, replayed and compacted at start. One process
 * owns the directory: the conditional writes are decided in its memory, so servers never share it.
 */
import { mkdir, open, readFile, rename, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { CloudStore, IdempotencyRecord } from "./store.js";

/** One line of the journal. */
type JournalEntry =
  | { op: "nonce"; keyid: string; nonce: string; expiresAt: number }
  | { op: "idempotency"; keyid: string; key: string; record: IdempotencyRecord }
  | { op: "forget"; keyid: string; key: string };

/** Journal lines appended since the last compaction that start another one (and at least twice the live entries). */
const COMPACT_AFTER_LINES = 100_000;

/** The journal-backed store. */
export class FileStore implements CloudStore {
  private readonly nonces = new Map<string, number>();
  private readonly records = new Map<string, { keyid: string; key: string; record: IdempotencyRecord }>();
  private readonly pending: { line: string; resolve: () => void; reject: (err: Error) => void }[] = [];
  private flushing: Promise<void> | null = null;
  private journal: FileHandle | null = null;
  private appended = 0;
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
    await store.compact();
    return store;
  }

  async claimNonce(keyid: string, nonce: string, expiresAt: number, now: number): Promise<boolean> {
    this.clock = Math.max(this.clock, now);
    const id = JSON.stringify([keyid, nonce]);
    const seen = this.nonces.get(id);
    if (seen !== undefined && seen > now) return false;
    // Claimed in memory before the write, so a concurrent claim of the same nonce sees it.
    this.nonces.set(id, expiresAt);
    await this.append({ op: "nonce", keyid, nonce, expiresAt });
    return true;
  }

  async beginIdempotent(keyid: string, key: string, fingerprint: string, expiresAt: number, now: number): Promise<IdempotencyRecord | null> {
    this.clock = Math.max(this.clock, now);
    const existing = this.records.get(JSON.stringify([keyid, key]));
    if (existing && existing.record.expiresAt > now) return existing.record;
    const record: IdempotencyRecord = { state: "in-progress", fingerprint, expiresAt };
    this.records.set(JSON.stringify([keyid, key]), { keyid, key, record });
    await this.append({ op: "idempotency", keyid, key, record });
    return null;
  }

  async finishIdempotent(keyid: string, key: string, record: Extract<IdempotencyRecord, { state: "done" }>): Promise<void> {
    this.records.set(JSON.stringify([keyid, key]), { keyid, key, record });
    await this.append({ op: "idempotency", keyid, key, record });
  }

  async abandonIdempotent(keyid: string, key: string): Promise<void> {
    this.records.delete(JSON.stringify([keyid, key]));
    await this.append({ op: "forget", keyid, key });
  }

  /** Wait for the journal writes in flight, then close the journal. */
  async close(): Promise<void> {
    await this.flushing;
    await this.journal?.close();
    this.journal = null;
  }

  private apply(entry: JournalEntry): void {
    const id = JSON.stringify([entry.keyid, entry.op === "nonce" ? entry.nonce : entry.key]);
    if (entry.op === "nonce") this.nonces.set(id, entry.expiresAt);
    else if (entry.op === "idempotency") this.records.set(id, { keyid: entry.keyid, key: entry.key, record: entry.record });
    else this.records.delete(id);
  }

  /** Append one entry; resolves once it is on disk. Entries that arrive during a write share the next one (group commit). */
  private append(entry: JournalEntry): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ line: `${JSON.stringify(entry)}\n`, resolve, reject });
      this.flushing ??= this.flush().finally(() => (this.flushing = null));
    });
  }

  private async flush(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0);
      try {
        if (!this.journal) throw new Error("the store is closed");
        await this.journal.write(batch.map((b) => b.line).join(""));
        await this.journal.datasync();
        this.appended += batch.length;
        if (this.appended > Math.max(COMPACT_AFTER_LINES, 2 * this.liveAtCompaction)) await this.compact();
        for (const b of batch) b.resolve();
      } catch (err) {
        for (const b of batch) b.reject(err as Error);
      }
    }
  }

  /**
   * Drop expired entries and write the live ones to a new journal that replaces the old one
   * atomically (write, fsync, rename, fsync the directory). Replaying entries appended later on
   * top of this snapshot gives the same state: every entry sets or removes one item outright.
   */
  private async compact(): Promise<void> {
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
    const out = await open(next, "w", 0o600);
    try {
      await out.write(live.map((e) => `${JSON.stringify(e)}\n`).join(""));
      await out.sync();
    } finally {
      await out.close();
    }
    await rename(next, this.file);
    const dir = await open(this.dir, "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    await this.journal?.close();
    this.journal = await open(this.file, "a", 0o600);
    this.appended = 0;
    this.liveAtCompaction = live.length;
  }
}
