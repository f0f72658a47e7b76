/**
 * dsn — the agent's delivery status notifications (Postfix bounce(8)): non-delivery reports,
 * delay warnings and success notices as RFC 3464 `multipart/report` messages from
 * MAILER-DAEMON, in Postfix's wording, honouring the RFC 3461 parameters given at intake
 * (NOTIFY decides who gets one, RET how much of the message comes back, ENVID and ORCPT are
 * echoed). A DSN goes out with the null sender, and none is ever made for a null sender.
 */
import MimeNode from "nodemailer/lib/mime-node";
import { foldLines } from "nodemailer/lib/mime-funcs";
import type { DsnNotify } from "../../shared/envelope.js";
import { rfc5322Date } from "../../shared/rfc5322-date.js";

/** The three kinds of notice: non-delivery, delay warning, success (RFC 3461 NOTIFY values). */
export type DsnKind = "failure" | "delay" | "success";

/** One recipient reported on in a DSN: a per-recipient block of the delivery-status part. */
export interface DsnRecipient {
  /** The final recipient, reported as `Final-Recipient: rfc822; <address>`. */
  address: string;
  /** The ORCPT as stored at intake (`rfc822;bob@example.org`, xtext-decoded): `Original-Recipient`. */
  orcpt?: string;
  /** RFC 3464 action: `failed` in failure DSNs, `delayed` in delay DSNs, the others in success DSNs. */
  action: "failed" | "delayed" | "delivered" | "relayed" | "expanded";
  /** RFC 3463 enhanced status code whose class matches the action (5.x.x failed, 4.x.x delayed, 2.x.x otherwise). */
  status: string;
  /** The MTA that gave the diagnostic, as `dns; mx.example.org`: `Remote-MTA`. */
  remoteMta?: string;
  /**
   * The server's reply (`550 5.1.1 <bob@example.org>: User unknown`), reported as
   * `Diagnostic-Code: smtp; …`; any other text is our own reason (`connect to …: Connection
   * refused`), reported as `Diagnostic-Code: X-Homerelay; …`. A multi-line reply is joined.
   */
  diagnostic?: string;
  lastAttempt?: Date;
  /** For a delayed recipient: when the agent gives up on it. */
  willRetryUntil?: Date;
}

/** Everything a DSN is made of. */
export interface DsnRequest {
  kind: DsnKind;
  /** Our hostname: `Reporting-MTA: dns; <hostname>` and `From: MAILER-DAEMON@<hostname>`. */
  hostname: string;
  /** The queue ID of the original message: `X-Homerelay-Queue-ID`. */
  queueId: string;
  /** The original envelope sender, to whom the DSN goes; never the null sender. */
  sender: string;
  /** When the original message was queued: `Arrival-Date`. */
  arrival: Date;
  /** RFC 3461 ENVID given at intake (xtext-decoded): `Original-Envelope-Id`. */
  envid?: string;
  /**
   * RFC 3461 RET: the whole message (`message/rfc822`) or only its header (`text/rfc822-headers`).
   * It applies to failure DSNs; delay and success DSNs return only the header (RFC 3461 section 4.3).
   */
  ret: "FULL" | "HDRS";
  recipients: DsnRecipient[];
  /** The queued message (CRLF line ends); read only as far as needed, and released after. */
  original: NodeJS.ReadableStream;
  /** The DSN's own Message-ID, e.g. `<QUEUEID.dsn@hostname>`. */
  messageId: string;
  /** The DSN's Date. */
  date: Date;
  /** Bytes of the original that may come back (Postfix bounce_size_limit, default 50000); a larger message comes back as its header only. */
  maxReturnedSize?: number;
}

/** Postfix's bounce_size_limit default. */
const DEFAULT_MAX_RETURNED_SIZE = 50_000;

const SUBJECTS: Record<DsnKind, string> = {
  failure: "Undelivered Mail Returned to Sender",
  delay: "Delayed Mail (still being retried)",
  success: "Successful Mail Delivery Report",
};

const ACTIONS: Record<DsnKind, readonly DsnRecipient["action"][]> = {
  failure: ["failed"],
  delay: ["delayed"],
  success: ["delivered", "relayed", "expanded"],
};

const NOTIFY_OF: Record<DsnKind, DsnNotify> = { failure: "FAILURE", delay: "DELAY", success: "SUCCESS" };

