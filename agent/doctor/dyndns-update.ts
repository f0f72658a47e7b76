/**
 * dyndns-update — keeps a DynDNS name (the HELO and MX name of many home setups) on the current
 * public address with the dyndns2 update protocol that DynDNS-style providers speak:
 * `GET {server}/nic/update?hostname=…&myip=…` with basic authentication. It updates only when the
 * name does not carry the address already (providers block clients that repeat `nochg` updates),
 * stops for answers only the owner can fix (badauth, nohost, abuse, …), and waits 30 minutes after
 * the provider's own trouble (911, dnserr), as the protocol asks.
 */
import type { MailResolver } from "../../shared/dns/resolver.js";
import type { MailLog } from "../../shared/log.js";
import { readSecretFile } from "../../shared/secret-file.js";
import type { AgentConfig } from "../config.js";

/** Where and as whom to update. */
export interface DynDnsSettings {
  /** The update server's base URL, `https://members.dyndns.org`. */
  server: string;
  hostname: string;
  user: string;
  password: string;
  /** `homerelay/0.1.0`: providers refuse clients that do not name themselves (badagent). */
  userAgent: string;
}

/** What became of one update. */
export type DynDnsOutcome =
  | { kind: "updated" | "unchanged"; answer: string }
  | { kind: "refused"; answer: string }
  | { kind: "provider-trouble"; answer: string }
  | { kind: "failed"; reason: string };

/** Answers that only the owner can fix: updating again would only get the account blocked. */
const REFUSALS: Record<string, string> = {
  badauth: "the user name or password is wrong",
  "!donator": "the update asked for a feature the account does not have",
  notfqdn: "the host name is not a fully qualified domain name",
  nohost: "the host name does not exist in this account",
  numhost: "too many host names in one update",
  abuse: "the host name is blocked for update abuse",
  badagent: "the provider refuses this client",
};

/** Wait after 911 or dnserr before the next try (the dyndns2 protocol says 30 minutes at least). */
const TROUBLE_WAIT_MS = 30 * 60_000;

/** The `dyndns:` section with its password read; throws SecretFileError for an unsafe password file. */
export function dynDnsSettings(config: AgentConfig, userAgent: string): DynDnsSettings | null {
  const d = config.dyndns;
  if (d === undefined) return null;
  const password = readSecretFile(d.passwordFile, "dyndns.passwordFile").replace(/\r?\n$/, "");
  return { server: d.server, hostname: d.hostname ?? config.hostname, user: d.user, password, userAgent };
}

/** Keeps one name on the address it is told. */
export class DynDnsUpdater {
  /** The address the name is known to carry. */
  private carried: string | null = null;
  /** An answer only the owner can fix: no more updates until the configuration is reloaded. */
  private refusal: string | null = null;
  /** After provider trouble: not before this time (ms). */
  private notBefore = 0;

  constructor(
    private readonly settings: DynDnsSettings,
    private readonly resolver: MailResolver,
    private readonly log: MailLog,
    private readonly now: () => number = Date.now,
  ) {}

  /** Make the name carry `address`, unless it already does or updating must wait; null when nothing was sent. */
  async follow(address: string): Promise<DynDnsOutcome | null> {
    if (this.refusal !== null || this.carried === address || this.now() < this.notBefore) return null;
    if (this.carried === null) {
      // First time: what the name carries already needs no update (and must not get one).
      const forward = await this.resolver.resolveAddresses(this.settings.hostname, "any");
      if (forward.kind === "ok" && forward.addresses.includes(address)) {
        this.carried = address;
        this.log.info(`${this.settings.hostname} already has address ${address}`);
        return null;
      }
    }
    const outcome = await this.update(address);
    this.record(address, outcome);
    return outcome;
  }

  /** Send one update. */
  private async update(address: string): Promise<DynDnsOutcome> {
    const { server, hostname, user, password, userAgent } = this.settings;
    const url = `${server}/nic/update?hostname=${encodeURIComponent(hostname)}&myip=${encodeURIComponent(address)}`;
    let text: string;
    let status: number;
    try {
      const response = await fetch(url, {
        headers: { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`, "user-agent": userAgent },
        redirect: "manual",
        signal: AbortSignal.timeout(30_000),
      });
      status = response.status;
      text = (await response.text()).trim();
    } catch (err) {
      const e = err as Error & { cause?: Error & { code?: string } };
      return { kind: "failed", reason: `cannot reach ${new URL(server).origin}: ${e.cause?.code ?? e.cause?.message ?? e.message}` };
    }
    // One line per host name: "good 203.0.113.7", "nochg 203.0.113.7", "badauth", …
    const answer = text.split(/\r?\n/)[0]?.trim() ?? "";
    const code = answer.split(/\s+/)[0] ?? "";
    if (code === "good") return { kind: "updated", answer };
    if (code === "nochg") return { kind: "unchanged", answer };
    if (code === "911" || code === "dnserr") return { kind: "provider-trouble", answer };
    if (Object.hasOwn(REFUSALS, code)) return { kind: "refused", answer };
    // Some providers answer 401 without a dyndns2 code; that is a wrong password all the same.
    if (status === 401) return { kind: "refused", answer: "badauth" };
    return { kind: "failed", reason: `${new URL(server).origin} answered HTTP ${status}: ${answer.slice(0, 100) || "(nothing)"}` };
  }

  /** Log the outcome and keep what it means for the next update. */
  private record(address: string, outcome: DynDnsOutcome): void {
    const { hostname, server } = this.settings;
    const origin = new URL(server).origin;
    switch (outcome.kind) {
      case "updated":
        this.carried = address;
        this.log.info(`${hostname}: address set to ${address} at ${origin} (${outcome.answer})`);
        return;
      case "unchanged":
        this.carried = address;
        this.log.info(`${hostname}: already had address ${address} at ${origin} (${outcome.answer})`);
        return;
      case "refused": {
        const code = outcome.answer.split(/\s+/)[0]!;
        this.refusal = code;
        this.log.error(`${hostname}: update refused by ${origin} (${code}: ${REFUSALS[code] ?? "refused"}); no more updates until the dyndns: section is fixed and the agent reloaded`);
        return;
      }
      case "provider-trouble":
        this.notBefore = this.now() + TROUBLE_WAIT_MS;
        this.log.warn(`${hostname}: ${origin} has trouble (${outcome.answer}); next update in 30 minutes at the earliest`);
        return;
      case "failed":
        this.log.warn(`${hostname}: update to ${address} failed: ${outcome.reason}; trying again at the next address check`);
        return;
    }
  }
}
