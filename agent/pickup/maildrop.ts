/**
 * maildrop — the drop directory shared by `homerelay sendmail` and the agent's pickup service
 * (Postfix's maildrop/). Any local user may drop mail there, even while the agent is stopped:
 * the directory is world-writable, sticky and not listable (1733). A drop file is one JSON line
 * with what sendmail was told, then the message exactly as sendmail read it (LF or CRLF).
 * Who sent it is never taken from the file's content: pickup reads the file owner's uid.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { chmod, mkdir, open, rename, unlink, type FileHandle } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { Headers } from "mailsplit";
import addressparser from "nodemailer/lib/addressparser";
import type { DsnNotify } from "../../shared/envelope.js";

/** The drop directory's name under the spool root. */
export const MAILDROP = "maildrop";

/** Sticky, writable and searchable by all, listable by its owner only: users can drop but not find others' files. */
export const MAILDROP_MODE = 0o1733;

/**
 * Mode of a drop file. The writer owns the file, and the agent runs as root or as the spool's
 * owner, not as the writer: 0600 would lock the agent out unless it runs as root. 0644 is safe
 * here because nobody but the directory's owner can list maildrop/, and the names carry 128
 * random bits, so another user can neither find nor guess a file to open.
 */
export const DROP_FILE_MODE = 0o644;

/** The largest header block sendmail and pickup accept (the same as smtpd's). */
export const HEADER_SIZE_LIMIT = 1024 * 1024;

/** The longest first line pickup accepts (a huge recipient list), in bytes. */
const MAX_ENTRY_LINE = 1024 * 1024;

/** What sendmail records about a message, besides its content. */
export interface DropEntry {
  /** Format version. */
  v: 1;
  /** `-f`/`-r`: the envelope sender as given ("" = null sender); absent = the file owner's address. */
  sender?: string;
  /** `-F` (or $NAME): the full name for a From: header that pickup adds when the message has none. */
  fullName?: string;
  /** Recipients from the command line, as given (unqualified names allowed). */
  recipients: string[];
  /** `-t`: also take recipients from the To:, Cc: and Bcc: headers (Resent-* ones when present). */
  extractRecipients: boolean;
  /** When sendmail was run, milliseconds since the epoch. */
  time: number;
  /** `-N`: DSN NOTIFY for every recipient. */
  notify?: DsnNotify[];
  /** `-V`: DSN envelope ID. */
  envid?: string;
  /** `-B`: body type. */
  body?: "7BIT" | "8BITMIME";
}

/** The maildrop directory of the spool at `spool`. */
export function maildropDir(spool: string): string {
  return join(spool, MAILDROP);
}

/**
 * Create the spool root (0755) and its maildrop (1733) where they are missing, so that mail can
 * be dropped before the agent ever ran. Modes are set explicitly: the caller's umask (cron's may
 * be 077) must not lock other users or the agent out. Existing directories are left as they are.
 */
export async function ensureMaildrop(spool: string): Promise<string> {
  const root = resolve(spool);
  const first = await mkdir(root, { recursive: true, mode: 0o755 });
  if (first !== undefined) {
    // mkdir -p created `first` and every directory below it down to the spool root.
    for (let dir = root; ; dir = dirname(dir)) {
      await chmod(dir, 0o755);
      if (dir === first || dir === dirname(dir)) break;
    }
  }
  const dir = maildropDir(root);
  try {
    await mkdir(dir, { mode: MAILDROP_MODE });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return dir;
    throw err;
  }
  await chmod(dir, MAILDROP_MODE);
  return dir;
}

/**
 * Write a drop file into the spool's maildrop: first under a `.tmp.` name, fsynced, then renamed
 * to its final name and the directory fsynced, so a complete file only ever appears under its
 * final name. An error from `content` (or from the disk) removes the partial file and is rethrown.
 * Resolves with the path of the file once it is durable.
 */
export async function writeDropFile(spool: string, entry: Omit<DropEntry, "v" | "time">, content: Readable): Promise<string> {
  const dir = maildropDir(spool);
  const name = randomBytes(16).toString("hex");
  const temp = join(dir, `.tmp.${name}`);
  const fh = await open(temp, "wx", DROP_FILE_MODE);
  let closed = false;
  try {
    await fh.chmod(DROP_FILE_MODE);
    const record: DropEntry = { v: 1, ...entry, time: Date.now() };
    await writeAll(fh, Buffer.from(JSON.stringify(record) + "\n"));
    for await (const chunk of content as AsyncIterable<Buffer>) await writeAll(fh, chunk);
    await fh.sync();
    closed = true;
    await fh.close();
    const final = join(dir, name);
    await rename(temp, final);
    const dh = await open(dir, "r");
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
    return final;
  } catch (err) {
    if (!closed) await fh.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw err;
  }
}

/** Write all of `data`: a write that fills the disk returns short, and only the next one fails with ENOSPC. */
async function writeAll(fh: FileHandle, data: Buffer): Promise<void> {
  for (let offset = 0; offset < data.length; ) {
    const { bytesWritten } = await fh.write(data, offset, data.length - offset);
    offset += bytesWritten;
  }
}

