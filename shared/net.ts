/**
 * net — listen addresses and network ranges as written in configuration files:
 * `127.0.0.1:2525`, `[::1]:25`, `0.0.0.0:25`; CIDR lists like Postfix's `mynetworks`.
 */
import ipaddr from "ipaddr.js";

/** A host and port to listen on or connect to. */
export interface HostPort {
  host: string;
  port: number;
}

/** Parse `host:port` or `[v6]:port`; returns null when it is not one. */
export function parseHostPort(text: string): HostPort | null {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]\s]+):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const port = Number(m[2]);
  if (port > 65535) return null;
  return { host: m[1]!, port };
}

/** `host:port`, with brackets around IPv6 addresses. */
export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A set of CIDR ranges that answers "is this client address inside?". */
export class NetworkList {
  private readonly ranges: [ipaddr.IPv4 | ipaddr.IPv6, number][];

  /** Throws on a range that does not parse; config validation calls `isCidr` first. */
  constructor(cidrs: readonly string[]) {
    this.ranges = cidrs.map((c) => ipaddr.parseCIDR(c));
  }

  /** True when `address` (IPv4, IPv6 or IPv4-mapped IPv6) lies in one of the ranges. */
  contains(address: string): boolean {
    const ip = normalizeAddress(address);
    if (!ip) return false;
    return this.ranges.some(([range, bits]) => ip.kind() === range.kind() && ip.match(range, bits));
  }
}

/** True for a well-formed CIDR range such as `192.0.2.0/24` or `::1/128`. */
export function isCidr(text: string): boolean {
  try {
    ipaddr.parseCIDR(text);
    return true;
  } catch {
    return false;
  }
}

/** True for loopback addresses (127.0.0.0/8, ::1, and IPv4-mapped loopback). */
export function isLoopback(address: string): boolean {
  const ip = normalizeAddress(address);
  return ip !== null && ip.range() === "loopback";
}

function normalizeAddress(address: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  if (!ipaddr.isValid(address)) return null;
  const ip = ipaddr.parse(address);
  // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
  return ip.kind() === "ipv6" && (ip as ipaddr.IPv6).isIPv4MappedAddress() ? (ip as ipaddr.IPv6).toIPv4Address() : ip;
}
