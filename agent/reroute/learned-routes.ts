/**
 * learned-routes — the receivers that refused the home address, remembered in the spool: per
 * recipient domain and per mail provider (the organisation running a domain's MX hosts, since
 * all domains hosted there judge the sending IP alike), each until it expires and direct delivery
 * is tried again. Survives restarts; `homerelay routes learned|forget` reads and edits it.
 */
import { randomBytes } from "node:crypto";
import { open, readFile, rename, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";

/** What was learned about one domain or provider. */
export interface LearnedRoute {
  /** `domain`: mail to this recipient domain; `provider`: mail to any domain whose MX hosts are this provider's. */
  scope: "domain" | "provider";
  /** The domain, or the provider's domain (e.g. `google.com` for `gmail-smtp-in.l.google.com`). */
  key: string;
  /** When it was learned (last refusal), milliseconds since the epoch. */
  learned: number;
  /** When direct delivery is tried again, milliseconds since the epoch. */
  expires: number;
  /** The refusal as the receiver worded it, on one line. */
  reply: string;
  /** What the reply meant (classifier class and reason), e.g. `ip-blocklist: sending IP listed on Spamhaus ZEN`. */
  reason: string;
}

/** The file in the spool's private directory. */
export const LEARNED_ROUTES_FILE = "learned-routes.json";

/** The learned routes of one spool. */
export class LearnedRoutes {
  private constructor(
    private readonly file: string,
    private entries: Map<string, LearnedRoute>,
  ) {}

  /** Read the table from the spool's private directory (empty when there is none yet). */
  static async open(privateDir: string): Promise<LearnedRoutes> {
    const file = join(privateDir, LEARNED_ROUTES_FILE);
    return new LearnedRoutes(file, await readTable(file));
  }

  /** The unexpired entry that sends mail for `domain` past direct delivery, if any. */
  forDomain(domain: string, now: number): LearnedRoute | null {
    return this.live(`domain:${domain.toLowerCase()}`, now);
  }

  /** The unexpired entry for the provider of these MX hosts, if any. */
  forProvider(mxHosts: string[], now: number): LearnedRoute | null {
    for (const host of mxHosts) {
      const hit = this.live(`provider:${providerOf(host)}`, now);
      if (hit) return hit;
    }
    return null;
  }

  /** Whether any provider is known (so that looking up a domain's MX hosts can be skipped otherwise). */
  hasProviders(now: number): boolean {
    return [...this.entries.values()].some((e) => e.scope === "provider" && e.expires > now);
  }

  /**
   * Remember that `domain` (and the providers of `mxHosts`) refused the home address; written to
   * the spool before it returns. Learning again extends the expiry.
   */
  async learn(domain: string, mxHosts: string[], reply: string, reason: string, now: number, ttlSeconds: number): Promise<void> {
    const expires = now + ttlSeconds * 1000;
    const learnedAbout: [LearnedRoute["scope"], string][] = [["domain", domain.toLowerCase()], ...[...new Set(mxHosts.map(providerOf))].map((p): [LearnedRoute["scope"], string] => ["provider", p])];
    for (const [scope, key] of learnedAbout) this.entries.set(`${scope}:${key}`, { scope, key, learned: now, expires, reply, reason });
    await this.save(now);
  }

  /** Forget what was learned about a domain or provider; false when nothing was known. */
  async forget(key: string, now: number): Promise<boolean> {
    const lower = key.toLowerCase();
    const found = [`domain:${lower}`, `provider:${lower}`].filter((k) => this.entries.delete(k));
    if (found.length > 0) await this.save(now);
    return found.length > 0;
  }

  /** Every unexpired entry, newest first. */
  list(now: number): LearnedRoute[] {
    return [...this.entries.values()].filter((e) => e.expires > now).sort((a, b) => b.learned - a.learned);
  }

  private live(id: string, now: number): LearnedRoute | null {
    const entry = this.entries.get(id);
    return entry && entry.expires > now ? entry : null;
  }

  /** Saves one after another, so that an older snapshot never lands after a newer one. */
  private saving: Promise<void> = Promise.resolve();

  /** Replace the file atomically (write, fsync, rename, fsync the directory), without the expired entries. */
  private save(now: number): Promise<void> {
    const next = this.saving.catch(() => {}).then(() => this.write(now));
    this.saving = next;
    return next;
  }

  private async write(now: number): Promise<void> {
    for (const [id, e] of this.entries) if (e.expires <= now) this.entries.delete(id);
    const temporary = `${this.file}.${randomBytes(4).toString("hex")}`;
    const out = await open(temporary, "wx", 0o600);
    try {
      await out.writeFile(JSON.stringify({ version: 1, routes: [...this.entries.values()] }, null, 1) + "\n");
      await out.sync();
    } catch (err) {
      await out.close();
      await unlink(temporary).catch(() => {});
      throw err;
    }
    await out.close();
    await rename(temporary, this.file);
    const dir = await open(dirname(this.file), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}

/**
 * The provider of an MX host: its registrable domain, by the rule that fits the big providers
 * (`gmail-smtp-in.l.google.com` → `google.com`, `x.mail.protection.outlook.com` → `outlook.com`)
 * and keeps three labels under two-letter country codes with short second levels (`mx.isp.co.uk` → `isp.co.uk`).
 */
export function providerOf(mxHost: string): string {
  const labels = mxHost.toLowerCase().replace(/\.$/, "").split(".");
  const tld = labels.at(-1) ?? "";
  const second = labels.at(-2) ?? "";
  const keep = tld.length === 2 && second.length <= 3 && labels.length >= 3 ? 3 : 2;
  return labels.slice(-keep).join(".");
}

async function readTable(file: string): Promise<Map<string, LearnedRoute>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return new Map();
    throw err;
  }
  let routes: LearnedRoute[];
  try {
    routes = (JSON.parse(text) as { routes: LearnedRoute[] }).routes;
    if (!Array.isArray(routes)) throw new Error("no routes array");
  } catch (err) {
    throw new Error(`${file}: not a learned-routes table (${(err as Error).message}); remove it to start afresh`);
  }
  return new Map(routes.map((r) => [`${r.scope}:${r.key}`, r]));
}
