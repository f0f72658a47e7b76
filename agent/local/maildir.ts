/**
 * maildir — durable delivery of one message into a Maildir mailbox (cr.yp.to/proto/maildir.html):
 * written in tmp/, fsynced, linked into new/ and new/ fsynced, so a message is either safely
 * delivered or not there at all. Stored with LF line ends, as mail readers expect of a Maildir.
 */
import { link, mkdir, open, rm, type FileHandle } from "node:fs/promises";
import { join } from "node:path";

/** One message to deliver into a Maildir. */
export interface MaildirDelivery {
  /** Directory that holds one Maildir per mailbox. */
  root: string;
  /** Mailbox name: the Maildir is `root/<mailbox>/`. */
  mailbox: string;
  /** Header lines the delivery agent adds (Return-Path:, Delivered-To:), LF-terminated. */
  prepend: string;
  /** The message as queued, CRLF line ends; read once, chunk by chunk. */
  content: AsyncIterable<Buffer> | NodeJS.ReadableStream;
  /** This host's name, part of the unique file name. */
  hostname: string;
}

/** Where a delivered message is, and its size in bytes as stored. */
export interface MaildirReceipt {
  path: string;
  size: number;
}

const CR = 0x0d;
const LF = 0x0a;
const LONE_CR = Buffer.from([CR]);

/** Deliveries by this process: the Q part of file names, unique even within one microsecond. */
let deliveries = 0;

/**
 * Deliver a message into `root/<mailbox>/new/`, creating the Maildir (mode 0700) on demand.
 * Resolves only once the message and its directory entry are on disk. On failure nothing is
 * left in the Maildir and the original error (with its errno code) is thrown.
 */
export async function deliverToMaildir(delivery: MaildirDelivery): Promise<MaildirReceipt> {
  checkMailboxName(delivery.mailbox);
  const maildir = join(delivery.root, delivery.mailbox);
  for (const sub of ["tmp", "new", "cur"]) await mkdir(join(maildir, sub), { recursive: true, mode: 0o700 });

  const name = uniqueName(delivery.hostname);
  const tmpPath = join(maildir, "tmp", name);
  const newPath = join(maildir, "new", name);
  let file: FileHandle | undefined;
  let created = false;
  let linked = false;
  try {
    file = await open(tmpPath, "wx", 0o600);
    created = true;
    let size = await writeAll(file, Buffer.from(delivery.prepend));
    for await (const chunk of crlfToLf(delivery.content)) size += await writeAll(file, chunk);
    await file.sync();
    await file.close();
    file = undefined;
    // link, not rename: link never replaces a message already in new/.
    await link(tmpPath, newPath);
    linked = true;
    await rm(tmpPath);
    await syncDirectory(join(maildir, "new"));
    return { path: newPath, size };
  } catch (error) {
    // Best effort: the caller needs the original error, not one from cleaning up. A message
    // left in new/ would be delivered twice when the queue retries.
    await file?.close().catch(() => {});
    if (created) await rm(tmpPath, { force: true }).catch(() => {});
    if (linked) await rm(newPath, { force: true }).catch(() => {});
    throw error;
  }
}

/** Refuse names that would leave `root` or hide the Maildir; the error has code EINVAL. */
function checkMailboxName(mailbox: string): void {
  if (mailbox === "" || mailbox.startsWith(".") || mailbox.includes("/") || mailbox.includes("\0")) {
    throw Object.assign(new Error(`invalid mailbox name ${JSON.stringify(mailbox)}`), { code: "EINVAL" });
  }
}

/** `<seconds>.M<microseconds>P<pid>Q<count>.<host>`, with `/` and `:` in the host name escaped. */
function uniqueName(hostname: string): string {
  const now = Date.now();
  deliveries += 1;
  const host = hostname.replaceAll("/", "\\057").replaceAll(":", "\\072");
  return `${Math.floor(now / 1000)}.M${(now % 1000) * 1000}P${process.pid}Q${deliveries}.${host}`;
}

/** Write all of `data` at the file position (a write may be short); resolves to its length. */
async function writeAll(file: FileHandle, data: Buffer): Promise<number> {
  for (let offset = 0; offset < data.length; ) {
    const { bytesWritten } = await file.write(data, offset);
    offset += bytesWritten;
  }
  return data.length;
}

/** CRLF to LF, also across chunk boundaries; a CR not followed by LF is kept. */
async function* crlfToLf(content: AsyncIterable<Buffer | string>): AsyncGenerator<Buffer> {
  let heldCR = false; // the last chunk ended in CR: the next chunk decides whether it stays
  for await (const piece of content) {
    let chunk = typeof piece === "string" ? Buffer.from(piece) : piece;
    if (chunk.length === 0) continue;
    if (heldCR && chunk[0] !== LF) yield LONE_CR;
    heldCR = chunk[chunk.length - 1] === CR;
    if (heldCR) chunk = chunk.subarray(0, -1);
    yield dropCRBeforeLF(chunk);
  }
  if (heldCR) yield LONE_CR;
}

/** `chunk` without the CR of each CRLF. */
function dropCRBeforeLF(chunk: Buffer): Buffer {
  let at = chunk.indexOf("\r\n");
  if (at < 0) return chunk;
  const out = Buffer.allocUnsafe(chunk.length);
  let length = 0;
  let from = 0;
  while (at >= 0) {
    length += chunk.copy(out, length, from, at);
    from = at + 1; // skip the CR, keep the LF
    at = chunk.indexOf("\r\n", from);
  }
  length += chunk.copy(out, length, from);
  return out.subarray(0, length);
}

/** fsync a directory, making the entries just created in it durable. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
