/**
 * dnsbl — is the public address on a DNS blocklist (RFC 5782)? The address reversed under the
 * list's zone: NXDOMAIN means not listed, an answer in 127.0.0.0/8 means listed. Spamhaus answers
 * 127.255.255.252/254/255 when it refuses the query itself (a public resolver, too many queries):
 * that says nothing about the address, and is reported as the resolver problem it is.
 */
import { reverseName, type MailResolver } from "../../shared/dns/resolver.js";
import { RESOLVER_FIX, SEND_ELSEWHERE, failIfDirect, ok, warn, type Check } from "./check.js";
import { dnsAnswer } from "./dns-answer.js";

/** What one list said about one address. */
export type DnsblVerdict =
  | { kind: "not-listed" }
  | { kind: "listed"; codes: string[]; meaning: string; text: string | null }
  | { kind: "refused"; code: string; meaning: string }
  | { kind: "not-a-code"; codes: string[] }
  | { kind: "failed"; code: string };

/** Spamhaus's answers that refuse the query (https://docs.spamhaus.com, "DNSBL return codes"). */
const REFUSALS: Record<string, string> = {
  "127.255.255.252": "the zone name is mistyped",
  "127.255.255.254": "the query came through a public or open resolver, which Spamhaus does not answer",
  "127.255.255.255": "this resolver sent too many queries",
};

/** What Spamhaus ZEN's listing codes mean; other lists say only "listed". */
const ZEN_CODES: Record<string, string> = {
  "127.0.0.2": "SBL, a spam source",
  "127.0.0.3": "SBL CSS, a snowshoe spam source",
  "127.0.0.4": "XBL, an infected or exploited host",
  "127.0.0.9": "SBL DROP, a hijacked network",
  "127.0.0.10": "PBL, an ISP says this address should not send mail direct",
  "127.0.0.11": "PBL, an address range that should not send mail direct",
};

/** The name to query for `address` in `zone`: `7.113.0.203.zen.spamhaus.org` (nibbles for IPv6). */
export function dnsblQueryName(address: string, zone: string): string {
  return reverseName(address).replace(/\.(in-addr|ip6)\.arpa$/, `.${zone}`);
}

/** Ask `zone` about `address`. */
export async function lookupDnsbl(resolver: MailResolver, address: string, zone: string): Promise<DnsblVerdict> {
  const name = dnsblQueryName(address, zone);
  const answer = await dnsAnswer(resolver.resolve4(name));
  if (answer.kind === "none") return { kind: "not-listed" };
  if (answer.kind === "failed") return { kind: "failed", code: answer.code };
  const codes = answer.value;
  const refusal = codes.find((c) => c.startsWith("127.255.255."));
  if (refusal !== undefined) return { kind: "refused", code: refusal, meaning: REFUSALS[refusal] ?? "the list refused the query" };
  if (!codes.every((c) => c.startsWith("127."))) return { kind: "not-a-code", codes };
  const isZen = /(^|\.)zen\.(spamhaus\.org|dq\.spamhaus\.net)$/.test(zone);
  const meaning = isZen ? codes.map((c) => ZEN_CODES[c] ?? c).join("; ") : "listed";
  // The list's TXT record usually says why and where to ask for removal; it is a courtesy, not required.
  const text = await dnsAnswer(resolver.resolveTxt(name));
  return { kind: "listed", codes, meaning, text: text.kind === "found" ? (text.value.map((t) => t.join("")).find((t) => t !== "") ?? null) : null };
}

/** True for a PBL-only listing: the address is fine, it is just not meant to send direct. */
function policyOnly(verdict: DnsblVerdict): boolean {
  return verdict.kind === "listed" && verdict.codes.every((c) => c === "127.0.0.10" || c === "127.0.0.11");
}

/** The check of one zone. */
export async function dnsblCheck(resolver: MailResolver, address: string, zone: string, direct: boolean): Promise<Check> {
  const name = `dnsbl:${zone}`;
  const verdict = await lookupDnsbl(resolver, address, zone);
  switch (verdict.kind) {
    case "not-listed":
      // Many lists hold no IPv6 addresses at all: NXDOMAIN then says nothing.
      return ok(name, `${address} is not listed on ${zone}${address.includes(":") ? " (if it lists IPv6 addresses at all)" : ""}`);
    case "failed":
      return warn(name, `${zone} could not be asked about ${address} (${verdict.code})`, RESOLVER_FIX);
    case "refused":
      return failIfDirect(
        direct,
        name,
        `${zone} refused the query (${verdict.code}: ${verdict.meaning}); this is not a listing, and says nothing about ${address}`,
        verdict.code === "127.255.255.252"
          ? `correct the zone name in doctor.dnsbl`
          : `query through a resolver of your own (e.g. unbound on this box, in dns.servers) instead of a public one, or use a Spamhaus DQS key (zone <key>.zen.dq.spamhaus.net in doctor.dnsbl)`,
      );
    case "not-a-code":
      return warn(
        name,
        `${zone} answered ${verdict.codes.join(", ")} for ${address}, which is no blocklist code (127.x.x.x): the resolver rewrites answers (an ISP's "search help" for unknown names?)`,
        "use a resolver that does not rewrite NXDOMAIN answers in dns.servers",
      );
    case "listed": {
      const said = `${address} is listed on ${zone} (${verdict.codes.join(", ")}: ${verdict.meaning})${verdict.text ? `: "${verdict.text.slice(0, 200)}"` : ""}`;
      if (policyOnly(verdict)) {
        return failIfDirect(direct, name, said, `${SEND_ELSEWHERE}; a static address can be taken out of the PBL at https://check.spamhaus.org`);
      }
      return failIfDirect(direct, name, `${said}; receivers that use ${zone} refuse mail from it`, `find out why (a compromised device on your network?), then ask ${zone} for removal; until then ${SEND_ELSEWHERE}`);
    }
  }
}