/** A drop file whose content cannot be read as one: pickup moves it to corrupt/. */
export class CorruptDropFile extends Error {
  constructor(reason: string) {
    super(`corrupt drop file: ${reason}`);
    this.name = "CorruptDropFile";
  }
}

/** Something in maildrop/ that is no drop file (a symlink, a FIFO, a hard link): pickup removes it unread. */
export class NotADropFile extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "NotADropFile";
  }
}

/** A drop file opened for pickup. */
export interface DropFile {
  entry: DropEntry;
  /** The uid that owns the file: the local user who submitted the message. */
  owner: number;
  /** The message as sendmail read it. Consume or destroy it: it holds the file open. */
  content: Readable;
}

/**
 * Open a drop file and read its entry. Users control what is in maildrop/, so the file is opened
 * without following symlinks and must be a regular file with one link (no FIFO to hang on, no
 * link to a file the agent may read but the user may not); the owner comes from that same open file.
 * Throws NotADropFile or CorruptDropFile, or the system error (ENOENT when it is gone).
 */
export async function readDropFile(path: string): Promise<DropFile> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ELOOP") throw new NotADropFile("symbolic link");
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new NotADropFile("not a regular file");
    if (st.nlink !== 1) throw new NotADropFile(`unexpected link count ${st.nlink}`);
    const head = Buffer.alloc(Math.min(st.size, MAX_ENTRY_LINE));
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const nl = head.subarray(0, bytesRead).indexOf(10);
    if (nl === -1) throw new CorruptDropFile(st.size > MAX_ENTRY_LINE ? "entry line too long" : "no entry line");
    const entry = parseEntry(head.subarray(0, nl).toString("utf8"));
    return { entry, owner: st.uid, content: fh.createReadStream({ start: nl + 1, highWaterMark: 256 * 1024 }) };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

const NOTIFY = new Set<string>(["NEVER", "SUCCESS", "FAILURE", "DELAY"]);

/** Parse and check the entry line; anything unexpected makes the file corrupt. */
function parseEntry(line: string): DropEntry {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw new CorruptDropFile("entry line is not JSON");
  }
  const e = raw as Record<string, unknown>;
  const optionalString = (v: unknown) => v === undefined || typeof v === "string";
  const ok =
    typeof raw === "object" &&
    raw !== null &&
    e.v === 1 &&
    Array.isArray(e.recipients) &&
    e.recipients.every((r) => typeof r === "string") &&
    typeof e.extractRecipients === "boolean" &&
    typeof e.time === "number" &&
    Number.isFinite(e.time) &&
    optionalString(e.sender) &&
    optionalString(e.fullName) &&
    optionalString(e.envid) &&
    (e.body === undefined || e.body === "7BIT" || e.body === "8BITMIME") &&
    (e.notify === undefined || (Array.isArray(e.notify) && e.notify.every((n) => typeof n === "string" && NOTIFY.has(n))));
  if (!ok) throw new CorruptDropFile("entry line is incomplete");
  return raw as DropEntry;
}

/** `name` → `name@hostname` (Postfix append_at_myorigin); addresses with a domain, and "", stay as they are. */
export function qualify(address: string, hostname: string): string {
  return address === "" || address.includes("@") ? address : `${address}@${hostname}`;
}

/** The addresses in an address list (a header value or a command-line argument), and the parts that are none. */
export function parseAddressList(text: string): { addresses: string[]; invalid: string[] } {
  const addresses: string[] = [];
  const invalid: string[] = [];
  for (const { address, name } of addressparser(text, { flatten: true })) {
    if (address) addresses.push(address);
    // addressparser reads a bare local name ("root", as cron writes it) as a display name.
    else if (/^[^\s"(),:;<>@[\\\]]+$/.test(name)) addresses.push(name);
    else if (name) invalid.push(name);
  }
  return { addresses, invalid };
}

/**
 * The recipients `sendmail -t` takes from a header block: To:, Cc: and Bcc:, or only the Resent-
 * ones when the message has any (a resent message goes to its new recipients, as in Postfix).
 */
export function extractRecipients(headers: Headers): { addresses: string[]; invalid: string[] } {
  const resent = ["resent-to", "resent-cc", "resent-bcc"].some((h) => headers.hasHeader(h));
  const names = resent ? ["resent-to", "resent-cc", "resent-bcc"] : ["to", "cc", "bcc"];
  const addresses: string[] = [];
  const invalid: string[] = [];
  for (const name of names) {
    for (const line of headers.get(name)) {
      // Header lines are kept as raw bytes in a latin1 string; addresses may be UTF-8.
      const value = Buffer.from(line.slice(line.indexOf(":") + 1), "latin1").toString("utf8").replace(/\r?\n/g, "");
      const parsed = parseAddressList(value);
      addresses.push(...parsed.addresses);
      invalid.push(...parsed.invalid);
    }
  }
  return { addresses, invalid };
}

/**
 * Is `line` (with its line end) part of a header block? A field name and colon, or, after the
 * first line, a folded continuation. The first line that is neither starts the body.
 */
export function isHeaderLine(line: Buffer, first: boolean): boolean {
  if (!first && (line[0] === 0x20 || line[0] === 0x09)) return true;
  return /^[\x21-\x39\x3b-\x7e]+[ \t]*:/.test(line.toString("latin1", 0, Math.min(line.length, 1000)));
}
