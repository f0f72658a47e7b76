/**
 * queue-file — one queued message in one file: a single JSON line with the envelope and where
 * the message came from, then the message exactly as queued (CRLF line ends). The file is
 * written in incoming/, fsynced, and only then renamed into active/: a 250 follows that rename.
 */
import { close, closeSync, createReadStream, fsync, open as openFd, write, writev } from "node:fs";
import { open, rename, unlink } from "node:fs/promises";
import { pipeline, Readable, Writable } from "node:stream";
import { promisify } from "node:util";
import type { Envelope } from "../../shared/envelope.js";
import { FIRST_RELEASE, ReleasingStream } from "./buffer-release.js";
import { newQueueId } from "./queue-id.js";
import type { QueueState, Spool } from "./spool.js";

/** Everything the queue knows about a message besides its content. */
export interface QueueRecord {
  /** Format version of this record. */
  v: 1;
  id: string;
  /** Arrival time, milliseconds since the epoch. */
  arrival: number;
  envelope: Envelope;
  /** The SMTP client that handed the message in; absent for mail made by the agent itself. */
  client?: { address: string; hostname: string; helo: string; listener: string };
  /** TLS of the client's session, for logs and the Received: header. */
  tls?: { protocol: string; cipher: string };
  /** SASL account the client authenticated as. */
  saslUser?: string;
  /** How the agent got the message: `smtp`, `pickup` (sendmail drop), `http`, `bounce`, `local` (forwarded). */
  origin: "smtp" | "pickup" | "http" | "bounce" | "local";
}

/** The largest content kept in memory from intake to the first delivery attempt, octets. */
export const KEPT_CONTENT = 64 * 1024;

// Raw descriptors: this is the per-message hot path, and FileHandle objects cost more than the I/O.
const openAsync = promisify(openFd);
const writeAsync = promisify(write);
const fsyncAsync = promisify(fsync);
const closeAsync = promisify(close);

/** A queue file being written in incoming/. Commit makes it durable and visible to the queue manager. */
export class IncomingQueueFile {
  private committed = false;
  private closed = false;
  /** Octets in the file so far, the envelope record line included. */
  private written = 0;
  /** What was written of a small message, for its first delivery; null once it outgrows KEPT_CONTENT. */
  private kept: Buffer[] | null = [];
  private keptLength = 0;
  /** The envelope record line, until it is written together with the first content. */
  private pending: Buffer | null;
  /** Where the content starts: just past the envelope record line. */
  private readonly contentOffset: number;
  private constructor(
    private readonly spool: Spool,
    readonly record: QueueRecord,
    private readonly fd: number,
    recordLine: Buffer,
  ) {
    this.pending = recordLine;
    this.contentOffset = recordLine.length;
  }

  /** Create a queue file in incoming/ for `record` (its id and arrival are filled in here). */
  static async create(spool: Spool, record: Omit<QueueRecord, "v" | "id" | "arrival">, arrival = Date.now()): Promise<IncomingQueueFile> {
    for (;;) {
      const full: QueueRecord = { v: 1, id: newQueueId(arrival), arrival, ...record };
      let fd: number;
      try {
        fd = await openAsync(spool.file("incoming", full.id), "wx", 0o600);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") continue;
        throw err;
      }
      return new IncomingQueueFile(spool, full, fd, Buffer.from(JSON.stringify(full) + "\n"));
    }
  }

  get id(): string {
    return this.record.id;
  }

  /** A writable for the message content; each write lands in the file before the next is taken. */
  content(): Writable {
    const writeAll = (buffers: Buffer[], done: (err?: Error | null) => void) => {
      this.keep(buffers);
      if (this.pending) {
        buffers.unshift(this.pending);
        this.pending = null;
      }
      const expected = buffers.reduce((n, b) => n + b.length, 0);
      writev(this.fd, buffers, this.written, (err, written) => {
        if (err) return done(err);
        this.written += written;
        // A short write (rare: signals, quotas) is finished with plain writes of the rest.
        if (written === expected) return done();
        const rest = Buffer.concat(buffers).subarray(written);
        writeAsync(this.fd, rest, 0, rest.length, this.written).then(({ bytesWritten }) => {
          this.written += bytesWritten;
          done(bytesWritten === rest.length ? null : Object.assign(new Error("short write to queue file"), { code: "EIO" }));
        }, done);
      });
    };
    return new Writable({
      highWaterMark: 256 * 1024,
      write: (chunk: Buffer, _enc, done) => writeAll([chunk], done),
      writev: (chunks, done) => writeAll(chunks.map((c) => c.chunk as Buffer), done),
      final: (done) => (this.pending ? writeAll([], done) : done()),
    });
  }

