/**
 * dkim-record — the DNS side of a DKIM key (RFC 6376 section 3.6): the `S._domainkey.D` TXT record
 * that publishes its public key, as `homerelay dkim keygen` prints it and a check compares it.
 */
import type { KeyObject } from "node:crypto";

/** Longest character-string in a TXT record (RFC 1035 section 3.3): longer values are split. */
const TXT_STRING_OCTETS = 255;

const LABEL = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
const DNS_NAME = new RegExp(`^(?=.{1,253}$)${LABEL}(\\.${LABEL})*$`, "i");

/** A name of letter-digit-hyphen labels, as DKIM selectors and signing domains are (RFC 6376 section 3.1). */
export function isDnsName(name: string): boolean {
  return DNS_NAME.test(name);
}

/** The owner name of a key's record: `home._domainkey.example.net`. */
export function dkimRecordName(selector: string, domain: string): string {
  return `${selector}._domainkey.${domain}`;
}

/** The record's text for an RSA public key: `v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>`. */
export function dkimRecordText(publicKey: KeyObject): string {
  return `v=DKIM1; k=rsa; p=${publicKey.export({ type: "spki", format: "der" }).toString("base64")}`;
}

/** The record's text cut into the character-strings of one TXT record; receivers join them without spaces (RFC 6376 section 3.6.2.2). */
export function txtStrings(text: string): string[] {
  const strings: string[] = [];
  for (let at = 0; at < text.length; at += TXT_STRING_OCTETS) strings.push(text.slice(at, at + TXT_STRING_OCTETS));
  return strings;
}
