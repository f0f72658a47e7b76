/**
 * policy-cache — the MTA-STS policy in force for a recipient domain (RFC 8461 section 5.1): the
 * `_mta-sts` TXT record's id says whether the cached policy is current; a new id, or an expired
 * policy, is fetched again. Policies are kept in the spool (one file per domain), so they outlive
 * restarts; when no live policy can be had, an unexpired cached one still applies.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as z from "zod";
import type { MailLog } from "../../shared/log.js";
import { isDnsName } from "../dkim/dkim-record.js";
import { fetchPolicyText, policyUrl, PolicyFetchError, type PolicyFetchOptions } from "./policy-fetch.js";
import { parseStsPolicy, stsRecordId, type StsPolicy } from "./sts-policy.js";

/** A domain's policy as applied: its fields, its id, and until when (ms since the epoch) it may be used. */
export interface AppliedStsPolicy extends StsPolicy {
  domain: string;
  id: string;
  expires: number;
}

/** Where policies come from and where they are kept. */
export interface MtaStsOptions extends PolicyFetchOptions {
  /** Directory of cached policies, one file per domain; made when first needed. */
  dir: string;
  log: MailLog;
  /** The clock (ms), injectable so that tests can let max_age pass. */
  now?: () => number;
}

/** A cached policy on disk: the id it was fetched under, when, and the policy file's text. */
const cacheFileSchema = z.object({ id: z.string(), fetched: z.number(), policy: z.string() });

/** After a failed fetch, the same policy id is not fetched again for this long (ms): a dead policy host would slow every delivery. */
const FETCH_RETRY_MS = 5 * 60_000;

/** The MTA-STS policies of recipient domains. */
export class MtaStsPolicies {
  /** Policies read from disk or fetched; null: the domain has none cached. */
  private readonly known = new Map<string, AppliedStsPolicy | null>();
  /** Fetches in progress, by `domain id`, shared by concurrent deliveries. */
  private readonly fetching = new Map<string, Promise<AppliedStsPolicy | null>>();
  /** Until when a failed fetch is not tried again, by `domain id`. */
  private readonly failed = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly o: MtaStsOptions) {
    this.now = o.now ?? Date.now;
  }

  /** The policy that applies to mail for `domain`, or null when none does (deliver as without MTA-STS). */
  async policyFor(domain: string): Promise<AppliedStsPolicy | null> {
    // Address literals and odd names have no policy (and must not name a cache file).
    if (!isDnsName(domain)) return null;
    const [id, cached] = await Promise.all([this.recordId(domain), this.cached(domain)]);
    const current = cached !== null && cached.expires > this.now() ? cached : null;
    // No live record (none, or DNS failing): an unexpired cached policy still applies.
    if (id === null || id === current?.id) return current;
    const key = `${domain} ${id}`;
    const until = this.failed.get(key);
    if (until !== undefined && until > this.now()) return current;
    // Spent entries go, so that the map holds only the failures of the last few minutes.
    if (until !== undefined) this.failed.delete(key);
    let pending = this.fetching.get(key);
    if (!pending) {
      pending = this.refresh(domain, id, current).finally(() => this.fetching.delete(key));
      this.fetching.set(key, pending);
    }
    return pending;
  }

  /** The id of the domain's `_mta-sts` record, or null when it has no usable one or DNS fails. */
  private async recordId(domain: string): Promise<string | null> {
    try {
      return stsRecordId(await this.o.resolver.resolveTxt(`_mta-sts.${domain}`));
    } catch {
      return null;
    }
  }

  /** Fetch the policy published under `id`; on failure, log why and keep `current`. */
  private async refresh(domain: string, id: string, current: AppliedStsPolicy | null): Promise<AppliedStsPolicy | null> {
    let policy: StsPolicy;
    try {
      const text = await fetchPolicyText(domain, this.o);
      try {
        policy = parseStsPolicy(text);
      } catch (err) {
        throw new PolicyFetchError("sts-policy-invalid", (err as Error).message);
      }
      const fetched = this.now();
      await this.store(domain, { id, fetched, policy: text });
      const applied = { domain, id, ...policy, expires: fetched + policy.maxAge * 1000 };
      this.known.set(domain, applied);
      this.o.log.info(`${domain}: MTA-STS policy id=${id}: mode=${policy.mode}, max_age=${policy.maxAge}, mx=${policy.mx.join(",") || "none"}`);
      return applied;
    } catch (err) {
      this.failed.set(`${domain} ${id}`, this.now() + FETCH_RETRY_MS);
      const resultType = err instanceof PolicyFetchError ? err.resultType : "sts-policy-fetch-error";
      const fallback = current
        ? `using the cached policy id=${current.id} (mode ${current.mode}, until ${new Date(current.expires).toISOString()})`
        : "delivering as without MTA-STS";
      this.o.log.warn(`${domain}: MTA-STS policy id=${id} not fetched: result-type=${resultType}, ${policyUrl(domain, this.o.port)}: ${(err as Error).message}; ${fallback}`);
      return current;
    }
  }

  /** The cached policy of `domain` (expired or not), read from disk once. */
  private async cached(domain: string): Promise<AppliedStsPolicy | null> {
    if (this.known.has(domain)) return this.known.get(domain)!;
    let applied: AppliedStsPolicy | null = null;
    try {
      const file = cacheFileSchema.parse(JSON.parse(await readFile(this.file(domain), "utf8")));
      const policy = parseStsPolicy(file.policy);
      applied = { domain, id: file.id, ...policy, expires: file.fetched + policy.maxAge * 1000 };
    } catch (err) {
      // A missing file is the usual case; an unreadable one is fetched anew.
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") this.o.log.warn(`${domain}: cached MTA-STS policy ${this.file(domain)} ignored: ${(err as Error).message}`);
    }
    // A fetch may have finished while the file was read: it wins.
    if (!this.known.has(domain)) this.known.set(domain, applied);
    return this.known.get(domain)!;
  }

  /** Keep a fetched policy on disk (write, then rename: never a half-written file). */
  private async store(domain: string, entry: z.output<typeof cacheFileSchema>): Promise<void> {
    const file = this.file(domain);
    try {
      await mkdir(this.o.dir, { recursive: true, mode: 0o700 });
      await writeFile(`${file}.tmp`, JSON.stringify(entry));
      await rename(`${file}.tmp`, file);
    } catch (err) {
      // The policy still applies from memory; only a restart would forget it.
      this.o.log.warn(`${domain}: cannot keep the MTA-STS policy in ${file}: ${(err as Error).message}`);
    }
  }

  private file(domain: string): string {
    return join(this.o.dir, `${domain.toLowerCase()}.json`);
  }
}
