/**
 * sendmail — `homerelay sendmail`, the /usr/sbin/sendmail that cron, mutt, git send-email and
 * PHP's mail() call (Postfix sendmail(1)): the message on standard input, recipients as arguments
 * or from its headers with -t, and sysexits(3) exit statuses. The message goes into the spool's
 * maildrop/ whether the agent runs or not; the agent's pickup service queues it from there.
 * The process needs no privileges: who sent the message is the owner of the file it writes.
 */
import { Readable, type Writable } from "node:stream";
import { Headers } from "mailsplit";
import { parseAddress } from "../../shared/address.js";
import type { DsnNotify } from "../../shared/envelope.js";
import {
  HEADER_SIZE_LIMIT,
  ensureMaildrop,
  extractRecipients,
  isHeaderLine,
  maildropDir,
  parseAddressList,
  qualify,
  writeDropFile,
  type DropEntry,
} from "../pickup/maildrop.js";

/** sysexits(3): success. */
export const EX_OK = 0;
/** sysexits(3): bad command line (unknown option, no recipients). */
export const EX_USAGE = 64;
/** sysexits(3): bad input (address syntax, message too big, line too long). */
export const EX_DATAERR = 65;
/** sysexits(3): a service is unavailable (the agent, for -bp and -q). */
export const EX_UNAVAILABLE = 69;
/** sysexits(3): the drop file cannot be created (permissions, read-only file system). */
export const EX_CANTCREAT = 73;
/** sysexits(3): try again later (disk full, I/O error); the caller keeps the message. */
export const EX_TEMPFAIL = 75;

/** What `-bp` (mode `list`) and `-q` (mode `flush`) ask of a running agent; resolves with the exit status. */
export type QueueCommand = (mode: "list" | "flush") => Promise<number>;

/** The process around one sendmail run, passed in so that tests can run it in-process. */
export interface SendmailIo {
  /** The message. */
  stdin: Readable;
  /** Diagnostics, one line each, prefixed `homerelay sendmail:`. */
  stderr: Writable;
  /** Read for $NAME, the full name when -F is not given. */
  env: NodeJS.ProcessEnv;
  /** The spool root of the agent's configuration. */
  spool: string;
  /** The agent's hostname: the domain of unqualified addresses, for checking their syntax. */
  hostname: string;
  /** The agent's limits: a longer line or a larger message is refused with EX_DATAERR. */
  limits: { messageSize: number; lineLength: number };
  /** Queue listing and flushing through the running agent; absent when it cannot be reached. */
  queue?: QueueCommand;
}

/** A reason to stop with an exit status and one line on standard error. */
class Fatal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The command line, read. */
interface Invocation {
  mode: "enqueue" | "list" | "flush" | "ignore";
  sender?: string;
  fullName?: string;
  extract: boolean;
  /** Without -i/-oi a line with a single dot ends the message. */
  dotEnds: boolean;
  notify?: DsnNotify[];
  envid?: string;
  body?: "7BIT" | "8BITMIME";
  recipients: string[];
}

/** Postfix sendmail's option letters that take a value; `q` is handled separately, as there. */
const WITH_VALUE = new Set("ABCFLNORVXbefhopqr");
/** Option letters without a value. */
const FLAGS = new Set("GIUcimntvx");

/**
 * Run `homerelay sendmail` with the arguments after the command name. Resolves with the exit
 * status (0 only once the message is durably in maildrop/); never exits the process.
 */
export async function runSendmail(argv: string[], io: SendmailIo): Promise<number> {
  const warn = (text: string) => io.stderr.write(`homerelay sendmail: warning: ${text}\n`);
  try {
    const inv = parseArguments(argv, warn);
    if (inv.mode === "ignore") return EX_OK;
    if (inv.mode !== "enqueue") return await queueCommand(inv, io);
    return await enqueue(inv, io);
  } catch (err) {
    if (!(err instanceof Fatal)) throw err;
    io.stderr.write(`homerelay sendmail: ${err.message}\n`);
    return err.status;
  }
}

