/**
 * cleanup — a message's content on its way into the queue (Postfix cleanup(8)): hop count, our
 * Received:, Message-ID: and Date: for submission clients, line and header size checks.
 */
import { Transform, type TransformCallback } from "node:stream";
import { Headers } from "mailsplit";
import { BufferRelease } from "../queue/buffer-release.js";

/** What cleanup is told about the message it processes. */
export interface CleanupOptions {
  /** The complete, folded `Received:` header to prepend, without the final CRLF. */
  received: string;
  /** Add Message-ID: and Date: when missing (submission clients, RFC 6409 section 8). */
  complete: { messageId: string; date: string } | null;
  hopLimit: number;
  /** Longest line, in octets before CRLF. */
  lineLength: number;
  /** Largest top-level header block (Postfix header_size_limit). */
  headerSize: number;
}

/** A problem found in the content; the message must be refused with the matching reply. */
export type CleanupFault = "loop" | "line-too-long" | "header-too-large";

/**
 * The transform between the client's DATA stream and the queue file: the body streams through
 * untouched, only the top-level header block is held (up to its size limit), and a large message's
 * memory is released as it passes. Read `fault` after it has ended: a message with a fault must not be queued.
 */
export class Cleanup extends Transform {
  /** The first problem found, or null for a message that may be queued. */
  fault: CleanupFault | null = null;
  /** Octets written out: the size of the message as queued. */
  size = 0;
  private head: Buffer[] | null = [];
  private headLength = 0;
  private lineRun = 0;
  private lastWasCr = false;
  private readonly release = new BufferRelease();

  constructor(private readonly options: CleanupOptions) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.release.add(chunk.length);
    this.checkLines(chunk);
    if (this.head === null) return this.forward(chunk, done);
    this.head.push(chunk);
    this.headLength += chunk.length;
    const all = this.head.length === 1 ? chunk : Buffer.concat(this.head);
    this.head = [all];
    const end = headerEnd(all, Math.max(0, this.headLength - chunk.length - 3));
    if (end === -1) {
      if (this.headLength > this.options.headerSize) {
        this.setFault("header-too-large");
        this.head = null;
      }
      return done();
    }
    this.head = null;
    if (end > this.options.headerSize) {
      this.setFault("header-too-large");
      return done();
    }
    // The header block and the rest of the chunk in one piece: most messages reach the queue file in one write(2).
    this.forward(Buffer.concat([this.rewriteHeaders(all.subarray(0, end)), all.subarray(end)]), done);
  }

  override _flush(done: TransformCallback): void {
    if (this.head !== null) {
      // Headers only, no body: the whole message is the header block.
      const all = Buffer.concat(this.head);
      this.head = null;
      if (all.length > this.options.headerSize) {
        this.setFault("header-too-large");
        return done();
      }
      return this.forward(this.rewriteHeaders(all), done);
    }
    done();
  }

  private forward(chunk: Buffer, done: TransformCallback): void {
    if (this.fault === null && chunk.length > 0) {
      this.size += chunk.length;
      this.push(chunk);
    }
    done();
  }

  private setFault(fault: CleanupFault): void {
    this.fault ??= fault;
  }

  /** The header block, with our headers added, ending in the blank line. */
  private rewriteHeaders(block: Buffer): Buffer {
    // A message that starts with its blank line has no headers; mailsplit would keep that line as one.
    const headers = new Headers(block.length <= 2 ? [] : block);
    if (headers.get("received").length >= this.options.hopLimit) this.setFault("loop");
    const { complete } = this.options;
    if (complete) {
      const end = headers.getList().length;
      if (!headers.hasHeader("date")) headers.addFormatted("date", `Date: ${complete.date}`, end);
      if (!headers.hasHeader("message-id")) headers.addFormatted("message-id", `Message-ID: ${complete.messageId}`, end + 1);
    }
    headers.addFormatted("received", this.options.received, 0);
    return headers.build();
  }

  private checkLines(chunk: Buffer): void {
    if (this.fault !== null) return;
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      const end = nl === -1 ? chunk.length : nl;
      this.lineRun += end - start;
      if (nl === -1) {
        if (end > start) this.lastWasCr = chunk[end - 1] === 13;
        if (this.lineRun > this.options.lineLength + 1) this.setFault("line-too-long");
        return;
      }
      // The CR of CRLF is not part of the line; it may be the last byte of the previous chunk.
      const cr = end > start ? chunk[end - 1] === 13 : this.lastWasCr;
      if (this.lineRun - (cr ? 1 : 0) > this.options.lineLength) {
        this.setFault("line-too-long");
        return;
      }
      this.lineRun = 0;
      this.lastWasCr = false;
      start = nl + 1;
    }
  }
}

/** Offset just past the blank line that ends the header block, or -1. A leading blank line means no headers. */
function headerEnd(buf: Buffer, from: number): number {
  if (buf[0] === 10) return 1;
  if (buf[0] === 13 && buf[1] === 10) return 2;
  for (let i = buf.indexOf(10, from); i !== -1; i = buf.indexOf(10, i + 1)) {
    if (buf[i + 1] === 10) return i + 2;
    if (buf[i + 1] === 13 && buf[i + 2] === 10) return i + 3;
  }
  return -1;
}
