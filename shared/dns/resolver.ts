/**
 * resolver — DNS lookups for direct-to-MX delivery (RFC 5321 section 5.1, RFC 7505 null MX), with
 * results sorted into what a mail client acts on: hosts to try, a bounce, or a deferral.
 * Reasons read like Postfix's. Also thin TXT/PTR/A lookups for diagnostics.
 */
import { promises as dns } from "node:dns";
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";

/** One mail exchanger; `implicit` when the domain has no MX and its own address stands in. */
export interface MxHost {
  exchange: string;
  preference: number;
  implicit: boolean;
}

/**
 * The mail exchangers of a domain: hosts in the order to try them; `null-mx` when the domain
 * accepts no mail; `nxdomain` when it does not exist for mail (a bounce); `temporary` on a DNS
 * failure that may clear up (a deferral).
 */
export type MxLookup =
  | { kind: "mx"; hosts: MxHost[] }
  | { kind: "null-mx" }
  | { kind: "nxdomain"; reason: string }
  | { kind: "temporary"; reason: string };

/** Which address family to try first (Postfix smtp_address_preference). */
export type AddressPreference = "ipv4" | "ipv6" | "any";

/** The addresses of a host in the order to try them, or why there are none. */
export type AddressLookup =
  | { kind: "ok"; addresses: string[] }
  | { kind: "nxdomain"; reason: string }
  | { kind: "temporary"; reason: string };

/** How to reach DNS: `servers` like `127.0.0.1:5353` or `::1` (none: the system resolver). */
export interface MailResolverOptions {
  servers?: string[];
  /** Seconds to wait for one answer before the next try. */
  timeoutSeconds: number;
  /** Attempts per server before giving up; default 2, like the C library resolver. */
  tries?: number;
  /** Source of randomness for ordering equal-preference MX hosts; default Math.random. */
  random?: () => number;
}

// Postfix's texts (dns_strerror) for the h_errno values a lookup can end with.
const HOST_NOT_FOUND = "Host not found";
const NO_DATA = "Host found but no data record of requested type";
const TRY_AGAIN = "Host not found, try again";
const MALFORMED_NAME = "Malformed domain name";

type Failure = { kind: "nodata" | "nxdomain" | "temporary"; reason: string };

/** DNS lookups for mail delivery over node:dns, answering in mail terms. */
export class MailResolver {
  private readonly resolver: dns.Resolver;
  private readonly random: () => number;

  constructor(options: MailResolverOptions) {
    this.resolver = new dns.Resolver({ timeout: Math.round(options.timeoutSeconds * 1000), tries: options.tries ?? 2 });
    if (options.servers && options.servers.length > 0) this.resolver.setServers(options.servers);
    this.random = options.random ?? Math.random;
  }

  /**
   * The mail exchangers of `domain` by preference, equal preferences shuffled. Without MX records
   * the domain itself is the implicit MX, if it has an address (RFC 5321 section 5.1).
   */
  async resolveMx(domain: string): Promise<MxLookup> {
    const name = canonicalName(domain);
    const mx = await this.query(name, "MX", () => this.resolver.resolveMx(name));
    if ("kind" in mx) {
      if (mx.kind !== "nodata") return { kind: mx.kind, reason: mx.reason };
      const own = await this.resolveAddresses(name, "any");
      return own.kind === "ok" ? { kind: "mx", hosts: [{ exchange: name, preference: 0, implicit: true }] } : own;
    }
    const records = mx.value.map((r) => ({ exchange: canonicalName(r.exchange), preference: r.priority }));
    const real = records.filter((r) => r.exchange !== "");
    // RFC 7505: an MX of "." (the null MX) says the domain takes no mail; one mixed in with real hosts is ignored.
    if (real.length === 0) return { kind: "null-mx" };
    return { kind: "mx", hosts: this.order(real).map((r) => ({ ...r, implicit: false })) };
  }

