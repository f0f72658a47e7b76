/**
 * spf-record — what an SPF record (RFC 7208) authorises, as far as doctor follows it: `ip4`, `ip6`,
 * `a`, `mx`, and one level of `include:` and `redirect=` (their own ip4/ip6/a/mx terms). Anything
 * deeper (nested includes, `exists`, `ptr`, macros) is named as unchecked, never guessed at.
 * Not an SPF evaluator: it answers "does this record cover that address, and by which term?".
 */
import ipaddr from "ipaddr.js";
import type { MailResolver } from "../../shared/dns/resolver.js";
import { dnsAnswer, recordsStartingWith } from "./dns-answer.js";

/** One mechanism of a record: `+ip4:192.0.2.0/24`, `~all`, `include:_spf.example.net`. */
export interface SpfTerm {
  qualifier: "+" | "-" | "~" | "?";
  mechanism: string;
  /** The text after `:` (a domain or address), or null. */
  value: string | null;
  /** The prefix lengths after `/` (`a/24`, `a:h//64`), when given. */
  prefix4: number | null;
  prefix6: number | null;
  /** The term as written. */
  text: string;
}

/** A parsed record. */
export interface SpfRecord {
  terms: SpfTerm[];
  redirect: string | null;
}

/** Whether a record covers an address: by which term (`a:home.example.net`), or what was not followed. */
export type SpfCoverage = { covered: true; by: string } | { covered: false; failedBy: string | null; unchecked: string[] };

const MECHANISMS = new Set(["all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"]);

/** Parse the text of a `v=spf1` record; throws with the offending term when it is not one. */
export function parseSpf(text: string): SpfRecord {
  const [version, ...rest] = text.trim().split(/\s+/);
  if (version?.toLowerCase() !== "v=spf1") throw new Error(`not an SPF record: ${text.slice(0, 60)}`);
  const terms: SpfTerm[] = [];
  let redirect: string | null = null;
  for (const word of rest) {
    const modifier = /^([a-z][a-z0-9_.-]*)=(.*)$/i.exec(word);
    if (modifier) {
      if (modifier[1]!.toLowerCase() === "redirect") redirect = modifier[2]!;
      continue;
    }
    const m = /^([+\-~?]?)([a-z0-9]+)(?::([^/]+))?(?:\/(\d+))?(?:\/\/(\d+))?$/i.exec(word);
    if (!m || !MECHANISMS.has(m[2]!.toLowerCase())) throw new Error(`unknown SPF term "${word}"`);
    const mechanism = m[2]!.toLowerCase();
    const value = m[3] ?? null;
    // ip6:2001:db8::/32 — the colon-split above takes the address; ip4/ip6 prefixes are the address's own.
    const first = m[4] === undefined ? null : Number(m[4]);
    terms.push({
      qualifier: (m[1] || "+") as SpfTerm["qualifier"],
      mechanism,
      value,
      prefix4: mechanism === "ip6" ? null : first,
      prefix6: mechanism === "ip6" ? first : m[5] === undefined ? null : Number(m[5]),
      text: word,
    });
  }
  return { terms, redirect };
}

/** The single `v=spf1` record of `domain`: the record, none, an `error` (several, or one that does not parse), or a lookup that `failed`. */
export async function fetchSpf(
  resolver: MailResolver,
  domain: string,
): Promise<{ kind: "record"; text: string; record: SpfRecord } | { kind: "none" } | { kind: "error"; reason: string } | { kind: "failed"; reason: string }> {
  const answer = await dnsAnswer(resolver.resolveTxt(domain));
  if (answer.kind === "failed") return { kind: "failed", reason: `the SPF record of ${domain} could not be looked up (${answer.code})` };
  const records = answer.kind === "found" ? recordsStartingWith(answer.value, "v=spf1") : [];
  if (records.length === 0) return { kind: "none" };
  if (records.length > 1) return { kind: "error", reason: `${domain} has ${records.length} SPF records; receivers treat that as a permanent error (RFC 7208 4.5)` };
  try {
    return { kind: "record", text: records[0]!, record: parseSpf(records[0]!) };
  } catch (err) {
    return { kind: "error", reason: `the SPF record of ${domain} does not parse: ${(err as Error).message}` };
  }
}

