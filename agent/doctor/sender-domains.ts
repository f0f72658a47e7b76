/**
 * sender-domains — the DNS of each domain this box sends as, as receivers read it: an MX that
 * brings bounces back here, SPF covering the home address (and naming a way for the cloud path),
 * a DKIM key under the selector in use, and a DMARC policy that the mail actually passes.
 */
import { createPublicKey } from "node:crypto";
import type { MailResolver } from "../../shared/dns/resolver.js";
import { RESOLVER_FIX, fail, ok, warn, type Check } from "./check.js";
import { dkimRecordName } from "../dkim/dkim-record.js";
import { dnsAnswer, recordsStartingWith } from "./dns-answer.js";
import { fetchSpf, spfCovers } from "./spf-record.js";

/** One sender domain and what it is checked against. */
export interface SenderDomainSubject {
  resolver: MailResolver;
  domain: string;
  /** The public address, or null when it is not known. */
  address: string | null;
  /** The HELO name, which MX records may name. */
  hostname: string;
  /** Some mail goes direct to MX, from the home address. */
  direct: boolean;
  /** Some mail goes through the cloud, whose onward relay sends from other addresses. */
  cloud: boolean;
  /**
   * The DKIM key to look for: its selector, its signing domain (this domain or a parent whose key
   * signs for it), and the base64 public key the record should carry (null: any key).
   */
  dkim: { selector: string; domain: string; publicKey: string | null } | null;
}

/** MX, SPF, DKIM and DMARC of one domain. */
export async function senderDomainChecks(s: SenderDomainSubject): Promise<Check[]> {
  const [mx, spf, dkim] = await Promise.all([mxCheck(s), spfCheck(s), dkimCheck(s)]);
  const dmarc = await dmarcCheck(s, { spf: spf.aligned, dkim: dkim.published });
  return [mx, spf.check, dkim.check, dmarc];
}

/** The domain's MX reaches this box, so bounces and replies to its senders come back. */
async function mxCheck(s: SenderDomainSubject): Promise<Check> {
  const { resolver, domain, address, hostname } = s;
  const name = `mx:${domain}`;
  const fix = `point the MX of ${domain} at ${hostname} (${domain}. MX 10 ${hostname}.), so that bounces come back here; if another server takes ${domain}'s mail on purpose, make sure it accepts them`;
  const mx = await resolver.resolveMx(domain);
  if (mx.kind === "temporary") return warn(name, `the MX of ${domain} could not be looked up (${mx.reason})`, RESOLVER_FIX);
  if (mx.kind === "nxdomain") return fail(name, `${domain} has no MX and no address (${mx.reason}): mail to its senders, bounces included, cannot be delivered`, fix);
  if (mx.kind === "null-mx") return fail(name, `${domain} publishes a null MX (it takes no mail): bounces to its senders are lost, and receivers may refuse mail from it`, fix);
  const hosts = mx.hosts.slice(0, 10);
  const found = await Promise.all(hosts.map(async (h) => ({ host: h, lookup: await resolver.resolveAddresses(h.exchange, "any") })));
  const described = found.map(({ host, lookup }) => `${host.exchange}${lookup.kind === "ok" ? ` (${lookup.addresses.join(", ")})` : " (no address)"}`).join(", ");
  const implicit = hosts[0]?.implicit ? " (no MX record: the domain's own address stands in)" : "";
  const here = found.find(({ host, lookup }) => host.exchange === hostname || (address !== null && lookup.kind === "ok" && lookup.addresses.includes(address)));
  if (here) return ok(name, `MX of ${domain} is ${described}${implicit}: bounces come back to this box`);
  if (address === null) return warn(name, `MX of ${domain} is ${described}${implicit}, not ${hostname}; whether it reaches this box is unknown without the public address`, fix);
  return fail(name, `MX of ${domain} is ${described}${implicit}, not this box (${hostname}, ${address})`, fix);
}

