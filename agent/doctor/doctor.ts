/**
 * doctor — the setup checked as an experienced postmaster would, before receivers find the faults:
 * the cloud, the public address and its names, blocklists, outbound port 25, each sender
 * domain's DNS, and the listener certificate. Reads only; DNS goes through `dns.servers`.
 */
import { createPublicKey } from "node:crypto";
import { MailResolver } from "../../shared/dns/resolver.js";
import { parseHostPort } from "../../shared/net.js";
import { SecretFileError } from "../../shared/secret-file.js";
import { CloudProbe, type CloudAnswer, type CloudFailure, type CloudIdentity } from "../cloud/cloud-probe.js";
import type { AgentConfig } from "../config.js";
import { DkimKeys } from "../dkim/dkim-keys.js";
import { Spool } from "../queue/spool.js";
import { certificateCheck } from "./certificate.js";
import { fail, type Check } from "./check.js";
import { cloudChecks } from "./cloud-check.js";
import { dnsblCheck } from "./dnsbl.js";
import { port25Check } from "./port25.js";
import { publicAddress } from "./public-address.js";
import { reverseDnsChecks } from "./reverse-dns.js";
import { senderDomainChecks, type SenderDomainSubject } from "./sender-domains.js";

/** Everything doctor found. */
export interface DoctorReport {
  /** The public address the checks used, or null when it is not known. */
  publicAddress: string | null;
  checks: Check[];
}

/** What the DNS checks of an address need from the configuration, built once. */
export interface DnsCheckContext {
  config: AgentConfig;
  resolver: MailResolver;
  /** Sender domains' DKIM keys from `dkim:`, or why they cannot be read. */
  dkim: DkimKeys | SecretFileError | null;
}

/** The resolver of `dns:` (the system's when none is configured). */
function configuredResolver(config: AgentConfig): MailResolver {
  return new MailResolver({ ...(config.dns.servers ? { servers: config.dns.servers } : {}), timeoutSeconds: config.dns.timeout });
}

/** The context of the DNS checks; reads the DKIM keys (an unreadable one is reported, not thrown). */
export function dnsCheckContext(config: AgentConfig): DnsCheckContext {
  let dkim: DnsCheckContext["dkim"] = null;
  try {
    if (config.dkim) dkim = DkimKeys.load(config.dkim);
  } catch (err) {
    if (!(err instanceof SecretFileError)) throw err;
    dkim = err;
  }
  return { config, resolver: configuredResolver(config), dkim };
}

/** Run every check. */
export async function runDoctor(config: AgentConfig, now: number = Date.now()): Promise<DoctorReport> {
  const context = dnsCheckContext(config);
  const direct = sendsDirect(config);
  const target = parseHostPort(config.doctor.port25)!;
  const [cloud, port25, certificate] = await Promise.all([
    cloudPart(config),
    port25Check({ resolver: context.resolver, target, helo: config.hostname, timeoutSeconds: config.doctor.timeout, direct }),
    certificateCheck(config.tls?.cert, new Spool(config.spool).privateDir, config.hostname, now),
  ]);
  const address = publicAddress(config.publicAddress, cloud.whoami, config.cloud?.url ?? null);
  const dns = await dnsChecks(context, address.address);
  const dkimProblem = context.dkim instanceof SecretFileError ? [fail("dkim-keys", context.dkim.message, "fix the key file (chmod 600; homerelay dkim keygen makes a new one)")] : [];
  return {
    publicAddress: address.address,
    checks: [address.check, ...dns.address, port25, ...dkimProblem, ...dns.domains, ...cloud.checks, certificate],
  };
}

/**
 * The checks that depend on the public address and DNS: its names and blocklist entries (skipped
 * when it is unknown), and each sender domain's MX, SPF, DKIM and DMARC. The agent runs them
 * again when the address changes.
 */
export async function dnsChecks(context: DnsCheckContext, address: string | null): Promise<{ address: Check[]; domains: Check[] }> {
  const { config, resolver } = context;
  const direct = sendsDirect(config);
  const cloud = config.routes.some((r) => [r.route, ...r.fallback].includes("cloud"));
  const [reverse, listed, domains] = await Promise.all([
    address === null ? [] : reverseDnsChecks({ resolver, address, hostname: config.hostname, direct }),
    address === null ? [] : Promise.all(config.doctor.dnsbl.map((zone) => dnsblCheck(resolver, address, zone, direct))),
    Promise.all(
      senderDomains(config).map((domain) =>
        senderDomainChecks({ resolver, domain, address, hostname: config.hostname, direct, cloud, dkim: dkimSubject(context, domain) }),
      ),
    ),
  ]);
  return { address: [...reverse, ...listed], domains: domains.flat() };
}

/** The DKIM key a domain's record should carry: the configured signing key's, else any key under doctor.dkimSelector. */
function dkimSubject(context: DnsCheckContext, domain: string): SenderDomainSubject["dkim"] {
  const key = context.dkim instanceof DkimKeys ? context.dkim.forMessage(domain, null) : null;
  if (key !== null) {
    const publicKey = createPublicKey(key.privateKey).export({ type: "spki", format: "der" }).toString("base64");
    // A parent domain's key signs for this one (relaxed alignment): its record is under the parent.
    return { selector: key.selector, publicKey, domain: key.domain };
  }
  const selector = context.config.doctor.dkimSelector;
  return selector === undefined ? null : { selector, publicKey: null, domain };
}

/** The domains this box sends as: doctor.domains, else the local domains (but localhost) and the DKIM signing domains. */
function senderDomains(config: AgentConfig): string[] {
  if (config.doctor.domains) return config.doctor.domains;
  return [...new Set([...config.localDomains, ...Object.keys(config.dkim?.domains ?? {})])].filter((d) => d !== "localhost");
}

/**
 * Some mail leaves direct to MX from the home address: a route or fallback says `mx` or `auto`,
 * or no catch-all `*` entry (for every sender) catches what no other entry does.
 */
function sendsDirect(config: Pick<AgentConfig, "routes">): boolean {
  const catchAll = config.routes.some((r) => r.match === "*" && r.sender === undefined);
  return !catchAll || config.routes.some((r) => [r.route, ...r.fallback].some((step) => step === "mx" || step === "auto"));
}

/** The cloud checks, when a cloud is configured; an unsafe key file is a finding, not a crash. */
async function cloudPart(config: AgentConfig): Promise<{ checks: Check[]; whoami: CloudAnswer<CloudIdentity> | CloudFailure | null }> {
  if (!config.cloud) return { checks: [], whoami: null };
  let probe: CloudProbe;
  try {
    probe = await CloudProbe.create(config.cloud, config.doctor.timeout);
  } catch (err) {
    if (!(err instanceof SecretFileError)) throw err;
    return { checks: [fail("cloud-key", err.message, "fix cloud.keyFile (homerelay keygen makes a new key)")], whoami: null };
  }
  return cloudChecks(probe, config.limits.messageSize);
}
