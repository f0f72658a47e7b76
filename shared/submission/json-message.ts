/**
 * json-message — the JSON form of a message submitted over HTTP, with nodemailer's member names
 * (`from`, `to`, `cc`, `bcc`, `replyTo`, `subject`, `text`, `html`, `headers`, `attachments`,
 * `envelope`): its schema, the checks that keep a header field from smuggling in another, the
 * SMTP envelope it implies, and its composition by nodemailer's MailComposer. Pure: the agent's
 * local API and the cloud read a JSON message through the same `readJsonMessage`.
 */
import type { Readable } from "node:stream";
import addressparser from "nodemailer/lib/addressparser";
import MailComposer from "nodemailer/lib/mail-composer";
import * as z from "zod";
import { parseAddress } from "../address.js";
import type { Envelope } from "../envelope.js";
import { problemOf, ProblemError, type ProblemDetails } from "../problem-details.js";
import { MESSAGE_PROBLEMS, type MessageProblemName } from "./message-problems.js";

/** What a header field value or an address may hold: no CR, LF or NUL, which would end the field and start another. */
const HEADER_SAFE = /^[^\r\n\0]*$/;
/** A header field name (RFC 5322 ftext). */
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;
/** `type/subtype`, optionally with parameters. */
const MEDIA_TYPE = /^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+(\s*;.*)?$/;

const headerText = z.string().regex(HEADER_SAFE, "CR, LF and NUL are not allowed in a header field");
const address = headerText.meta({ id: "Address", description: "`bob@example.org` or `Bob <bob@example.org>`; a comma-separated list where several are allowed" });
const addressList = z.union([address, z.array(address)]);

/** Header fields composed from other members, or written by the MTAs: a `headers` entry may not set them. */
const COMPOSED_FIELDS = new Set([
  "from",
  "to",
  "cc",
  "bcc",
  "reply-to",
  "subject",
  "mime-version",
  "content-type",
  "content-transfer-encoding",
  "content-disposition",
  "received",
  "return-path",
]);

/** One attachment; `content` is base64. */
const attachmentSchema = z
  .object({
    filename: headerText.min(1).max(255).optional(),
    contentType: headerText.regex(MEDIA_TYPE, "expected a media type such as application/pdf").optional().meta({ description: "Default: from the filename's extension" }),
    content: z.string().refine(isBase64, "expected base64").meta({ contentEncoding: "base64", description: "The attachment's bytes, base64" }),
  })
  .strict()
  .meta({ id: "Attachment" });

/** The JSON message, as a client sends it. */
export const jsonMessageSchema = z
  .object({
    from: address,
    to: addressList.optional(),
    cc: addressList.optional(),
    bcc: addressList.optional().meta({ description: "Recipients not shown in the message" }),
    replyTo: addressList.optional(),
    subject: headerText.optional().meta({ description: "Any Unicode; encoded as RFC 2047 words where needed" }),
    text: z.string().optional().meta({ description: "The plain text body" }),
    html: z.string().optional().meta({ description: "The HTML body (with text: multipart/alternative)" }),
    headers: z
      .record(z.string().regex(FIELD_NAME, "expected a header field name"), z.union([headerText, z.array(headerText)]))
      .optional()
      .meta({ description: "More header fields by name (not those the other members set); a list gives a field several times" }),
    attachments: z.array(attachmentSchema).optional(),
    envelope: z
      .object({ from: address, to: addressList })
      .strict()
      .optional()
      .meta({ description: "The SMTP envelope, when it is not from, and to + cc + bcc; from \"\" is the null sender <>" }),
  })
  .strict()
  .meta({ id: "JsonMessage", description: "A message in nodemailer's terms; the server composes it (MIME, encodings) with nodemailer's MailComposer." });

/** A JSON message as a client writes it. */
export type JsonMessage = z.input<typeof jsonMessageSchema>;

