/**
 * dns-answer — the three outcomes a diagnostic DNS lookup can have: records, a definite "there are
 * none" (NXDOMAIN or NODATA, which is itself a finding), or a failure that says nothing about the
 * records (SERVFAIL, timeout), which doctor must not report as their absence.
 */
import { promises as dns } from "node:dns";

/** What one lookup found. */
export type DnsAnswer<T> = { kind: "found"; value: T } | { kind: "none"; code: string } | { kind: "failed"; code: string };

/** Run `lookup` (a node:dns call) and sort its outcome. */
export async function dnsAnswer<T>(lookup: Promise<T>): Promise<DnsAnswer<T>> {
  try {
    return { kind: "found", value: await lookup };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    return code === dns.NOTFOUND || code === dns.NODATA ? { kind: "none", code } : { kind: "failed", code };
  }
}

/** The TXT records of `name` that start with `prefix` (`v=spf1`, `v=DMARC1`), each with its strings joined. */
export function recordsStartingWith(records: string[][], prefix: string): string[] {
  const pattern = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(\\s|;|$)`, "i");
  return records.map((strings) => strings.join("")).filter((text) => pattern.test(text));
}
