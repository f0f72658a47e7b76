/**
 * sts-policy — what MTA-STS (RFC 8461) publishes, read: the `_mta-sts` TXT record's policy id
 * (section 3.1), the policy file (section 3.2), and whether a policy lists an MX host (section 4.1).
 */

/** The three modes of a policy: refuse what does not comply, only report it, or nothing. */
export type StsMode = "enforce" | "testing" | "none";

/** A policy file's fields. */
export interface StsPolicy {
  mode: StsMode;
  /** MX host patterns, lower case: `mx.example.net` or `*.example.net` (one leftmost label). */
  mx: string[];
  /** Seconds the policy may be cached. */
  maxAge: number;
}

/** A policy file that does not follow RFC 8461 section 3.2 (TLSRPT result type `sts-policy-invalid`). */
export class StsPolicyError extends Error {}

/** Longest max_age a policy may give: about one year (RFC 8461 section 3.2). */
const MAX_AGE_LIMIT = 31_557_600;

/**
 * The policy id of a domain's `_mta-sts` TXT records (character-strings as resolved), or null when
 * the domain has no usable record: none, several `v=STSv1` ones, or one without a valid id.
 */
export function stsRecordId(records: string[][]): string | null {
  // The strings of one record are joined without spaces; records not starting "v=STSv1;" are someone else's.
  const sts = records.map((strings) => strings.join("")).filter((text) => /^v=STSv1\s*(;|$)/.test(text));
  if (sts.length !== 1) return null;
  const tags = new Map(
    sts[0]!
      .split(";")
      .map((field) => field.trim())
      .filter((field) => field !== "")
      .map((field) => [field.slice(0, field.indexOf("=")).trim(), field.slice(field.indexOf("=") + 1).trim()]),
  );
  const id = tags.get("id");
  return id !== undefined && /^[A-Za-z0-9]{1,32}$/.test(id) ? id : null;
}

/** Read a policy file; throws StsPolicyError naming what is wrong. Unknown fields are ignored, as the RFC asks. */
export function parseStsPolicy(text: string): StsPolicy {
  const fields = new Map<string, string>();
  const mx: string[] = [];
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon === -1) continue;
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (name === "mx") mx.push(value.toLowerCase().replace(/\.$/, ""));
    // A field given twice counts once, as first given.
    else if (!fields.has(name)) fields.set(name, value);
  }
  if (fields.get("version") !== "STSv1") throw new StsPolicyError(`version is ${quoted(fields.get("version"))}, not STSv1`);
  const mode = fields.get("mode");
  if (mode !== "enforce" && mode !== "testing" && mode !== "none") throw new StsPolicyError(`mode is ${quoted(mode)}, not enforce, testing or none`);
  const age = fields.get("max_age");
  if (age === undefined || !/^\d{1,10}$/.test(age) || Number(age) > MAX_AGE_LIMIT) throw new StsPolicyError(`max_age is ${quoted(age)}, not a number of seconds up to ${MAX_AGE_LIMIT}`);
  if (mode !== "none" && mx.length === 0) throw new StsPolicyError(`mode ${mode} without any mx field`);
  return { mode, mx, maxAge: Number(age) };
}

/** Whether `policy` lists MX host `exchange`; `*.example.net` stands for exactly one label more (RFC 8461 section 4.1). */
export function policyListsMx(policy: StsPolicy, exchange: string): boolean {
  const host = exchange.toLowerCase().replace(/\.$/, "");
  return policy.mx.some((pattern) => {
    if (!pattern.startsWith("*.")) return pattern === host;
    const dot = host.indexOf(".");
    return dot > 0 && host.slice(dot + 1) === pattern.slice(2);
  });
}

function quoted(value: string | undefined): string {
  return value === undefined ? "missing" : `"${value.slice(0, 40)}"`;
}