/** What the composed message carries besides the members: the values the receiving MTA would add itself. */
export interface ComposeOptions {
  /** `<id@host>`; default one made by MailComposer. */
  messageId?: string;
  /** Default now. */
  date?: Date;
}

/** A JSON message that can be queued or relayed. */
export interface ReadableJsonMessage {
  ok: true;
  envelope: Envelope;
  /** The addresses of the header From: (one), for the sender checks of the API. */
  headerFrom: string[];
  /** The message, composed anew on each call: RFC 5322 with CRLF line ends. */
  compose(options?: ComposeOptions): Readable;
}

/**
 * Read a parsed JSON request body as a message: its envelope, its From: address and a way to
 * compose it; or the problem to answer. Nothing is composed until `compose` is called.
 */
export function readJsonMessage(json: unknown): ReadableJsonMessage | { ok: false; problem: ProblemDetails } {
  const parsed = jsonMessageSchema.safeParse(json);
  if (!parsed.success) return { ok: false, problem: schemaProblem(parsed.error.issues) };
  const message = parsed.data;
  try {
    for (const [name, value] of Object.entries(message.headers ?? {})) {
      if (COMPOSED_FIELDS.has(name.toLowerCase())) throw refusal("invalid-message", `header field ${name} is composed by the server; it cannot be given in headers`, `/headers/${pointerSegment(name)}`);
      if (Array.isArray(value) && value.length === 0) throw refusal("invalid-message", `header field ${name} has no value`, `/headers/${pointerSegment(name)}`);
    }
    const from = mailboxes(message.from, "/from");
    if (from.length !== 1) throw refusal("bad-address", "from must name exactly one address", "/from");
    for (const [member, value] of [["to", message.to], ["cc", message.cc], ["bcc", message.bcc], ["replyTo", message.replyTo]] as const) listOf(value, `/${member}`);
    const recipients = message.envelope ? listOf(message.envelope.to, "/envelope/to") : [...listOf(message.to, "/to"), ...listOf(message.cc, "/cc"), ...listOf(message.bcc, "/bcc")];
    const byMailbox = new Map<string, string>();
    for (const r of recipients) if (!byMailbox.has(mailboxKey(r))) byMailbox.set(mailboxKey(r), r);
    const unique = [...byMailbox.values()];
    if (unique.length === 0) throw refusal("no-recipients", message.envelope ? "envelope.to names no recipient" : "to, cc and bcc name no recipient", message.envelope ? "/envelope/to" : "/to");
    const sender = message.envelope ? envelopeSender(message.envelope.from) : from[0]!;
    const envelope: Envelope = {
      sender,
      recipients: unique.map((r) => ({ address: r })),
      // Addresses with non-ASCII local parts or domains need SMTPUTF8 from every hop.
      ...([sender, ...unique].some((a) => /[^\x00-\x7f]/.test(a)) ? { smtputf8: true } : {}),
    };
    return { ok: true, envelope, headerFrom: from, compose: (options = {}) => compose(message, options) };
  } catch (err) {
    if (err instanceof ProblemError) return { ok: false, problem: err.problem };
    throw err;
  }
}

/** A request body as a JSON message: `invalid-json` when it does not parse, else as readJsonMessage. */
export function readJsonMessageBody(body: Buffer): ReadableJsonMessage | { ok: false; problem: ProblemDetails } {
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch (err) {
    return { ok: false, problem: problemOf(MESSAGE_PROBLEMS, "invalid-json", `the body is not JSON: ${(err as Error).message}`) };
  }
  return readJsonMessage(json);
}

/** A reason to refuse the message, thrown while it is read. */
function refusal(name: MessageProblemName, detail: string, field: string): ProblemError {
  return new ProblemError(problemOf(MESSAGE_PROBLEMS, name, detail, field));
}

/** The envelope sender: one address, or the null sender (`""` or `<>`). */
function envelopeSender(text: string): string {
  if (/^\s*(<>)?\s*$/.test(text)) return "";
  const list = mailboxes(text, "/envelope/from");
  if (list.length !== 1) throw refusal("bad-address", "envelope.from must name one address, or be empty for the null sender", "/envelope/from");
  return list[0]!;
}