  /**
   * fsync the file, move it into active/ and fsync that directory. Only after this resolves may
   * the client be told the message is queued.
   */
  async commit(): Promise<QueuedMessage> {
    if (this.pending) throw new Error(`${this.id}: commit before the content was written`);
    // Counted here, not told by the caller: readers stop at this size.
    const size = this.written - this.contentOffset;
    await fsyncAsync(this.fd);
    // Nothing is left to flush, so close(2) returns at once: not worth a trip through the thread pool.
    // Marked closed first: a failed close(2) has freed the descriptor all the same, and abort must not close it again.
    this.closed = true;
    closeSync(this.fd);
    await rename(this.spool.file("incoming", this.id), this.spool.file("active", this.id));
    try {
      await this.spool.syncDir(this.spool.dir("active"));
    } catch (err) {
      // Not durable, so not queued: the client is told to try again, and this copy must not be delivered beside its retry.
      await unlink(this.spool.file("active", this.id)).catch(() => {});
      throw err;
    }
    this.committed = true;
    const content = this.kept && this.keptLength === size ? Buffer.concat(this.kept, size) : undefined;
    return { record: this.record, state: "active", size, contentOffset: this.contentOffset, ...(content ? { content } : {}) };
  }

  private keep(buffers: Buffer[]): void {
    if (this.kept === null) return;
    for (const b of buffers) this.keptLength += b.length;
    if (this.keptLength > KEPT_CONTENT) this.kept = null;
    else this.kept.push(...buffers);
  }

  /** Remove the partial file: the message was refused or the client went away. */
  async abort(): Promise<void> {
    if (this.committed) return;
    if (!this.closed) {
      this.closed = true;
      await closeAsync(this.fd).catch(() => {});
    }
    await unlink(this.spool.file("incoming", this.id)).catch(() => {});
  }
}

/** A message in the queue, as read back by the queue manager and the queue tools. */
export interface QueuedMessage {
  record: QueueRecord;
  state: QueueState;
  /** Size of the message content in octets. */
  size: number;
  /** Offset of the content in the queue file. */
  contentOffset: number;
  /**
   * The content of a small message just committed, as written to its file: its first delivery
   * need not read the file back. Never set on messages read from the queue.
   */
  content?: Buffer;
}

/** Thrown for a queue file that cannot be read back; the queue manager moves it to corrupt/. */
export class CorruptQueueFile extends Error {
  constructor(
    readonly id: string,
    reason: string,
  ) {
    super(`${id}: corrupt queue file: ${reason}`);
    this.name = "CorruptQueueFile";
  }
}

/** Read the envelope record of queue file `id` in `state`. */
export async function readQueueFile(spool: Spool, state: QueueState, id: string): Promise<QueuedMessage> {
  const fh = await open(spool.file(state, id), "r");
  try {
    const { size } = await fh.stat();
    // The record line is small; read a generous prefix and grow only for huge recipient lists.
    let length = Math.min(size, 64 * 1024);
    for (;;) {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, 0);
      const nl = buf.subarray(0, bytesRead).indexOf(10);
      if (nl !== -1) {
        let record: QueueRecord;
        try {
          record = JSON.parse(buf.subarray(0, nl).toString("utf8")) as QueueRecord;
        } catch {
          throw new CorruptQueueFile(id, "envelope record is not JSON");
        }
        if (record.v !== 1 || record.id !== id || !record.envelope || !Array.isArray(record.envelope.recipients)) {
          throw new CorruptQueueFile(id, "envelope record is incomplete");
        }
        return { record, state, size: size - nl - 1, contentOffset: nl + 1 };
      }
      if (length >= size) throw new CorruptQueueFile(id, "no end of envelope record");
      length = Math.min(size, length * 4);
    }
  } finally {
    await fh.close();
  }
}

/** Stream the message content of a queued message (a large one with its memory released as it goes). */
export function openContent(spool: Spool, message: QueuedMessage): NodeJS.ReadableStream {
  if (message.content) return Readable.from([message.content], { objectMode: false });
  // With its end given, the stream reads no more than the message (one read for most) and needs no read to find EOF.
  const file = createReadStream(spool.file(message.state, message.record.id), {
    start: message.contentOffset,
    end: message.contentOffset + Math.max(message.size, 1) - 1,
    highWaterMark: 256 * 1024,
  });
  if (message.size <= FIRST_RELEASE) return file;
  const released = new ReleasingStream();
  // pipeline: an error of the file reaches the reader, and a reader that stops closes the file.
  pipeline(file, released, () => {});
  return released;
}

/** Move a queue file to another state; durable when this resolves. */
export async function moveQueueFile(spool: Spool, id: string, from: QueueState, to: QueueState): Promise<void> {
  await rename(spool.file(from, id), spool.file(to, id));
  await spool.syncDir(spool.dir(to));
}
