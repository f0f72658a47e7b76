/**
 * envelope-fields — the SMTP envelope as HTTP header fields: `Envelope-From` mirrors MAIL FROM
 * (`<a@example.net>; ret=hdrs; envid=…; smtputf8`), `Envelope-To` mirrors the RCPT TO list
 * (`<b@example.org>, <c@example.com>; notify=success,failure; orcpt=rfc822;c@example.com`).
 * Characters that would break the syntax, and non-ASCII, are percent-encoded.
 */
import type { DsnNotify, Envelope, EnvelopeRecipient } from "../envelope.js";

/** A malformed envelope field; the cloud answers 400. */
export class EnvelopeFieldError extends Error {}

const encode = (text: string) => encodeURIComponent(text).replace(/%40/g, "@").replace(/%2B/gi, "+").replace(/%3D/gi, "=").replace(/%2F/gi, "/");
const decode = (text: string) => {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new EnvelopeFieldError(`bad percent-encoding in ${JSON.stringify(text)}`);
  }
};

/** The `Envelope-From` value of an envelope. */
export function formatEnvelopeFrom(envelope: Envelope): string {
  const parts = [`<${encode(envelope.sender)}>`];
  if (envelope.ret) parts.push(`ret=${envelope.ret.toLowerCase()}`);
  if (envelope.envid) parts.push(`envid=${encode(envelope.envid)}`);
  if (envelope.smtputf8) parts.push("smtputf8");
  return parts.join("; ");
}

/** The `Envelope-To` value of a recipient list. */
export function formatEnvelopeTo(recipients: EnvelopeRecipient[]): string {
  return recipients
    .map((r) => {
      const parts = [`<${encode(r.address)}>`];
      if (r.notify) parts.push(`notify=${r.notify.join(",").toLowerCase()}`);
      if (r.orcpt) {
        const semi = r.orcpt.indexOf(";");
        parts.push(`orcpt=${r.orcpt.slice(0, semi)};${encode(r.orcpt.slice(semi + 1))}`);
      }
      return parts.join("; ");
    })
    .join(", ");
}

/** Read an `Envelope-From` value. */
export function parseEnvelopeFrom(value: string): Pick<Envelope, "sender" | "ret" | "envid" | "smtputf8"> {
  const [address, ...params] = value.split(";").map((s) => s.trim());
  const result: Pick<Envelope, "sender" | "ret" | "envid" | "smtputf8"> = { sender: bracketed(address ?? "") };
  for (const p of params) {
    const [key, v] = splitParam(p);
    if (key === "ret" && (v === "hdrs" || v === "full")) result.ret = v === "hdrs" ? "HDRS" : "FULL";
    else if (key === "envid" && v) result.envid = decode(v);
    else if (key === "smtputf8" && v === undefined) result.smtputf8 = true;
    else throw new EnvelopeFieldError(`Envelope-From: unknown or malformed parameter ${JSON.stringify(p)}`);
  }
  return result;
}

/** Read an `Envelope-To` value: at least one recipient. */
export function parseEnvelopeTo(value: string): EnvelopeRecipient[] {
  // Members start with "<"; commas elsewhere (notify=success,failure) belong to a parameter.
  const members = value.split(/,\s*(?=<)/).map((m) => m.trim());
  if (members.length === 0 || members[0] === "") throw new EnvelopeFieldError("Envelope-To names no recipient");
  return members.map((member) => {
    const [address, ...rest] = member.split(";").map((s) => s.trim());
    const recipient: EnvelopeRecipient = { address: bracketed(address ?? "") };
    if (recipient.address === "") throw new EnvelopeFieldError("Envelope-To: an empty recipient address");
    for (let i = 0; i < rest.length; i++) {
      const [key, v] = splitParam(rest[i]!);
      if (key === "notify" && v) {
        const list = v.toUpperCase().split(",");
        if (!list.every((n) => ["NEVER", "SUCCESS", "FAILURE", "DELAY"].includes(n)) || (list.includes("NEVER") && list.length > 1)) {
          throw new EnvelopeFieldError(`Envelope-To: bad notify=${v}`);
        }
        recipient.notify = list as DsnNotify[];
      } else if (key === "orcpt" && v && /^[a-z0-9-]+$/i.test(v) && i + 1 < rest.length) {
        // orcpt=rfc822;addr: the address type and the address are separated by ";" too.
        recipient.orcpt = `${v};${decode(rest[++i]!)}`;
      } else throw new EnvelopeFieldError(`Envelope-To: unknown or malformed parameter ${JSON.stringify(rest[i])}`);
    }
    return recipient;
  });
}

function bracketed(text: string): string {
  const m = /^<([^<>\s]*)>$/.exec(text);
  if (!m) throw new EnvelopeFieldError(`expected <address>, found ${JSON.stringify(text.slice(0, 100))}`);
  const address = decode(m[1]!);
  if (/[\x00-\x1f\x7f<>]/.test(address)) throw new EnvelopeFieldError("an address may not contain control characters or angle brackets");
  return address;
}

function splitParam(p: string): [string, string | undefined] {
  const eq = p.indexOf("=");
  return eq === -1 ? [p.toLowerCase(), undefined] : [p.slice(0, eq).toLowerCase(), p.slice(eq + 1)];
}