/** The addresses of an address member given as one string or a list of strings. */
function listOf(value: string | string[] | undefined, pointer: string): string[] {
  if (value === undefined) return [];
  return typeof value === "string" ? mailboxes(value, pointer) : value.flatMap((v, i) => mailboxes(v, `${pointer}/${i}`));
}

/** The mailbox addresses in `text` (`a@b`, `Name <a@b>`, comma lists); each must be one SMTP would take. */
function mailboxes(text: string, pointer: string): string[] {
  const found = addressparser(text, { flatten: true });
  if (found.length === 0) throw refusal("bad-address", `${pointer.slice(1)} names no address`, pointer);
  return found.map(({ address, name }) => {
    const parsed = parseAddress(address);
    // A source route would be taken apart differently by the next hop; the cloud refuses it too.
    if (!address || !parsed.ok || parsed.flaws.includes("source-route")) {
      throw refusal("bad-address", `${JSON.stringify(address || name)} in ${pointer.slice(1)} is not a mailbox address`, pointer);
    }
    return address;
  });
}

/** Recipients are the same when local parts match exactly and domains case-insensitively. */
function mailboxKey(address: string): string {
  const at = address.lastIndexOf("@");
  return address.slice(0, at) + address.slice(at).toLowerCase();
}

function compose(message: z.output<typeof jsonMessageSchema>, options: ComposeOptions): Readable {
  return new MailComposer({
    from: message.from,
    to: message.to,
    cc: message.cc,
    // MailComposer never writes Bcc: into the message; the addresses are in the envelope.
    bcc: message.bcc,
    replyTo: message.replyTo,
    subject: message.subject,
    text: message.text,
    html: message.html,
    headers: message.headers,
    attachments: message.attachments?.map((a) => ({ filename: a.filename, contentType: a.contentType, content: Buffer.from(a.content, "base64") })),
    messageId: options.messageId,
    date: options.date,
    // CRLF everywhere, text bodies included; the members are content, never a file name or a URL to read.
    newline: "windows",
    disableFileAccess: true,
    disableUrlAccess: true,
  })
    .compile()
    .createReadStream();
}

/** The problem of a JSON message the schema refused: header injection first, then unknown members, then the rest. */
function schemaProblem(issues: z.core.$ZodIssue[]): ProblemDetails {
  const at = (path: PropertyKey[]) => "/" + path.map((p) => pointerSegment(String(p))).join("/");
  const injected = issues.find(
    (i) => (i.code === "invalid_format" && i.format === "regex" && i.pattern === String(HEADER_SAFE)) || (i.code === "invalid_key" && !HEADER_SAFE.test(String(i.path.at(-1)))),
  );
  if (injected) {
    return problemOf(MESSAGE_PROBLEMS, "header-injection", `${at(injected.path)} contains CR, LF or NUL, which would start another header field`, at(injected.path));
  }
  const unknown = issues.find((i) => i.code === "unrecognized_keys");
  if (unknown?.code === "unrecognized_keys") {
    const path = [...unknown.path, unknown.keys[0]!];
    return problemOf(MESSAGE_PROBLEMS, "unknown-field", `${at(path)} is not a member of this message form`, at(path));
  }
  const first = issues[0]!;
  return problemOf(MESSAGE_PROBLEMS, "invalid-message", `${at(first.path)}: ${first.message}`, at(first.path));
}

/** Base64 (RFC 4648 section 4) with padding; line breaks and spaces between the characters are allowed. */
function isBase64(text: string): boolean {
  const compact = text.replace(/\s+/g, "");
  return compact.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(compact);
}

/** A JSON Pointer reference token (RFC 6901). */
function pointerSegment(name: string): string {
  return name.replace(/~/g, "~0").replace(/\//g, "~1");
}
