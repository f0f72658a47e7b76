/**
 * smtp-transport — the agent's SMTP ways out (Postfix smtp(8)): direct to the recipient domain's
 * MX hosts, or to a named smarthost with AUTH. Limits concurrency per destination and in total,
 * and keeps idle sessions for a few seconds so that a burst of mail reuses them.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { EnvelopeRecipient } from "../../shared/envelope.js";
import { readSecretFile } from "../../shared/secret-file.js";
import { transactionsOf } from "../../shared/smtp/transactions.js";
import type { MailResolver } from "../../shared/dns/resolver.js";
import type { MailLog } from "../../shared/log.js";
import { deliverViaMx } from "../../shared/smtp/mx-delivery.js";
import { SmtpClient, SmtpSessionError, type RecipientOutcome, type SmtpTarget } from "../../shared/smtp/smtp-client.js";
import type { AgentConfig } from "../config.js";
import { MtaStsPolicies } from "../mta-sts/policy-cache.js";
import { stsDelivery } from "../mta-sts/sts-delivery.js";
import type { DeliveryRequest, DeliveryResult, Transport } from "../qmgr/transport.js";
import { Spool } from "../queue/spool.js";
import { Semaphore } from "./semaphore.js";
import { SessionCache } from "./session-cache.js";

/** A smarthost with its password read and its CA loaded. */
interface Smarthost {
  name: string;
  host: string;
  port: number;
  tls: SmtpTarget["tls"];
  verifyImplicit: boolean;
  ca?: Buffer;
  auth?: { user: string; pass: string; method: "PLAIN" | "LOGIN" | "CRAM-MD5" };
}

/** Read the smarthosts' secrets and CAs; refuses password files that are readable or writable by others. */
export function loadSmarthosts(config: Pick<AgentConfig, "smarthosts">): Map<string, Smarthost> {
  const hosts = new Map<string, Smarthost>();
  for (const [name, s] of Object.entries(config.smarthosts)) {
    let auth: Smarthost["auth"];
    if (s.auth) {
      const pass = s.auth.password ?? readSecretFile(s.auth.passwordFile!, `smarthost ${name}: password file`).replace(/\r?\n$/, "");
      auth = { user: s.auth.user, pass, method: s.auth.mechanism };
    }
    const tls: SmtpTarget["tls"] = s.tls === "implicit" ? "implicit" : s.tls === "none" ? "none" : s.verify ? "verify" : "encrypt";
    hosts.set(name, { name, host: s.host, port: s.port, tls, verifyImplicit: s.verify, ...(s.ca ? { ca: readFileSync(s.ca) } : {}), ...(auth ? { auth } : {}) });
  }
  return hosts;
}

/** What the SMTP transport needs. */
export interface SmtpTransportOptions {
  config: AgentConfig;
  resolver: MailResolver;
  log: MailLog;
  /** Extra CAs trusted for MX delivery under the `verify` policy (tests). */
  mxCa?: SmtpTarget["ca"];
}

/** The `mx` and `smarthost:<name>` transports. */
export class SmtpTransport implements Transport {
  readonly name = "smtp";
  private readonly smarthosts: Map<string, Smarthost>;
  private readonly total: Semaphore;
  private readonly perDestination = new Map<string, Semaphore>();
  private readonly sessions: SessionCache;
  /** Receivers' MTA-STS policies for direct-to-MX delivery; null when `delivery.mtaSts.enabled` is off. */
  private readonly mtaSts: MtaStsPolicies | null;

  constructor(private readonly o: SmtpTransportOptions) {
    this.smarthosts = loadSmarthosts(o.config);
    this.total = new Semaphore(o.config.delivery.concurrency);
    this.sessions = new SessionCache((target) => SmtpClient.open(target), 2000);
    const { delivery, spool } = o.config;
    this.mtaSts = delivery.mtaSts.enabled
      ? new MtaStsPolicies({
          dir: join(new Spool(spool).privateDir, "mta-sts"),
          resolver: o.resolver,
          addressPreference: delivery.addressPreference,
          port: delivery.mtaSts.port,
          // The policy host's certificate is checked against the same CAs as MX hosts' under `verify`.
          ...(o.mxCa ? { ca: o.mxCa } : {}),
          timeout: delivery.connectTimeout,
          log: o.log,
        })
      : null;
  }

