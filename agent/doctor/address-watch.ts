/**
 * address-watch — notices when the home line's public address changes: asks the cloud
 * (`GET /v1/whoami`) every `doctor.watchInterval` seconds, logs `public address changed from A
 * to B`, moves the DynDNS name along (`dyndns:`), runs doctor's DNS checks of the new address and
 * logs what fails, and emits `address` so routing can decide again what depended on the old one.
 */
import { EventEmitter } from "node:events";
import type { MailLog } from "../../shared/log.js";
import { CloudProbe } from "../cloud/cloud-probe.js";
import type { AgentConfig } from "../config.js";
import type { Check } from "./check.js";
import { dnsCheckContext, dnsChecks, type DnsCheckContext } from "./doctor.js";
import { DynDnsUpdater, dynDnsSettings } from "./dyndns-update.js";
import { privateRange } from "./public-address.js";

/** What the `address` event tells: the address before (null: none known yet), now, and the DNS checks of it. */
export interface AddressChange {
  previous: string | null;
  current: string;
  checks: Check[];
}

/** How the watch asks and what it does on a change; made from the configuration. */
export interface AddressWatchSettings {
  probe: Pick<CloudProbe, "whoami" | "url">;
  intervalMs: number;
  context: DnsCheckContext;
  dyndns: DynDnsUpdater | null;
}

/**
 * The watch's settings when the configuration asks for one (a cloud, and publicAddress auto or
 * unset), else null. Reads the cloud key and the DynDNS password: throws SecretFileError, as the
 * agent's start refuses unsafe secret files.
 */
export async function addressWatchSettings(config: AgentConfig, log: MailLog, userAgent: string): Promise<AddressWatchSettings | null> {
  if (config.cloud === undefined || (config.publicAddress ?? "auto") !== "auto") return null;
  const probe = await CloudProbe.create(config.cloud, config.doctor.timeout);
  const context = dnsCheckContext(config);
  const dyndns = dynDnsSettings(config, userAgent);
  return {
    probe,
    intervalMs: config.doctor.watchInterval * 1000,
    context,
    dyndns: dyndns === null ? null : new DynDnsUpdater(dyndns, context.resolver, log.component("dyndns")),
  };
}

/** The watch; idle until configured. Listen with `on("address", (change) => …)`. */
/** How often the DNS checks of an unchanged address run again (blocklist listings come and go). */
const RECHECK_MS = 3_600_000;

export class AddressWatch extends EventEmitter<{ address: [AddressChange] }> {
  /** The public address last seen, or null. */
  current: string | null = null;
  private settings: AddressWatchSettings | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  /** The last failure logged, so that a cloud that stays away is logged once. */
  private lastFailure: string | null = null;
  /** When the DNS checks of the current address last ran, ms since the epoch. */
  private checkedAt = 0;

  constructor(private readonly log: MailLog) {
    super();
  }

  /** Start (at once, then every interval) with `settings`, or stop with null. The address already seen is kept. */
  configure(settings: AddressWatchSettings | null): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.settings = settings;
    if (settings !== null) this.schedule(0);
  }

  /** Stop asking; waits for a check in progress. */
  async stop(): Promise<void> {
    this.configure(null);
    // Its failure, if any, is logged where it was started.
    await this.running?.catch(() => {});
  }

  /** Ask the cloud once now, and act on the answer (one check at a time). */
  check(): Promise<void> {
    this.running ??= this.observe().finally(() => (this.running = null));
    return this.running;
  }

  private schedule(delay: number): void {
    const settings = this.settings;
    this.timer = setTimeout(() => {
      // A check that throws must not take the agent down: it is logged, and the next one comes.
      void this.check()
        .catch((err: Error) => this.log.error(`public address check failed: ${err.message}`))
        .finally(() => {
          // Only if no one reconfigured the watch in the meantime.
          if (this.settings === settings && settings !== null) this.schedule(settings.intervalMs);
        });
    }, delay);
    this.timer.unref();
  }

  private async observe(): Promise<void> {
    const settings = this.settings;
    if (settings === null) return;
    const answer = await settings.probe.whoami();
    if (!answer.ok) return this.failed(`cannot learn the public address from the cloud: ${answer.detail}`);
    const address = answer.value.ip;
    const range = privateRange(address);
    if (range !== null) return this.failed(`the cloud at ${settings.probe.url} sees this box as ${address}, a ${range} address: it cannot tell the public address`);
    this.lastFailure = null;
    const previous = this.current;
    if (address !== previous) {
      this.current = address;
      this.log.info(previous === null ? `public address is ${address} (as the cloud at ${settings.probe.url} sees it)` : `public address changed from ${previous} to ${address}`);
    }
    // The DynDNS name first: the checks of the HELO name and the SPF a: term look it up.
    await settings.dyndns?.follow(address);
    // An unchanged address is checked again now and then: it may be listed, or delisted, meanwhile.
    if (address === previous && Date.now() - this.checkedAt < RECHECK_MS) return;
    const { address: ofAddress, domains } = await dnsChecks(settings.context, address);
    this.checkedAt = Date.now();
    const checks = [...ofAddress, ...domains];
    for (const c of checks.filter((c) => c.status === "fail")) this.log.warn(`check ${c.name} of ${address}: ${c.detail}; fix: ${c.fix}`);
    const failed = checks.filter((c) => c.status === "fail").length;
    this.log.info(`checks of ${address}: ${failed === 0 ? "no problems" : `${failed} problem${failed === 1 ? "" : "s"} (homerelay doctor tells more)`}`);
    this.emit("address", { previous, current: address, checks });
  }

  /** Log why the address is not known, once while the reason stays the same. */
  private failed(reason: string): void {
    if (reason !== this.lastFailure) this.log.warn(reason);
    this.lastFailure = reason;
  }
}