/** SPF authorises the home address when mail goes direct, and names something for the cloud path. */
async function spfCheck(s: SenderDomainSubject): Promise<{ check: Check; aligned: boolean }> {
  const { resolver, domain, address, hostname, direct, cloud } = s;
  const name = `spf:${domain}`;
  const cloudFix = "add the cloud's onward relay to it (Amazon SES: include:amazonses.com; an SMTP upstream: the include its provider documents)";
  const suggestion = `"v=spf1 ${direct ? `a:${hostname} ` : ""}${cloud ? "include:<your cloud's onward relay> " : ""}~all"`;
  const spf = await fetchSpf(resolver, domain);
  if (spf.kind === "none") {
    return { check: fail(name, `${domain} has no SPF record: receivers cannot tell who may send as ${domain} (Gmail and Yahoo require SPF or DKIM)`, `add a TXT record to ${domain}: ${suggestion}`), aligned: false };
  }
  if (spf.kind === "failed") return { check: warn(name, spf.reason, RESOLVER_FIX), aligned: false };
  if (spf.kind === "error") return { check: fail(name, spf.reason, `publish exactly one valid record, e.g. ${suggestion}`), aligned: false };
  const everyone = spf.record.terms.find((t) => t.mechanism === "all" && t.qualifier === "+");
  if (everyone) return { check: fail(name, `the SPF record of ${domain} ends ${everyone.text}: it authorises every address on the internet, which receivers distrust`, `end it with ~all or -all`), aligned: false };
  const named = spf.record.terms.filter((t) => t.mechanism !== "all").map((t) => t.text);
  if (!direct || address === null) {
    const why = !direct ? "this configuration sends nothing direct, so the home address need not be in it" : "not compared with the home address, which is unknown";
    const lacksCloud = cloud && named.length === 0 && spf.record.redirect === null;
    return { check: lacksCloud ? warn(name, `SPF of ${domain} is "${spf.text}" and names no sender for the cloud path`, cloudFix) : ok(name, `SPF of ${domain} is "${spf.text}" (${why})`), aligned: false };
  }
  const coverage = await spfCovers(resolver, domain, spf.record, address);
  const notFollowed = coverage.covered || coverage.unchecked.length === 0 ? "" : `; not followed: ${coverage.unchecked.join(", ")}`;
  if (!coverage.covered) {
    const said = `the SPF record of ${domain} ("${spf.text}") does not cover ${address}: ${coverage.failedBy ? `${coverage.failedBy} decides against it` : "no term matches"} (checked ip4, ip6, a, mx and one level of include${notFollowed})`;
    const fix = `add a:${hostname} to the record (it follows the address when the address changes)`;
    // A term doctor does not follow may still cover the address: say so rather than claim a failure.
    return { check: coverage.failedBy === null && coverage.unchecked.length > 0 ? warn(name, said, fix) : fail(name, said, fix), aligned: false };
  }
  const others = named.filter((t) => t !== coverage.by.split(" ")[0]);
  if (cloud && others.length === 0 && spf.record.redirect === null) {
    return { check: warn(name, `SPF of ${domain} covers ${address} (${coverage.by}) and names no other sender, so mail the cloud relays as ${domain} fails SPF unless its onward relay uses its own envelope domain`, cloudFix), aligned: true };
  }
  return { check: ok(name, `SPF of ${domain} covers ${address} (${coverage.by})${others.length > 0 ? `; it also authorises ${others.join(" ")}` : ""}`), aligned: true };
}

/** The DKIM record under the selector in use: present, a usable key, the configured one. */
async function dkimCheck(s: SenderDomainSubject): Promise<{ check: Check; published: boolean }> {
  const { resolver, domain, dkim } = s;
  const name = `dkim:${domain}`;
  if (dkim === null) {
    return { check: warn(name, `no DKIM selector is configured for ${domain}, so doctor cannot look for its key; mail without a DKIM signature depends on SPF alone`, `sign with DKIM (dkim.domains.${domain}; homerelay dkim keygen makes the key), or set doctor.dkimSelector to the selector your key is published under`), published: false };
  }
  const owner = dkimRecordName(dkim.selector, dkim.domain);
  const publish = `publish the TXT record of the DKIM key at ${owner}`;
  const answer = await dnsAnswer(resolver.resolveTxt(owner));
  if (answer.kind === "failed") return { check: warn(name, `the DKIM record ${owner} could not be looked up (${answer.code})`, RESOLVER_FIX), published: false };
  const texts = answer.kind === "found" ? answer.value.map((strings) => strings.join("")) : [];
  const text = texts.find((t) => /(^|;)\s*p\s*=/.test(t));
  if (text === undefined) return { check: fail(name, `there is no DKIM record at ${owner}: receivers cannot verify signatures made with selector ${dkim.selector}`, publish), published: false };
  const tags = tagList(text);
  const p = (tags.get("p") ?? "").replace(/\s+/g, "");
  if (p === "") return { check: fail(name, `the DKIM record at ${owner} has an empty p=: the key is revoked`, publish), published: false };
  if (dkim.publicKey !== null && p !== dkim.publicKey) return { check: fail(name, `the DKIM record at ${owner} carries another key than the one this box signs with`, `${publish} as printed for the configured key`), published: false };
  const kind = (tags.get("k") ?? "rsa").toLowerCase();
  if (kind === "ed25519") return { check: ok(name, `DKIM record ${owner} has an Ed25519 key${dkim.publicKey !== null ? " (the configured one)" : ""}`), published: true };
  let bits: number;
  try {
    bits = createPublicKey({ key: Buffer.from(p, "base64"), format: "der", type: "spki" }).asymmetricKeyDetails?.modulusLength ?? 0;
  } catch {
    return { check: fail(name, `the DKIM record at ${owner} has a p= that is no RSA public key`, publish), published: false };
  }
  const which = `a ${bits}-bit RSA key${dkim.publicKey !== null ? " (the configured one)" : ""}`;
  if (bits < 1024) return { check: fail(name, `DKIM record ${owner} has ${which}: receivers ignore keys under 1024 bits`, "make a 2048-bit key and publish it"), published: false };
  if (bits < 2048) return { check: warn(name, `DKIM record ${owner} has ${which}; 2048 bits is the current advice`, "make a 2048-bit key and publish it under a new selector"), published: true };
  return { check: ok(name, `DKIM record ${owner} has ${which}`), published: true };
}

