/**
 * pickup — the agent's service that queues mail local users dropped into maildrop/ with
 * `homerelay sendmail` (Postfix pickup(8)). It scans the directory at start, then on every change
 * and every few seconds. Each drop file's owner uid says who sent it: that user's address is the
 * default sender and that user's sender rule decides about -f. The message goes through cleanup
 * into the queue; the drop file is removed only after the queue file is committed and handed to
 * the queue manager, so a crash in between means a duplicate, never a loss.
 */
import { watch, type FSWatcher } from "node:fs";
import { readdir, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Headers } from "mailsplit";
import { encodeWord, quoteString } from "nodemailer/lib/mime-funcs";
import { parseAddress } from "../../shared/address.js";
import type { Envelope } from "../../shared/envelope.js";
import type { MailLog } from "../../shared/log.js";
import { rfc5322Date } from "../../shared/rfc5322-date.js";
import { Cleanup, type CleanupFault } from "../cleanup/cleanup.js";
import { IncomingQueueFile, type QueuedMessage } from "../queue/queue-file.js";
import type { Spool } from "../queue/spool.js";
import {
  CorruptDropFile,
  MAILDROP,
  NotADropFile,
  ensureMaildrop,
  extractRecipients,
  isHeaderLine,
  maildropDir,
  qualify,
  readDropFile,
  type DropFile,
} from "./maildrop.js";

/**
 * May local user `user` (uid `uid`) send as `sender` (given with -f)? When not, pickup uses the
 * user's own address instead. Unqualified senders arrive qualified with the agent's hostname.
 */
export type SenderRule = (uid: number, user: string, sender: string) => boolean;

/** Postfix's default: any local user may set any envelope sender. */
export const anyLocalSender: SenderRule = () => true;

/** What the pickup service needs from the agent. */
export interface PickupOptions {
  spool: Spool;
  /** Domain of unqualified addresses and name in our Received: and Message-ID: headers. */
  hostname: string;
  log: MailLog;
  /** A message was committed to active/ (the queue manager takes it from here). */
  queued(message: QueuedMessage): void;
  /** Who may use which -f sender; default anyLocalSender. */
  mayUseSender?: SenderRule;
  /** Longest line, in octets before CRLF. */
  lineLength: number;
  /** Most Received: headers a message may already have. */
  hopLimit: number;
  /** Largest header block (use HEADER_SIZE_LIMIT from maildrop.ts, as sendmail does). */
  headerSize: number;
  /** Seconds between scans of maildrop/ besides those on change notices (default 5). */
  scanInterval?: number;
}

const CRLF = Buffer.from("\r\n");

/** The pickup service of one agent. */
export class Pickup {
  private readonly dir: string;
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private scanning: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  /** Drop files that could not be picked up, with the error last logged for each (logged once). */
  private readonly failing = new Map<string, string>();
  /** Drop files queued whose removal failed: never queued twice by this process. */
  private readonly stuck = new Set<string>();

  constructor(private readonly o: PickupOptions) {
    this.dir = maildropDir(o.spool.root);
  }

  /** Create maildrop/ if needed, start watching it, and pick up what waits there (resolves after that). */
  async start(): Promise<void> {
    await ensureMaildrop(this.o.spool.root);
    const interval = this.o.scanInterval ?? 5;
    const unwatched = (err: Error) => {
      this.o.log.warn(`cannot watch ${this.dir}: ${err.message}; scanning it every ${interval}s only`);
      this.watcher?.close();
      this.watcher = null;
    };
    try {
      this.watcher = watch(this.dir, () => void this.scan());
      this.watcher.on("error", unwatched);
    } catch (err) {
      unwatched(err as Error);
    }
    this.timer = setInterval(() => void this.scan(), interval * 1000);
    this.timer.unref();
    await this.scan();
  }

