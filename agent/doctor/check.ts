/**
 * check — one finding of `homerelay doctor`: what was checked, whether it is right (`ok`), worth a
 * look (`warn`) or wrong (`fail`), what was seen, and how to fix it. Every check family answers in these.
 */

/** `ok`: as it should be; `warn`: a postmaster would only mention it; `fail`: mail suffers from it. */
export type CheckStatus = "ok" | "warn" | "fail";

/** One finding. `name` is stable for machines (`ptr`, `dnsbl:zen.spamhaus.org`, `spf:example.net`). */
export interface Check {
  name: string;
  status: CheckStatus;
  /** What was seen, for the administrator. */
  detail: string;
  /** What to do about it; null when there is nothing to do. */
  fix: string | null;
}

/** A check that passed. */
export function ok(name: string, detail: string): Check {
  return { name, status: "ok", detail, fix: null };
}

/** A finding worth mentioning that does not stop mail. */
export function warn(name: string, detail: string, fix: string | null): Check {
  return { name, status: "warn", detail, fix };
}

/** A finding that costs mail. */
export function fail(name: string, detail: string, fix: string): Check {
  return { name, status: "fail", detail, fix };
}

/**
 * `fail`, or only `warn` when the finding matters for direct-to-MX delivery and this configuration
 * never sends direct (a smarthost or the cloud faces the receivers instead).
 */
export function failIfDirect(direct: boolean, name: string, detail: string, fix: string): Check {
  return direct ? fail(name, detail, fix) : warn(name, `${detail} (this configuration sends nothing direct to MX, so receivers never see it)`, fix);
}

/** The check's line as `homerelay doctor` prints it: `✓ …`, `! … — fix: …`, `✗ … — fix: …`. */
export function formatCheck(check: Check): string {
  const mark = { ok: "✓", warn: "!", fail: "✗" }[check.status];
  return `${mark} ${check.detail}${check.fix !== null ? ` — fix: ${check.fix}` : ""}`;
}

/** The fix of a lookup that got no answer: the resolver, not the record, is the problem. */
export const RESOLVER_FIX = "check that the resolvers in dns.servers answer; run homerelay doctor again";

/** The way around a receiver that refuses the home address. */
export const SEND_ELSEWHERE = "send through the cloud or a smarthost (with route auto, receivers that refuse this address are learned and get its mail by the fallback)";