/**
 * Whether a recipient with these NOTIFY values gets a DSN of this kind (RFC 3461 section 4.1).
 * Without NOTIFY, Postfix's default applies: failures and delays are reported, successes not.
 * NEVER asks for none.
 */
export function wantsDsn(kind: DsnKind, notify: DsnNotify[] | undefined): boolean {
  if (notify === undefined || notify.length === 0) return kind !== "success";
  if (notify.includes("NEVER")) return false;
  return notify.includes(NOTIFY_OF[kind]);
}

/** Whether `sender` is the null reverse-path `<>` of bounces, to which no DSN may ever go. */
export function isNullSender(sender: string): boolean {
  const s = sender.trim();
  return s === "" || s === "<>";
}

/**
 * The DSN for `req` as a complete RFC 5322 message with CRLF line ends: a `multipart/report;
 * report-type=delivery-status` of the human-readable notice, the `message/delivery-status`
 * report and the returned message or its header. Throws a TypeError when the request cannot
 * make a valid DSN: a null sender (never bounce a bounce), no recipients, a malformed status
 * code, or an action that does not belong in this kind of DSN.
 */
export async function composeDsn(req: DsnRequest): Promise<Buffer> {
  check(req);
  const returned = await readOriginal(req.original, {
    whole: req.kind === "failure" && req.ret === "FULL",
    limit: req.maxReturnedSize ?? DEFAULT_MAX_RETURNED_SIZE,
  });

  const dsn = new MimeNode("multipart/report; report-type=delivery-status");
  dsn.setHeader({
    From: `MAILER-DAEMON@${req.hostname} (Mail Delivery System)`,
    To: req.sender,
    Subject: SUBJECTS[req.kind],
    Date: rfc5322Date(req.date),
    "Message-ID": req.messageId,
    "Auto-Submitted": "auto-replied",
  });

  dsn.createChild("text/plain").setHeader("Content-Description", "Notification").setContent(notice(req));

  const report = deliveryStatus(req);
  // RFC 6533: a report naming UTF-8 addresses is a message/global-delivery-status, sent as 8bit.
  const utf8 = /[^\x00-\x7f]/.test(report);
  const reportPart = dsn.createChild(utf8 ? "message/global-delivery-status" : "message/delivery-status");
  reportPart.setHeader("Content-Description", "Delivery report");
  if (utf8) reportPart.setHeader("Content-Transfer-Encoding", "8bit");
  reportPart.setContent(Buffer.from(report, "utf8"));

  const what = { failure: "Undelivered Message", delay: "Delayed Message", success: "Delivered Message" }[req.kind];
  if (returned.whole) {
    const message = dsn.createChild("message/rfc822").setHeader("Content-Description", what);
    // message/rfc822 allows no base64 or quoted-printable: an 8-bit original goes back as 8bit.
    if (returned.whole.some((byte) => byte > 0x7f)) message.setHeader("Content-Transfer-Encoding", "8bit");
    message.setContent(returned.whole);
  } else {
    // As text, the header gets whatever transfer encoding nodemailer finds it needs.
    const ascii = !returned.header.some((byte) => byte > 0x7f);
    dsn
      .createChild("text/rfc822-headers")
      .setHeader("Content-Description", `${what} Headers`)
      .setContent(ascii ? returned.header.toString("latin1") : returned.header);
  }
  return dsn.build();
}

/** The request errors composeDsn refuses. */
function check(req: DsnRequest): void {
  if (isNullSender(req.sender)) throw new TypeError(`no DSN for queue ID ${req.queueId}: the sender is the null sender`);
  if (req.recipients.length === 0) throw new TypeError(`no DSN for queue ID ${req.queueId}: no recipients to report`);
  for (const r of req.recipients) {
    if (!ACTIONS[req.kind].includes(r.action)) throw new TypeError(`a ${req.kind} DSN cannot report action "${r.action}" for <${r.address}>`);
    const expectedClass = r.action === "failed" ? "5" : r.action === "delayed" ? "4" : "2";
    if (!/^[245]\.\d{1,3}\.\d{1,3}$/.test(r.status) || r.status[0] !== expectedClass) {
      throw new TypeError(`status "${r.status}" of <${r.address}> is no ${expectedClass}.x.x enhanced status code`);
    }
  }
}

/** What readOriginal brings back: always the header block, and the whole message when asked and small enough. */
interface ReturnedOriginal {
  /** The header fields, each with its CRLF, without the blank line that ends them. */
  header: Buffer;
  whole?: Buffer;
}