/**
 * The configuration file named with `-C` (Postfix reads main.cf from there): the CLI must look
 * at it before it loads the configuration that gives runSendmail its spool.
 */
export function sendmailConfigOption(argv: string[]): string | undefined {
  let file: string | undefined;
  try {
    parseArguments(argv, () => {}, (value) => (file = value));
  } catch {
    // runSendmail reports the usage error.
  }
  return file;
}

function parseArguments(argv: string[], warn: (text: string) => void, onConfig?: (file: string) => void): Invocation {
  const inv: Invocation = { mode: "enqueue", extract: false, dotEnds: true, recipients: [] };
  let i = 0;
  let interval = false;
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      i++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") break;
    if (arg === "-q") {
      inv.mode = "flush";
      continue;
    }
    for (let j = 1; j < arg.length; j++) {
      const letter = arg[j]!;
      if (FLAGS.has(letter)) {
        flag(inv, letter);
        continue;
      }
      if (!WITH_VALUE.has(letter)) throw new Fatal(EX_USAGE, `invalid option -- '${letter}'\nusage: sendmail [options] [recipient ...]`);
      let value = arg.slice(j + 1);
      if (value === "") {
        if (i + 1 >= argv.length) throw new Fatal(EX_USAGE, `option requires an argument -- '${letter}'`);
        value = argv[++i]!;
      }
      if (letter === "C") onConfig?.(value);
      if (letter === "q" && /^\d/.test(value)) interval = true;
      else option(inv, letter, value, warn);
      break;
    }
  }
  inv.recipients = argv.slice(i);
  if (inv.extract && inv.mode !== "enqueue") throw new Fatal(EX_USAGE, "-t can be used only in delivery mode");
  // -q<interval> starts a queue runner in Sendmail; the agent schedules its own runs (Postfix exits 0 too).
  if (interval) inv.mode = "ignore";
  return inv;
}

function flag(inv: Invocation, letter: string): void {
  switch (letter) {
    case "i":
      inv.dotEnds = false;
      break;
    case "t":
      inv.extract = true;
      break;
    case "I":
      throw new Fatal(EX_USAGE, "-I (newaliases) is not supported: the agent reads its aliases file at start and on SIGHUP");
    // -G, -U, -c, -m, -n, -v, -x: accepted and ignored, as in Postfix.
  }
}

function option(inv: Invocation, letter: string, value: string, warn: (text: string) => void): void {
  switch (letter) {
    case "f":
    case "r":
      inv.sender = value;
      break;
    case "F":
      inv.fullName = value;
      break;
    case "B": {
      const body = value.toUpperCase();
      if (body !== "8BITMIME" && body !== "7BIT") throw new Fatal(EX_USAGE, "-B option needs 8BITMIME or 7BIT");
      inv.body = body;
      break;
    }
    case "N": {
      const notify = dsnNotify(value);
      if (notify) inv.notify = notify;
      else warn("bad -N option value -- ignored");
      break;
    }
    case "V":
      if (value.length <= 100 && /^[\x21-\x7e]+$/.test(value)) inv.envid = value;
      else warn("bad -V option value -- ignored");
      break;
    case "b":
      if (value === "p") inv.mode = "list";
      else if (value === "m") inv.mode = "enqueue";
      else if (value === "h" || value === "H") inv.mode = "ignore";
      else throw new Fatal(EX_USAGE, `unsupported: -b${value}`);
      break;
    case "o":
      // -oi is -i; -oem, -odi, -oA…, -o7, -o8 and every other Sendmail option are ignored.
      if (value === "i") inv.dotEnds = false;
      break;
    case "q":
      throw new Fatal(EX_USAGE, `-q${value[0]} is not implemented`);
    case "X":
      throw new Fatal(EX_USAGE, `unsupported: -X${value}`);
    // -A, -C, -L, -O, -R, -e, -h, -p: accepted and ignored (-C is read by sendmailConfigOption).
  }
}

