/**
 * address — one reading of an envelope address for everything that decides about it: the relay
 * check at RCPT, the local recipient table and the router. An address that could be read two ways
 * (source routes, `%` hacks, bang paths, an `@` hidden in quotes, address literals) is flagged, so
 * the relay check can refuse what the router might otherwise deliver elsewhere (RFC 2505).
 */

/** An address split into local part and domain; the domain is lower case. */
export interface Mailbox {
  local: string;
  domain: string;
}

/** Why an address is suspect as a relay trick, or malformed. */
export type AddressFlaw = "syntax" | "source-route" | "percent-hack" | "bang-path" | "hidden-at" | "address-literal";

/** The result of reading an address: the mailbox, plus flaws that matter to the relay check. */
export type ParsedAddress = { ok: true; mailbox: Mailbox; flaws: AddressFlaw[] } | { ok: false; flaw: "syntax" };

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
// Internationalized labels (SMTPUTF8): any non-ASCII letters, but never space, control or syntax characters.
const U_LABEL = /^(?!-)[^\s\x00-\x2c./:;<>@[\\\]^`{|}~\x7f]{1,63}(?<!-)$/u;

/**
 * Read an envelope address as given in MAIL FROM / RCPT TO (without angle brackets).
 * A source route (`@a,@b:user@c`) is removed, as RFC 5321 section 3.6.1 asks, and flagged.
 */
export function parseAddress(address: string): ParsedAddress {
  const flaws: AddressFlaw[] = [];
  let rest = address;
  if (rest.startsWith("@")) {
    const colon = rest.indexOf(":");
    if (colon === -1) return { ok: false, flaw: "syntax" };
    flaws.push("source-route");
    rest = rest.slice(colon + 1);
  }
  if (/[\x00-\x1f\x7f]/.test(rest) || rest.length > 254) return { ok: false, flaw: "syntax" };
  const at = rest.lastIndexOf("@");
  if (at <= 0 || at === rest.length - 1) return { ok: false, flaw: "syntax" };
  const local = rest.slice(0, at);
  const domain = rest.slice(at + 1).toLowerCase();

  if (domain.startsWith("[")) {
    if (!/^\[(ipv6:[0-9a-f:.]+|\d{1,3}(\.\d{1,3}){3})\]$/.test(domain)) return { ok: false, flaw: "syntax" };
    flaws.push("address-literal");
  } else {
    // A trailing dot would make "example.net." a different string from "example.net" for a check but not for DNS.
    const labels = domain.split(".");
    if (!labels.every((l) => LABEL.test(l) || (/[^\x00-\x7f]/.test(l) && U_LABEL.test(l)))) return { ok: false, flaw: "syntax" };
  }

  if (local.startsWith('"')) {
    if (!/^"([^"\\]|\\.)*"$/.test(local) || local.length > 66) return { ok: false, flaw: "syntax" };
    if (/[@%!]/.test(local)) flaws.push("hidden-at");
    // "alice"@example.net is alice@example.net (RFC 5321 section 4.1.2): quotes that protect nothing go.
    const inner = local.slice(1, -1);
    if (/^[A-Za-z0-9!#$&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$&'*+/=?^_`{|}~-]+)*$/.test(inner)) return { ok: true, mailbox: { local: inner, domain }, flaws };
  } else {
    if (local.length > 64 || !/^[^\s"(),:;<>@[\\\]]+$/.test(local) || local.startsWith(".") || local.endsWith(".") || local.includes("..")) {
      return { ok: false, flaw: "syntax" };
    }
    if (local.includes("%")) flaws.push("percent-hack");
    if (local.includes("!")) flaws.push("bang-path");
  }
  return { ok: true, mailbox: { local, domain }, flaws };
}

/** `local@domain` of a mailbox, as the router and logs print it. */
export function formatMailbox(m: Mailbox): string {
  return `${m.local}@${m.domain}`;
}

/**
 * Does `address` match a sender pattern: `user@domain`, `*@domain`, `user@*` or `*`?
 * Case-insensitive, as mail administrators expect of address tables.
 */
export function senderMatches(address: string, pattern: string): boolean {
  if (pattern === "*") return true;
  const a = address.toLowerCase();
  const p = pattern.toLowerCase();
  const at = a.lastIndexOf("@");
  const pat = p.lastIndexOf("@");
  if (at === -1 || pat === -1) return a === p;
  const [local, domain] = [a.slice(0, at), a.slice(at + 1)];
  const [plocal, pdomain] = [p.slice(0, pat), p.slice(pat + 1)];
  return (plocal === "*" || plocal === local) && (pdomain === "*" || pdomain === domain);
}