/**
 * Reads the original up to the end of its header block, or to its end when the whole message is
 * wanted and it is no larger than `limit` bytes. The stream is released as soon as reading stops.
 */
async function readOriginal(original: NodeJS.ReadableStream, want: { whole: boolean; limit: number }): Promise<ReturnedOriginal> {
  const chunks: Buffer[] = [];
  let size = 0;
  let complete = true;
  // The header ends at the first empty line. A CRLF put before the message makes a message that
  // starts with its empty line (no header fields) end its header at offset 0 like any other.
  let seam = Buffer.from("\r\n");
  let seamStart = -2;
  let headerEnd = -1;
  for await (const piece of original) {
    const chunk = typeof piece === "string" ? Buffer.from(piece, "utf8") : piece;
    chunks.push(chunk);
    size += chunk.length;
    if (headerEnd < 0) {
      const joined = Buffer.concat([seam, chunk]);
      const blankLine = joined.indexOf("\r\n\r\n");
      if (blankLine >= 0) {
        headerEnd = seamStart + blankLine + 2;
      } else {
        seam = joined.subarray(-3);
        seamStart += joined.length - seam.length;
      }
    }
    if (headerEnd >= 0 && (!want.whole || size > want.limit)) {
      complete = false;
      break; // leaving the loop destroys the stream
    }
  }
  const read = Buffer.concat(chunks, size);
  const header = read.subarray(0, headerEnd >= 0 ? headerEnd : size);
  return want.whole && complete && size <= want.limit ? { header, whole: read } : { header };
}

/** The message/delivery-status body: the per-message fields, then one block per recipient. */
function deliveryStatus(req: DsnRequest): string {
  const perMessage = [
    ...(req.envid !== undefined ? [`Original-Envelope-Id: ${oneLine(req.envid)}`] : []),
    `Reporting-MTA: dns; ${oneLine(req.hostname)}`,
    `Arrival-Date: ${rfc5322Date(req.arrival)}`,
    `X-Homerelay-Queue-ID: ${oneLine(req.queueId)}`,
    `X-Homerelay-Sender: ${addressField(req.sender)}`,
  ];
  const blocks = [perMessage, ...req.recipients.map(perRecipient)];
  return blocks.map((fields) => fields.map((field) => foldLines(field, 76)).join("\r\n") + "\r\n").join("\r\n");
}

/** The per-recipient fields of `r`, in RFC 3464 order. */
function perRecipient(r: DsnRecipient): string[] {
  const diagnostic = r.diagnostic !== undefined ? oneLine(r.diagnostic) : undefined;
  return [
    ...(r.orcpt !== undefined ? [`Original-Recipient: ${r.orcpt.includes(";") ? oneLine(r.orcpt) : addressField(r.orcpt)}`] : []),
    `Final-Recipient: ${addressField(r.address)}`,
    `Action: ${r.action}`,
    `Status: ${r.status}`,
    ...(r.remoteMta !== undefined ? [`Remote-MTA: ${oneLine(r.remoteMta)}`] : []),
    ...(diagnostic !== undefined ? [`Diagnostic-Code: ${isSmtpReply(diagnostic) ? "smtp" : "X-Homerelay"}; ${diagnostic}`] : []),
    ...(r.lastAttempt !== undefined ? [`Last-Attempt-Date: ${rfc5322Date(r.lastAttempt)}`] : []),
    ...(r.willRetryUntil !== undefined ? [`Will-Retry-Until: ${rfc5322Date(r.willRetryUntil)}`] : []),
  ];
}

/** `rfc822; addr`, or `utf-8; addr` for an address that is not ASCII (RFC 6533 section 3). */
function addressField(address: string): string {
  return `${/[^\x00-\x7f]/.test(address) ? "utf-8" : "rfc822"}; ${oneLine(address)}`;
}

