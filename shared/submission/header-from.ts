/**
 * header-from — the addresses of a raw message's From: header field, which an API checks against
 * the senders a token or key may use (the envelope sender alone would let `From: ceo@bank` through).
 * The message must have exactly one From: field naming at least one address.
 */
import addressparser from "nodemailer/lib/addressparser";
import { problemOf, type ProblemDetails } from "../problem-details.js";
import { MESSAGE_PROBLEMS } from "./message-problems.js";

/** The From: addresses of `raw` (an RFC 5322 message, CRLF or LF line ends), or the `bad-message` problem. */
export function headerFromAddresses(raw: Buffer): { ok: true; addresses: string[] } | { ok: false; problem: ProblemDetails } {
  const refuse = (detail: string) => ({ ok: false as const, problem: problemOf(MESSAGE_PROBLEMS, "bad-message", detail) });
  const lines = headerFields(headerBlock(raw), "from");
  if (lines.length !== 1) return refuse(lines.length === 0 ? "the message has no From: header field" : "the message has more than one From: header field");
  const line = lines[0]!;
  // Header lines are kept as raw bytes in a latin1 string; addresses may be UTF-8.
  const value = Buffer.from(line.slice(line.indexOf(":") + 1), "latin1").toString("utf8");
  const addresses = addressparser(value, { flatten: true })
    .map((a) => a.address)
    .filter((a) => a !== "");
  if (addresses.length === 0) return refuse("the From: header field names no address");
  return { ok: true, addresses };
}

/**
 * The fields named `name` in a header block, each unfolded (RFC 5322 section 2.2.3: a line that
 * starts with white space continues the field before it), as latin1 strings of the raw bytes.
 * Not mailsplit's Headers: it loads libmime and its character-set tables (some 490 KB), which the
 * cloud's Lambda bundle cannot carry under its 1 MB budget just to read one field.
 */
function headerFields(block: Buffer, name: string): string[] {
  const fields: string[] = [];
  for (const line of block.toString("latin1").split(/\r?\n/)) {
    if (line === "") break;
    if ((line[0] === " " || line[0] === "\t") && fields.length > 0) fields[fields.length - 1] += line;
    else fields.push(line);
  }
  return fields.filter((field) => field.includes(":") && field.slice(0, field.indexOf(":")).trim().toLowerCase() === name);
}

/** The header block of `raw`, up to and including the blank line; empty for a message that starts with one. */
function headerBlock(raw: Buffer): Buffer {
  if (raw[0] === 10 || (raw[0] === 13 && raw[1] === 10)) return Buffer.alloc(0);
  for (let nl = raw.indexOf(10); nl !== -1; nl = raw.indexOf(10, nl + 1)) {
    if (raw[nl + 1] === 10) return raw.subarray(0, nl + 2);
    if (raw[nl + 1] === 13 && raw[nl + 2] === 10) return raw.subarray(0, nl + 3);
  }
  return raw;
}