  /** Stop watching and wait for the message being picked up. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearInterval(this.timer);
    await this.scanning;
  }

  /** Pick up every drop file now. Resolves when done; a call during a scan is served by one more pass. */
  scan(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.scanning) {
      this.again = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      do {
        this.again = false;
        await this.scanOnce();
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.scanning = null;
    });
    return this.scanning;
  }

  private async scanOnce(): Promise<void> {
    const { log } = this.o;
    let names: string[];
    try {
      // Names starting with a dot are files sendmail is still writing (.tmp.*).
      names = (await readdir(this.dir)).filter((n) => !n.startsWith(".")).sort();
    } catch (err) {
      log.warn(`cannot scan ${this.dir}: ${(err as Error).message}`);
      return;
    }
    for (const name of this.failing.keys()) if (!names.includes(name)) this.failing.delete(name);
    for (const name of names) {
      if (this.stopped) return;
      if (this.stuck.has(name)) continue;
      try {
        await this.pickup(name);
        this.failing.delete(name);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (this.failing.get(name) !== (e.code ?? e.message)) log.warn(`${MAILDROP}/${name}: cannot pick up: ${e.message}; will retry`);
        this.failing.set(name, e.code ?? e.message);
      }
    }
  }

  /** Queue one drop file. Throws (leaving the file for the next scan) on errors that may pass. */
  private async pickup(name: string): Promise<void> {
    const path = join(this.dir, name);
    let drop: DropFile;
    try {
      drop = await readDropFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      if (err instanceof NotADropFile) {
        await unlink(path);
        this.o.log.warn(`${MAILDROP}/${name}: ${err.message}, removed unread`);
        return;
      }
      if (err instanceof CorruptDropFile) return this.quarantine(name, err.message);
      throw err;
    }
    let outcome: QueuedMessage | string;
    try {
      outcome = await this.enqueue(name, drop);
    } finally {
      drop.content.destroy();
    }
    if (typeof outcome === "string") return this.quarantine(name, outcome);
    this.o.queued(outcome);
    try {
      await unlink(path);
    } catch (err) {
      this.stuck.add(name);
      this.o.log.error(`${outcome.record.id}: cannot remove ${MAILDROP}/${name} after queueing it: ${(err as Error).message}; it is queued again if the agent restarts`);
    }
  }

  /** Build the envelope, stream the message through cleanup into the queue. Returns the committed message, or why it was refused. */
  private async enqueue(name: string, drop: DropFile): Promise<QueuedMessage | string> {
    const { spool, hostname, log } = this.o;
    const { entry, owner } = drop;
    const user = await lookupUser(owner);
    const userName = user?.name ?? String(owner);
    const ownAddress = `${userName}@${hostname}`;
    // What the file says goes into log lines: without control characters, which could forge lines.
    const given = printable(entry.sender ?? userName);
    const refused = (reason: string) => `uid=${owner} from=<${given}>: ${reason}`;

    let sender = entry.sender === undefined ? ownAddress : qualify(entry.sender, hostname);
    if (sender !== "" && !parseAddress(sender).ok) return refused("bad sender address syntax");
    if (entry.sender !== undefined && !(this.o.mayUseSender ?? anyLocalSender)(owner, userName, sender)) {
      log.warn(`${MAILDROP}/${name}: uid=${owner} (${userName}) may not send as <${sender}>; sender set to <${ownAddress}>`);
      sender = ownAddress;
    }
    const recipients = entry.recipients.map((r) => qualify(r, hostname));
    const bad = recipients.find((r) => !parseAddress(r).ok);
    if (bad !== undefined) return refused(`bad recipient address syntax <${printable(bad)}>`);

    const content = toCrlf(drop.content)[Symbol.asyncIterator]();
    const split = await splitHeader(content, this.o.headerSize);
    if (!split) return refused("message header too large");
    const headers = new Headers(split.header.length > 0 ? split.header : []);
    if (entry.extractRecipients) {
      const { addresses, invalid } = extractRecipients(headers);
      const malformed = [...invalid];
      for (const address of addresses) {
        const qualified = qualify(address, hostname);
        if (parseAddress(qualified).ok) recipients.push(qualified);
        else malformed.push(address);
      }
      for (const m of malformed) log.warn(`${MAILDROP}/${name}: uid=${owner}: ignoring malformed recipient ${JSON.stringify(m)} in the message header`);
    }
    // Bcc: and Resent-Bcc: never leave with the message (Postfix drops them from every message).
    headers.remove("bcc");
    headers.remove("resent-bcc");
    if (!headers.hasHeader("from")) {
      const fullName = printable(entry.fullName ?? user?.gecos.split(",")[0] ?? "", "").trim();
      headers.add("From", fromValue(fullName, sender || `MAILER-DAEMON@${hostname}`), headers.getList().length);
    }
    const unique = [...new Map(recipients.map((r) => [mailboxKey(r), r])).values()];
    if (unique.length === 0) return refused("no recipients");

    const envelope: Envelope = {
      sender,
      recipients: unique.map((address) => ({ address, ...(entry.notify ? { notify: entry.notify } : {}) })),
      ...(entry.envid !== undefined ? { envid: entry.envid } : {}),
      ...(entry.body ? { body: entry.body } : {}),
    };
    const file = await IncomingQueueFile.create(spool, { envelope, origin: "pickup" });
    const id = file.id;
    const now = file.record.arrival;
    log.info(`${id}: uid=${owner} from=<${given}>`, { queueId: id, uid: owner, from: given });
    const cleanup = new Cleanup({
      received: `Received: by ${hostname} (homerelay, from userid ${owner})\r\n\tid ${id}; ${rfc5322Date(new Date(now))}`,
      // Date: says when the user sent the message, which may be long before the agent started.
      complete: { messageId: `<${id}@${hostname}>`, date: rfc5322Date(new Date(Math.min(entry.time, now))) },
      hopLimit: this.o.hopLimit,
      lineLength: this.o.lineLength,
      headerSize: this.o.headerSize,
    });
    let queued: QueuedMessage;
    try {
      await pipeline(Readable.from(joined(headers.build("\r\n"), split.body, content)), cleanup, file.content());
      if (cleanup.fault) {
        await file.abort();
        return `${id}: ${refused(FAULTS[cleanup.fault](this.o))}`;
      }
      queued = await file.commit();
    } catch (err) {
      await file.abort();
      throw err;
    }
    log.info(`${id}: from=<${sender}>, size=${cleanup.size}, nrcpt=${unique.length} (queue active)`, {
      queueId: id,
      from: sender,
      size: cleanup.size,
      nrcpt: unique.length,
    });
    return queued;
  }

  /** Keep a drop file that cannot be queued in corrupt/ for the administrator. */
  private async quarantine(name: string, reason: string): Promise<void> {
    const { spool, log } = this.o;
    await rename(join(this.dir, name), spool.file("corrupt", name));
    await spool.syncDir(spool.dir("corrupt"));
    log.warn(`${MAILDROP}/${name}: ${reason}; moved to corrupt/`);
  }
}