  async deliver(request: DeliveryRequest): Promise<DeliveryResult[]> {
    const { step } = request;
    const destination = step.kind === "smarthost" ? `smarthost:${step.name}` : request.domain;
    let limit = this.perDestination.get(destination);
    if (!limit) {
      limit = new Semaphore(this.o.config.delivery.destinationConcurrency);
      this.perDestination.set(destination, limit);
    }
    return limit.run(() => this.total.run(() => this.attempt(request)));
  }

  /** Close cached sessions (agent stop). */
  close(): void {
    this.sessions.close();
  }

  private async attempt(request: DeliveryRequest): Promise<DeliveryResult[]> {
    const { config, resolver } = this.o;
    const { message, step } = request;
    const transactions = transactionsOf(request.recipients);
    const content = () => request.content() as import("node:stream").Readable;
    let outcomes: RecipientOutcome[];
    if (step.kind === "mx") {
      const policy = (await this.mtaSts?.policyFor(request.domain)) ?? null;
      outcomes = await deliverViaMx(
        { domain: request.domain, envelope: message.record.envelope, transactions, content, size: message.size },
        {
          resolver,
          port: config.delivery.mxPort,
          helo: config.hostname,
          ...stsDelivery(policy, config.delivery.tlsPolicies[request.domain] ?? config.delivery.tlsPolicy, this.o.log, message.record.id),
          addressPreference: config.delivery.addressPreference,
          connectTimeout: config.delivery.connectTimeout,
          commandTimeout: config.delivery.commandTimeout,
          sessions: this.sessions,
          ...(this.o.mxCa ? { ca: this.o.mxCa } : {}),
        },
      );
    } else if (step.kind === "smarthost") {
      outcomes = await this.viaSmarthost(step.name, request, transactions, content);
    } else {
      throw new Error(`smtp transport cannot deliver route ${step.kind}`);
    }
    return outcomes;
  }

  private async viaSmarthost(name: string, request: DeliveryRequest, transactions: EnvelopeRecipient[][], content: () => import("node:stream").Readable): Promise<RecipientOutcome[]> {
    const host = this.smarthosts.get(name);
    const all = transactions.flat();
    const fail = (dsn: string, detail: string, unreachable: boolean, bounce = false): RecipientOutcome[] =>
      all.map((r) => ({ recipient: r.address, status: bounce ? "bounced" : "deferred", dsn, relay: `smarthost:${name}`, detail, ...(unreachable ? { unreachable } : {}) }));
    if (!host) return fail("4.3.5", `smarthost ${name} is not configured`, false);
    const addresses = await this.o.resolver.resolveAddresses(host.host, this.o.config.delivery.addressPreference);
    if (addresses.kind !== "ok") return fail("4.4.3", addresses.reason, true);
    let last: SmtpSessionError | null = null;
    for (const address of addresses.addresses) {
      let session: SmtpClient;
      try {
        session = await this.sessions.acquire({
          address,
          port: host.port,
          hostname: host.host,
          tls: host.tls,
          verifyImplicit: host.verifyImplicit,
          helo: this.o.config.hostname,
          connectTimeout: this.o.config.delivery.connectTimeout,
          commandTimeout: this.o.config.delivery.commandTimeout,
          ...(host.ca ? { ca: host.ca } : {}),
          ...(host.auth ? { auth: host.auth } : {}),
        });
      } catch (err) {
        if (!(err instanceof SmtpSessionError)) throw err;
        last = err;
        // Wrong credentials are the owner's to fix, not the sender's: defer, never bounce.
        if (!err.unreachable) break;
        continue;
      }
      const results: RecipientOutcome[] = [];
      for (const t of transactions) {
        if (!session.usable) {
          results.push(...t.map((r): RecipientOutcome => ({ recipient: r.address, status: "deferred", dsn: "4.4.2", relay: session.relay, detail: "lost connection before sending" })));
          continue;
        }
        results.push(...(await session.send(request.message.record.envelope, t, content(), request.message.size)));
      }
      this.sessions.release(session, session.usable && results.every((r) => !r.unreachable));
      return results;
    }
    const error = last!;
    return fail(error.temporary ? error.enhanced : `4${error.enhanced.slice(1)}`, error.message, error.unreachable);
  }
}