/** The DMARC policy exists, and the mail passes it through SPF or DKIM alignment. */
async function dmarcCheck(s: SenderDomainSubject, aligned: { spf: boolean; dkim: boolean }): Promise<Check> {
  const { resolver, domain, cloud } = s;
  const name = `dmarc:${domain}`;
  const found = await dmarcRecord(resolver, domain);
  const suggestion = `add a TXT record at _dmarc.${domain}: "v=DMARC1; p=none; rua=mailto:postmaster@${domain}"`;
  if (found.kind === "failed") return warn(name, `the DMARC record of ${domain} could not be looked up (${found.code})`, RESOLVER_FIX);
  if (found.kind === "none") return fail(name, `${domain} has no DMARC record (_dmarc.${domain}): Gmail and Yahoo ask every sender for one, and trust mail without one less`, suggestion);
  if (found.kind === "several") return fail(name, `_dmarc.${domain} has ${found.count} DMARC records; receivers then ignore them all`, "keep one");
  const tags = tagList(found.text);
  const policy = (found.owner === domain ? tags.get("p") : (tags.get("sp") ?? tags.get("p")))?.toLowerCase();
  const where = found.owner === domain ? `_dmarc.${domain}` : `_dmarc.${found.owner}, which covers ${domain}`;
  if (policy === undefined || !["none", "quarantine", "reject"].includes(policy)) return fail(name, `the DMARC record at ${where} has no valid p= policy ("${found.text}")`, suggestion);
  const modes = `adkim=${tags.get("adkim") ?? "r"}, aspf=${tags.get("aspf") ?? "r"}`;
  const said = `DMARC of ${domain}: p=${policy}, ${modes} (${where})`;
  if (policy === "none") return ok(name, `${said}: monitoring only, receivers act on nothing`);
  // homerelay keeps the sender's own domain in the envelope, so SPF and DKIM align in both modes whenever they pass as this domain.
  if (!aligned.spf && !aligned.dkim) {
    return fail(name, `${said}, and mail from ${domain} passes neither SPF for the home address nor a DKIM key checked here: receivers would ${policy} it`, `cover this box in SPF (a:${s.hostname}) or sign with DKIM as ${domain}`);
  }
  if (cloud && !aligned.dkim) {
    return warn(name, `${said}; mail relayed by the cloud passes only if its onward relay keeps ${domain} as the envelope domain (Amazon SES does not without a custom MAIL FROM domain)`, `sign with DKIM as ${domain}`);
  }
  return ok(name, `${said}; the mail aligns through ${[aligned.spf ? "SPF" : "", aligned.dkim ? "DKIM" : ""].filter(Boolean).join(" and ")}`);
}

/**
 * The DMARC record that applies to `domain`: its own, else its organisational domain's (taken as
 * the last two labels, which is right for most domains but not for `co.uk`-style ones).
 */
async function dmarcRecord(resolver: MailResolver, domain: string): Promise<{ kind: "found"; owner: string; text: string } | { kind: "none" } | { kind: "several"; count: number } | { kind: "failed"; code: string }> {
  const labels = domain.split(".");
  const owners = labels.length > 2 ? [domain, labels.slice(-2).join(".")] : [domain];
  for (const owner of owners) {
    const answer = await dnsAnswer(resolver.resolveTxt(`_dmarc.${owner}`));
    if (answer.kind === "failed") return answer;
    const records = answer.kind === "found" ? recordsStartingWith(answer.value, "v=DMARC1") : [];
    if (records.length > 1) return { kind: "several", count: records.length };
    if (records.length === 1) return { kind: "found", owner, text: records[0]! };
  }
  return { kind: "none" };
}

/** The `tag=value; …` list of a DKIM or DMARC record (RFC 6376 3.2), tag names in lower case. */
function tagList(text: string): Map<string, string> {
  return new Map(
    text
      .split(";")
      .map((part) => part.split("="))
      .filter((kv) => kv.length >= 2 && kv[0]!.trim() !== "")
      .map((kv) => [kv[0]!.trim().toLowerCase(), kv.slice(1).join("=").trim()]),
  );
}