const FAULTS: Record<CleanupFault, (o: PickupOptions) => string> = {
  loop: (o) => `mail forwarding loop (more than ${o.hopLimit} Received: headers)`,
  "line-too-long": (o) => `message line longer than ${o.lineLength} characters`,
  "header-too-large": () => "message header too large",
};

/** The passwd entry of `uid`: its login name and the GECOS field (full name first). */
async function lookupUser(uid: number): Promise<{ name: string; gecos: string } | null> {
  let text: string;
  try {
    text = await readFile("/etc/passwd", "utf8");
  } catch {
    return null;
  }
  for (const line of text.split("\n")) {
    const fields = line.split(":");
    if (fields.length >= 7 && fields[2] === String(uid) && fields[0]) return { name: fields[0], gecos: fields[4]! };
  }
  return null;
}

/** `Full Name <address>`, the name quoted or MIME-encoded as needed; the bare address without a name. */
function fromValue(fullName: string, address: string): string {
  if (!fullName) return address;
  const phrase = /[^\x20-\x7e]/.test(fullName)
    ? encodeWord(fullName, "Q", 52)
    : /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+$/.test(fullName)
      ? fullName
      : quoteString(fullName);
  return `${phrase} <${address}>`;
}

/** `text` without control characters (each replaced by `by`). */
function printable(text: string, by = "?"): string {
  return text.replace(/[\x00-\x1f\x7f]/g, by);
}

/** Recipients are the same when local parts match exactly and domains case-insensitively. */
function mailboxKey(address: string): string {
  const at = address.lastIndexOf("@");
  return address.slice(0, at) + address.slice(at).toLowerCase();
}

/** The content with CRLF line ends (the queue's format) whatever sendmail read; a last line gets its CRLF. */
async function* toCrlf(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let lastWasCr = false;
  let last: number | undefined;
  for await (const chunk of source) {
    if (chunk.length === 0) continue;
    const parts: Buffer[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, nl + 1)) {
      const cr = nl > 0 ? chunk[nl - 1] === 13 : lastWasCr;
      if (cr) continue;
      parts.push(chunk.subarray(start, nl), CRLF);
      start = nl + 1;
    }
    parts.push(chunk.subarray(start));
    last = chunk[chunk.length - 1];
    lastWasCr = last === 13;
    yield parts.length === 1 ? chunk : Buffer.concat(parts);
  }
  if (last !== undefined && last !== 10) yield CRLF;
}

/**
 * Read the header block off the front of CRLF content: it ends at the blank line, or before the
 * first line that is no header field (that line starts the body; the blank line is added back
 * by Headers#build). Null when it grows past `limit` bytes.
 */
async function splitHeader(content: AsyncIterator<Buffer>, limit: number): Promise<{ header: Buffer; body: Buffer } | null> {
  let buf = Buffer.alloc(0);
  let pos = 0;
  for (;;) {
    for (let nl = buf.indexOf(10, pos); nl !== -1; nl = buf.indexOf(10, pos)) {
      const line = buf.subarray(pos, nl + 1);
      if (line.length === 2) return { header: buf.subarray(0, pos), body: buf.subarray(nl + 1) };
      if (!isHeaderLine(line, pos === 0)) return { header: buf.subarray(0, pos), body: buf.subarray(pos) };
      pos = nl + 1;
    }
    if (buf.length > limit) return null;
    const next = await content.next();
    // Every line of CRLF content is complete, so at the end all of it is header.
    if (next.done) return { header: buf, body: Buffer.alloc(0) };
    buf = Buffer.concat([buf, next.value]);
  }
}

/** The rebuilt header block, what was read of the body with it, then the rest of the content. */
async function* joined(header: Buffer, body: Buffer, rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  yield header;
  if (body.length > 0) yield body;
  for (;;) {
    const next = await rest.next();
    if (next.done) return;
    yield next.value;
  }
}