/** `-N never` or a comma list of success, failure, delay; null when malformed. */
function dsnNotify(value: string): DsnNotify[] | null {
  const words = value.toUpperCase().split(",").map((w) => w.trim());
  if (words.length === 1 && words[0] === "NEVER") return ["NEVER"];
  if (!words.every((w) => w === "SUCCESS" || w === "FAILURE" || w === "DELAY")) return null;
  return [...new Set(words as DsnNotify[])];
}

async function queueCommand(inv: Invocation, io: SendmailIo): Promise<number> {
  const mode = inv.mode === "list" ? "list" : "flush";
  if (inv.recipients.length > 0) throw new Fatal(EX_USAGE, `${mode === "list" ? "display queue" : "flush queue"} mode requires no recipient`);
  if (!io.queue) throw new Fatal(EX_UNAVAILABLE, `the agent is not running (queue ${mode === "list" ? "listing" : "flushing"} needs it)`);
  return io.queue(mode);
}

async function enqueue(inv: Invocation, io: SendmailIo): Promise<number> {
  const valid = (address: string) => parseAddress(qualify(address, io.hostname)).ok;
  let sender: string | undefined;
  if (inv.sender !== undefined) {
    // As in Postfix, -f takes the first address of what it is given: `Name <addr>`, `<>` (null sender).
    const { addresses, invalid } = parseAddressList(inv.sender);
    sender = addresses[0] ?? "";
    if (invalid.length > 0 || (sender !== "" && !valid(sender))) throw new Fatal(EX_DATAERR, `bad sender address syntax: ${JSON.stringify(inv.sender)}`);
  }
  const recipients: string[] = [];
  for (const arg of inv.recipients) {
    // Some callers pass "a@x, b@y" or "Name <addr>" as one argument.
    const { addresses, invalid } = parseAddressList(arg);
    const bad = invalid[0] ?? addresses.find((a) => !valid(a)) ?? (addresses.length === 0 ? arg : undefined);
    if (bad !== undefined) throw new Fatal(EX_DATAERR, `bad recipient address syntax: ${JSON.stringify(bad)}`);
    recipients.push(...addresses);
  }
  if (recipients.length === 0 && !inv.extract) {
    throw new Fatal(EX_USAGE, "Recipient addresses must be specified on the command line or via the -t option");
  }
  const fullName = inv.fullName ?? io.env.NAME;
  const entry: Omit<DropEntry, "v" | "time"> = {
    ...(sender !== undefined ? { sender } : {}),
    ...(fullName ? { fullName } : {}),
    recipients,
    extractRecipients: inv.extract,
    ...(inv.notify ? { notify: inv.notify } : {}),
    ...(inv.envid !== undefined ? { envid: inv.envid } : {}),
    ...(inv.body ? { body: inv.body } : {}),
  };
  try {
    await ensureMaildrop(io.spool);
    await writeDropFile(io.spool, entry, Readable.from(readMessage(io.stdin, inv, io, recipients.length)));
  } catch (err) {
    if (err instanceof Fatal) throw err;
    throw storageFailure(err as NodeJS.ErrnoException, maildropDir(io.spool));
  }
  return EX_OK;
}

function lineTooLong(lineLength: number): Fatal {
  return new Fatal(EX_DATAERR, `message line longer than ${lineLength} characters; encode the body (quoted-printable or base64)`);
}

/** Errors after which the same command may well work later: the caller should keep the message. */
const TEMPORARY = new Set(["ENOSPC", "EDQUOT", "EIO", "EAGAIN", "EMFILE", "ENFILE", "ENOMEM", "EBUSY"]);

