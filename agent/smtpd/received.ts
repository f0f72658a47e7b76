/**
 * received — the Received: header smtpd prepends to every message (RFC 5321 section 4.4),
 * with the TLS and AUTH details Postfix adds, and the protocol keywords of RFC 3848.
 */
import { rfc5322Date } from "../../shared/rfc5322-date.js";

/** What the Received: header tells about one SMTP session. */
export interface ReceivedFields {
  helo: string;
  clientHostname: string;
  clientAddress: string;
  hostname: string;
  queueId: string;
  esmtp: boolean;
  tls?: { protocol: string; cipher: string; bits?: number };
  saslUser?: string;
  /** The recipient, named only when there is exactly one (as Postfix does). */
  recipient?: string;
  date: Date;
}

/** The folded header, without the final CRLF. */
export function receivedHeader(f: ReceivedFields): string {
  const address = f.clientAddress.includes(":") ? `IPv6:${f.clientAddress}` : f.clientAddress;
  const proto = (f.esmtp ? "ESMTP" : "SMTP") + (f.tls ? "S" : "") + (f.saslUser ? "A" : "");
  const lines = [`Received: from ${clean(f.helo) || "unknown"} (${f.clientHostname} [${address}])`];
  if (f.tls) lines.push(`\t(using ${f.tls.protocol} with cipher ${f.tls.cipher}${f.tls.bits ? ` (${f.tls.bits}/${f.tls.bits} bits)` : ""})`);
  // Postfix leaves the account name out by default (smtpd_sasl_authenticated_header=no): it helps spammers target accounts.
  lines.push(`\tby ${f.hostname} (homerelay) with ${proto} id ${f.queueId}`);
  lines.push(f.recipient ? `\tfor <${clean(f.recipient)}>; ${rfc5322Date(f.date)}` : `\t; ${rfc5322Date(f.date)}`);
  return lines.join("\r\n");
}

/** Client-supplied text in a header: printable ASCII or UTF-8, no parentheses that would end a comment. */
function clean(text: string): string {
  return text.replace(/[\x00-\x1f\x7f()\\]/g, "?").slice(0, 255);
}