  /**
   * The A and AAAA addresses of `host`, the preferred family first ("any": alternating, IPv4
   * first). An IP address is its own answer. Addresses of one family are enough when the
   * other lookup fails.
   */
  async resolveAddresses(host: string, preference: AddressPreference): Promise<AddressLookup> {
    if (isIP(host) !== 0) return { kind: "ok", addresses: [host] };
    const name = canonicalName(host);
    const [v4, v6] = await Promise.all([
      this.query(name, "A", () => this.resolver.resolve4(name)),
      this.query(name, "AAAA", () => this.resolver.resolve6(name)),
    ]);
    const ipv4 = "value" in v4 ? v4.value : [];
    const ipv6 = "value" in v6 ? v6.value : [];
    if (ipv4.length + ipv6.length > 0) {
      const addresses = preference === "ipv6" ? [...ipv6, ...ipv4] : preference === "ipv4" ? [...ipv4, ...ipv6] : interleave(ipv4, ipv6);
      return { kind: "ok", addresses };
    }
    const failures = (preference === "ipv6" ? [v6, v4] : [v4, v6]).filter((r): r is Failure => "kind" in r);
    const temporary = failures.find((f) => f.kind === "temporary");
    if (temporary) return { kind: "temporary", reason: temporary.reason };
    return { kind: "nxdomain", reason: failures[0]?.reason ?? nameServiceError(name, "A", NO_DATA) };
  }

  /** The TXT records of `name`, each as its character-strings; throws the node:dns error. */
  resolveTxt(name: string): Promise<string[][]> {
    return this.resolver.resolveTxt(name);
  }

  /** The PTR names of an IPv4 or IPv6 address; throws the node:dns error. */
  resolvePtr(ip: string): Promise<string[]> {
    return this.resolver.resolvePtr(reverseName(ip));
  }

  /** The A records of `name`; throws the node:dns error. */
  resolve4(name: string): Promise<string[]> {
    return this.resolver.resolve4(name);
  }

  /** Sort by preference and shuffle within each preference (Fisher–Yates with the injected random). */
  private order<T extends { preference: number }>(records: T[]): T[] {
    const groups = new Map<number, T[]>();
    for (const r of records) {
      const group = groups.get(r.preference);
      if (group) group.push(r);
      else groups.set(r.preference, [r]);
    }
    return [...groups.keys()]
      .sort((a, b) => a - b)
      .flatMap((preference) => {
        const group = groups.get(preference)!;
        for (let i = group.length - 1; i > 0; i--) {
          const j = Math.min(i, Math.floor(this.random() * (i + 1)));
          [group[i], group[j]] = [group[j]!, group[i]!];
        }
        return group;
      });
  }

  /** Run one lookup; a DNS error becomes a Failure with Postfix's wording. */
  private async query<T>(name: string, type: string, lookup: () => Promise<T>): Promise<{ value: T } | Failure> {
    try {
      return { value: await lookup() };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === dns.NODATA) return { kind: "nodata", reason: nameServiceError(name, type, NO_DATA) };
      if (code === dns.NOTFOUND) return { kind: "nxdomain", reason: nameServiceError(name, type, HOST_NOT_FOUND) };
      if (code === dns.BADNAME) return { kind: "nxdomain", reason: nameServiceError(name, type, MALFORMED_NAME) };
      // SERVFAIL, REFUSED, timeouts, unreachable servers, bad replies: all may clear up.
      return { kind: "temporary", reason: nameServiceError(name, type, TRY_AGAIN) };
    }
  }
}

/** The reverse-lookup name of an address: `4.3.2.1.in-addr.arpa`, or nibbles under `ip6.arpa`. */
export function reverseName(ip: string): string {
  if (isIP(ip) === 0) throw new TypeError(`not an IP address: ${ip}`);
  const bytes = ipaddr.parse(ip).toByteArray();
  if (bytes.length === 4) return `${bytes.reverse().join(".")}.in-addr.arpa`;
  const nibbles = bytes.flatMap((b) => [b >> 4, b & 0xf]).map((n) => n.toString(16));
  return `${nibbles.reverse().join(".")}.ip6.arpa`;
}

function canonicalName(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}

function interleave(a: string[], b: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (i < a.length) out.push(a[i]!);
    if (i < b.length) out.push(b[i]!);
  }
  return out;
}

function nameServiceError(name: string, type: string, text: string): string {
  return `Host or domain name not found. Name service error for name=${name} type=${type}: ${text}`;
}
