/**
 * direct-route-advisor — whether direct-to-MX delivery is worth trying for a domain, and what a
 * refusal from an MX means: a reply that refuses the home address (blocklist, dynamic range, no
 * PTR, reputation) sends the recipient on to the route's fallback at once and is learned, per
 * domain and per mail provider, so that later mail goes straight to the fallback until it expires.
 * A home address that is listed on a DNSBL or has a dynamic-looking PTR skips direct delivery for everyone.
 */
import type { MailResolver } from "../../shared/dns/resolver.js";
import type { MailLog } from "../../shared/log.js";
import type { AddressChange } from "../doctor/address-watch.js";
import type { LearnedRoutes } from "./learned-routes.js";
import { classifyReply, type ReplyVerdict } from "./reply-classifier.js";

/** What the advisor is built from. */
export interface DirectRouteAdvisorOptions {
  learned: LearnedRoutes;
  resolver: MailResolver;
  log: MailLog;
  /** How long a learned refusal sends mail past direct delivery, seconds. */
  expirySeconds: number;
  /** Why the current home address should not send direct at all (see homeAddressRefusal), or null. */
  homeRefusal?: () => string | null;
  now?: () => number;
}

/** Advice for the queue manager about direct delivery. */
export class DirectRouteAdvisor {
  private readonly now: () => number;

  constructor(private readonly o: DirectRouteAdvisorOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Why mail for `domain` should skip direct delivery and take the fallback, or null to try it. */
  async skipReason(domain: string): Promise<string | null> {
    const home = this.o.homeRefusal?.() ?? null;
    if (home !== null) return home;
    const now = this.now();
    const known = this.o.learned.forDomain(domain, now);
    if (known) return `learned ${isoDate(known.learned)}: ${known.reason}`;
    // Only worth an MX lookup when some provider is known.
    if (!this.o.learned.hasProviders(now)) return null;
    const mx = await this.o.resolver.resolveMx(domain);
    if (mx.kind !== "mx") return null;
    const provider = this.o.learned.forProvider(
      mx.hosts.map((h) => h.exchange),
      now,
    );
    return provider ? `learned ${isoDate(provider.learned)} for the MX hosts of ${provider.key}: ${provider.reason}` : null;
  }

  /** The verdict on a next hop's refusal when it refuses the home address, else null. */
  refusal(reply: string): ReplyVerdict | null {
    const verdict = classifyReply(reply);
    return verdict.reroute ? verdict : null;
  }

  /** Remember that `domain` (and its mail provider) refused the home address with `reply`. */
  async learn(domain: string, reply: string, verdict: ReplyVerdict): Promise<void> {
    const mx = await this.o.resolver.resolveMx(domain);
    const hosts = mx.kind === "mx" ? mx.hosts.map((h) => h.exchange) : [];
    // One line, and no control characters: a hostile MX's bytes end up on an administrator's terminal.
    const oneLine = reply.replace(/[\x00-\x1f\x7f]+/g, " ").replace(/ {2,}/g, " ");
    await this.o.learned.learn(domain, hosts, oneLine, `${verdict.class}: ${verdict.reason}`, this.now(), this.o.expirySeconds);
    const days = Math.round(this.o.expirySeconds / 86400);
    this.o.log.info(`learned: ${domain}${hosts.length ? ` (MX ${hosts.join(", ")})` : ""} refuses mail from this address (${verdict.reason}); it goes by the fallback route for ${days} day${days === 1 ? "" : "s"}`);
  }
}

/**
 * Why a home address should not send direct to anyone: its PTR looks dynamic, or a DNS blocklist
 * lists it (Spamhaus PBL and the like), as the address watch's checks found; null when neither.
 */
export function homeAddressRefusal(change: AddressChange): string | null {
  const failed = change.checks.find((c) => c.status === "fail" && (c.name === "ptr-dynamic" || c.name.startsWith("dnsbl:")));
  return failed ? `home address ${change.current}: ${failed.detail}` : null;
}

function isoDate(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}