/** The human-readable part, in the words of Postfix's bounce templates. */
function notice(req: DsnRequest): string {
  const paragraphs = [`This is the mail system at host ${req.hostname}.`];
  if (req.kind === "failure") {
    paragraphs.push(
      "I'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients. It's attached below.",
      ...assistance(),
    );
  } else if (req.kind === "delay") {
    const bar = "#".repeat(68);
    paragraphs.push(`${bar}\n# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n${bar}`, delayed(req), ...assistance());
  } else if (req.recipients.some((r) => r.action === "relayed")) {
    paragraphs.push(
      "Your message was successfully delivered to the destination(s)\n" +
        'listed below. Where it says "relayed", it was delivered to a mail\n' +
        "system that does not support delivery status notifications, so you\n" +
        "will not be told of its final delivery; you may still receive\n" +
        "notifications of mail delivery errors from other systems.",
    );
  } else {
    paragraphs.push(
      "Your message was successfully delivered to the destination(s)\n" +
        "listed below. If the message was delivered to mailbox you will\n" +
        "receive no further notifications. Otherwise you may still receive\n" +
        "notifications of mail delivery errors from other systems.",
    );
  }
  paragraphs.push(`${" ".repeat(19)}The mail system`, req.recipients.map((r) => wrap(recipientLine(r)).join("\n")).join("\n\n"));
  return `${paragraphs.join("\n\n")}\n`.replace(/\n/g, "\r\n");
}

/** Postfix's closing paragraphs of a problem report. */
function assistance(): string[] {
  return [
    "For further assistance, please send mail to postmaster.",
    "If you do so, please include this problem report. You can\ndelete your own text from the attached returned message.",
  ];
}

/** How long the message has waited, and until when it is retried. */
function delayed(req: DsnRequest): string {
  const waited = `Your message could not be delivered for ${amount((req.date.getTime() - req.arrival.getTime()) / 3_600_000, "hour")}.`;
  const until = Math.max(...req.recipients.map((r) => r.willRetryUntil?.getTime() ?? -Infinity));
  if (until === -Infinity) return waited;
  return `${waited}\nIt will be retried until it is ${amount((until - req.arrival.getTime()) / 86_400_000, "day")} old.`;
}

/** `4 hours`, `1.5 days`, `1 day`: one decimal at most. */
function amount(value: number, unit: string): string {
  const rounded = Math.round(Math.max(0, value) * 10) / 10;
  return `${rounded} ${unit}${rounded === 1 ? "" : "s"}`;
}

/** One recipient in the notice: `<bob@example.org>: host mx.example.org said: 550 …`. */
function recipientLine(r: DsnRecipient): string {
  const orcpt = r.orcpt === undefined ? undefined : oneLine(r.orcpt.slice(r.orcpt.indexOf(";") + 1).trim());
  const expanded = orcpt && orcpt.toLowerCase() !== r.address.toLowerCase() ? ` (expanded from <${orcpt}>)` : "";
  const mta = r.remoteMta === undefined ? undefined : oneLine(r.remoteMta.slice(r.remoteMta.indexOf(";") + 1).trim());
  const diagnostic = r.diagnostic === undefined ? undefined : oneLine(r.diagnostic);
  return `<${oneLine(r.address)}>${expanded}: ${outcome(r.action, r.status, mta, diagnostic)}`;
}

/** What happened to a recipient, in Postfix's words. */
function outcome(action: DsnRecipient["action"], status: string, mta: string | undefined, diagnostic: string | undefined): string {
  const said = diagnostic === undefined ? "" : `: ${diagnostic}`;
  switch (action) {
    case "failed":
    case "delayed":
      if (mta && diagnostic !== undefined && isSmtpReply(diagnostic)) return `host ${mta} said: ${diagnostic}`;
      return diagnostic ?? `delivery ${action === "failed" ? "failed" : "temporarily failed"} with status ${status}`;
    case "delivered":
      return mta ? `delivery via ${mta}${said}` : (diagnostic ?? "delivered");
    case "relayed":
      return mta ? `relayed via ${mta}${said}` : `relayed${said}`;
    case "expanded":
      return diagnostic ?? "alias expanded";
  }
}

/** Whether `text` is an SMTP reply (`550 5.1.1 …`, `451-…`) rather than a reason of our own. */
function isSmtpReply(text: string): boolean {
  return /^[245]\d\d(?:[ -]|$)/.test(text);
}

/** `text` on one line: line breaks (as in a multi-line reply) and other controls become single spaces. */
function oneLine(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]+/g, " ").replace(/ {2,}/g, " ").trim();
}

/** `text` broken before 76 columns at spaces, continuation lines indented by four, as Postfix does. */
function wrap(text: string): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > 76) {
      lines.push(line);
      line = `    ${word}`;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  lines.push(line);
  return lines;
}