function storageFailure(err: NodeJS.ErrnoException, dir: string): Fatal {
  const status = err.code && TEMPORARY.has(err.code) ? EX_TEMPFAIL : EX_CANTCREAT;
  return new Fatal(status, `cannot write the message to ${dir}: ${err.message}`);
}

/**
 * The message from standard input as it goes into the drop file: leading mbox `From ` lines
 * dropped (as Postfix does), input ended by a lone `.` line unless -i, line length and size
 * checked. With -t the header block is kept to check that it names recipients; a problem found
 * at the end still removes the drop file, as it is thrown before the file is committed.
 */
async function* readMessage(stdin: Readable, inv: Invocation, io: SendmailIo, commandLineRecipients: number): AsyncGenerator<Buffer> {
  const { lineLength, messageSize } = io.limits;
  let phase: "from_" | "header" | "body" = "from_";
  let headerSize = 0;
  const header: Buffer[] = [];
  let size = 0;

  /** What to do with one line (with its LF, except for a last line without one). */
  const classify = (line: Buffer): "skip" | "stop" | "keep" => {
    const end = line[line.length - 1] === 10 ? line.length - 1 : line.length;
    const textEnd = end > 0 && line[end - 1] === 13 ? end - 1 : end;
    if (textEnd > lineLength) throw lineTooLong(lineLength);
    if (phase === "from_") {
      if (/^>*From /.test(line.toString("latin1", 0, Math.min(textEnd, 64)))) return "skip";
      phase = "header";
    }
    if (inv.dotEnds && textEnd === 1 && line[0] === 0x2e) return "stop";
    if (phase === "header") {
      if (isHeaderLine(line, headerSize === 0)) {
        headerSize += line.length;
        if (headerSize > HEADER_SIZE_LIMIT) throw new Fatal(EX_DATAERR, `message header larger than ${HEADER_SIZE_LIMIT} bytes`);
        if (inv.extract) header.push(Buffer.from(line));
      } else {
        phase = "body";
      }
    }
    size += line.length;
    if (size > messageSize) throw new Fatal(EX_DATAERR, `message larger than the limit of ${messageSize} bytes`);
    return "keep";
  };

  let carry: Buffer | null = null;
  let stopped = false;
  try {
    input: for await (const piece of stdin as AsyncIterable<Buffer | string>) {
      const chunk = typeof piece === "string" ? Buffer.from(piece) : piece;
      const data: Buffer = carry ? Buffer.concat([carry, chunk]) : chunk;
      let start = 0;
      let out = 0;
      for (let nl = data.indexOf(10); nl !== -1; nl = data.indexOf(10, start)) {
        const what = classify(data.subarray(start, nl + 1));
        if (what === "stop") {
          if (start > out) yield data.subarray(out, start);
          stopped = true;
          break input;
        }
        // Only leading lines are skipped, so nothing kept lies before them.
        if (what === "skip") out = nl + 1;
        start = nl + 1;
      }
      if (start > out) yield data.subarray(out, start);
      carry = start < data.length ? data.subarray(start) : null;
      // The rest of a line waits for its end; it may hold a CR but no more than the limit.
      if (carry && carry.length > lineLength + 1) throw lineTooLong(lineLength);
    }
  } catch (err) {
    if (err instanceof Fatal) throw err;
    throw new Fatal(EX_DATAERR, `error reading input: ${(err as Error).message}`);
  }
  if (!stopped && carry && classify(carry) === "keep") yield carry;

  if (inv.extract) {
    const { addresses, invalid } = extractRecipients(new Headers(header.length > 0 ? Buffer.concat(header) : []));
    const bad = invalid[0] ?? addresses.find((a) => !parseAddress(qualify(a, io.hostname)).ok);
    if (bad !== undefined) throw new Fatal(EX_DATAERR, `bad recipient address syntax in message header: ${JSON.stringify(bad)}`);
    if (addresses.length + commandLineRecipients === 0) throw new Fatal(EX_USAGE, "No recipient addresses found in message header");
  }
}