/** Does `record` (of `domain`) authorise `address`? The first matching term decides, as in SPF. */
export async function spfCovers(resolver: MailResolver, domain: string, record: SpfRecord, address: string): Promise<SpfCoverage> {
  const unchecked: string[] = [];
  const decide = (term: SpfTerm, by: string): SpfCoverage => (term.qualifier === "+" ? { covered: true, by } : { covered: false, failedBy: by, unchecked });
  for (const term of record.terms) {
    if (term.mechanism === "all") return decide(term, term.text);
    if (term.mechanism === "include") {
      const included = term.value === null ? null : await fetchSpf(resolver, term.value);
      if (included?.kind !== "record") {
        unchecked.push(`${term.text} (${included === null || included.kind === "none" ? "no SPF record there" : included.reason})`);
        continue;
      }
      // An include matches when the included record passes; only its own address terms are followed.
      const inner = await directMatch(resolver, term.value!, included.record, address, unchecked, term.text);
      if (inner !== null && inner.qualifier === "+") return decide(term, `${term.text} (its ${inner.text})`);
      continue;
    }
    const matched = await termMatches(resolver, domain, term, address);
    if (matched === "unchecked") unchecked.push(term.text);
    else if (matched) return decide(term, term.text);
  }
  if (record.redirect !== null) {
    const target = await fetchSpf(resolver, record.redirect);
    if (target.kind === "record") {
      const inner = await directMatch(resolver, record.redirect, target.record, address, unchecked, `redirect=${record.redirect}`);
      if (inner !== null) return inner.qualifier === "+" ? { covered: true, by: `redirect=${record.redirect} (its ${inner.text})` } : { covered: false, failedBy: `redirect=${record.redirect} (its ${inner.text})`, unchecked };
    } else unchecked.push(`redirect=${record.redirect}`);
  }
  return { covered: false, failedBy: null, unchecked };
}

/** The first term of an included record that matches by itself (its own includes are noted as unchecked). */
async function directMatch(resolver: MailResolver, domain: string, record: SpfRecord, address: string, unchecked: string[], via: string): Promise<SpfTerm | null> {
  for (const term of record.terms) {
    if (term.mechanism === "include") {
      unchecked.push(`${term.text} inside ${via}`);
      continue;
    }
    if (term.mechanism === "all") return null;
    const matched = await termMatches(resolver, domain, term, address);
    if (matched === "unchecked") unchecked.push(`${term.text} inside ${via}`);
    else if (matched) return term;
  }
  return null;
}

/** Whether one address term matches; `unchecked` for the kinds doctor does not evaluate. */
async function termMatches(resolver: MailResolver, domain: string, term: SpfTerm, address: string): Promise<boolean | "unchecked"> {
  if (term.value?.includes("%")) return "unchecked";
  const ip = ipaddr.parse(address);
  switch (term.mechanism) {
    case "ip4":
    case "ip6": {
      if (term.value === null || !ipaddr.isValid(term.value)) return false;
      const range = ipaddr.parse(term.value);
      if (range.kind() !== ip.kind()) return false;
      const prefix = (range.kind() === "ipv4" ? term.prefix4 : term.prefix6) ?? (range.kind() === "ipv4" ? 32 : 128);
      return ip.match(range, prefix);
    }
    case "a":
      return inAny(await hostAddresses(resolver, [term.value ?? domain]), ip, term);
    case "mx": {
      const mx = await resolver.resolveMx(term.value ?? domain);
      // RFC 7208 4.6.4: at most ten MX names are looked at.
      return mx.kind === "mx" && inAny(await hostAddresses(resolver, mx.hosts.slice(0, 10).map((h) => h.exchange)), ip, term);
    }
    default:
      return "unchecked";
  }
}

/** The addresses of `hosts`, those that resolve. */
async function hostAddresses(resolver: MailResolver, hosts: string[]): Promise<(ipaddr.IPv4 | ipaddr.IPv6)[]> {
  const found = await Promise.all(hosts.map((h) => resolver.resolveAddresses(h, "any")));
  return found.flatMap((f) => (f.kind === "ok" ? f.addresses.map((a) => ipaddr.parse(a)) : []));
}

/** `ip` lies in one of `addresses`, widened by the term's prefix lengths (`a/24`). */
function inAny(addresses: (ipaddr.IPv4 | ipaddr.IPv6)[], ip: ipaddr.IPv4 | ipaddr.IPv6, term: SpfTerm): boolean {
  return addresses.some((a) => a.kind() === ip.kind() && ip.match(a, (a.kind() === "ipv4" ? term.prefix4 : term.prefix6) ?? (a.kind() === "ipv4" ? 32 : 128)));
}
