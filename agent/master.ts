/**
 * master — starts and stops the parts of the agent (Postfix master(8)): the spool, the queue
 * manager with its transports, one smtpd per listener, pickup, and the HTTP submission API. SIGHUP
 * reloads the configuration (a bad one is reported and the running one kept); SIGTERM drains and exits.
 */
import { readFile } from "node:fs/promises";
import { rootCertificates } from "node:tls";
import type { MailLog } from "../shared/log.js";
import { NetworkList, formatHostPort } from "../shared/net.js";
import { CloudTransport } from "./cloud/cloud-transport.js";
import { DkimKeys } from "./dkim/dkim-keys.js";
import { AddressWatch, addressWatchSettings, type AddressWatchSettings } from "./doctor/address-watch.js";
import { signOutgoing } from "./dkim/dkim-signing.js";
import { loadAgentConfig, type AgentConfig, type HttpConfig } from "./config.js";
import { HttpSubmission, type HttpSettings } from "./http/http-submission.js";
import { SubmissionJournal } from "./http/submission-journal.js";
import { loadAliases } from "./local/aliases.js";
import { LocalDelivery } from "./local/local.js";
import { LocalRecipients } from "./local/local-recipients.js";
import { SenderRewriter, loadOrCreateSrsSecret } from "./local/srs.js";
import { QueueManager, type QmgrOptions } from "./qmgr/qmgr.js";
import { DirectRouteAdvisor, homeAddressRefusal } from "./reroute/direct-route-advisor.js";
import { LearnedRoutes } from "./reroute/learned-routes.js";
import { Spool } from "./queue/spool.js";
import type { QueuedMessage } from "./queue/queue-file.js";
import { Anvil } from "./smtpd/anvil.js";
import { Smtpd } from "./smtpd/smtpd.js";
import { MailResolver } from "../shared/dns/resolver.js";
import { Notifier } from "./bounce/notifier.js";
import { Router } from "./router/router.js";
import { controlSocketPath, serveControl } from "./control/control-socket.js";
import { QueueControl } from "./control/queue-control.js";
import { HEADER_SIZE_LIMIT } from "./pickup/maildrop.js";
import { Pickup } from "./pickup/pickup.js";
import { SmtpTransport } from "./smtp/smtp-transport.js";
import { loadTlsIdentity } from "./tls/certificate.js";

/** The package version, shown in the start-up line. */
export const VERSION = "0.1.0";

/** A running agent. */
export class Agent {
  private listeners: Smtpd[] = [];
  private control: { close(): Promise<void> } | null = null;
  private pickup: Pickup | null = null;
  private http: HttpSubmission | null = null;
  private constructor(
    private config: AgentConfig,
    private readonly log: MailLog,
    readonly spool: Spool,
    readonly qmgr: QueueManager,
    private routing: Routing,
    /** What the HTTP API remembers of its messages; fed with the queue manager's outcomes. */
    private readonly journal: SubmissionJournal,
    /** This process runs the SMTP listeners (false when intake processes run them). */
    private readonly intake: boolean,
  ) {
    this.addressWatch = new AddressWatch(log.component("address"));
    this.addressWatch.on("address", (change) => {
      const refusal = homeAddressRefusal(change);
      if (refusal !== this.homeRefusal) {
        this.log.info(refusal ? `${refusal}: auto routes send by their fallback` : `home address ${change.current} is not listed and its PTR looks static: auto routes try direct delivery`);
      }
      this.homeRefusal = refusal;
    });
  }

  /** Why the current home address should not send direct (auto routes take their fallback), or null. */
  private homeRefusal: string | null = null;

  /** Watches the public address (a cloud, publicAddress auto): `on("address", …)` hears of every change. */
  readonly addressWatch: AddressWatch;

  /**
   * Start everything the configuration describes; with `intake: false`, everything but the SMTP
   * listeners (they run in intake processes). Throws, and leaves nothing running, when a part cannot start.
   */
  static async start(config: AgentConfig, log: MailLog, options: { intake: boolean; announce: boolean } = { intake: true, announce: true }): Promise<Agent> {
    const spool = new Spool(config.spool);
    await spool.create();
    const watch = await addressWatchSettings(config, log, `homerelay/${VERSION}`);
    let agent: Agent | undefined;
    const queued = (message: QueuedMessage) => agent?.qmgr.enqueue(message.record.id, message);
    const routing = await buildRouting(config, spool, log, queued, () => agent?.homeRefusal ?? null);
    const journal = await SubmissionJournal.open(spool, log.component("http"));
    const qmgr = new QueueManager(qmgrOptions(config, spool, log, routing, journal));
    agent = new Agent(config, log, spool, qmgr, routing, journal, options.intake);
    try {
      await agent.openListeners(config);
    } catch (err) {
      await agent.stop();
      throw err;
    }
    await qmgr.start();
    // Mail dropped by `homerelay sendmail` (also while the agent was stopped) is picked up here, never in intake processes.
    agent.pickup = new Pickup({
      spool,
      hostname: config.hostname,
      log: log.component("pickup"),
      queued,
      lineLength: config.limits.lineLength,
      hopLimit: config.limits.hopCount,
      headerSize: HEADER_SIZE_LIMIT,
    });
    await agent.pickup.start();
    try {
      if (hasHttp(config)) await agent.openHttp(await HttpSubmission.prepare(config, log.component("http")));
    } catch (err) {
      await agent.stop();
      throw err;
    }
    agent.control = await serveControl(controlSocketPath(spool.privateDir), new QueueControl(spool, qmgr, log.component("postsuper"), () => agent!.routing.learned), log);
    agent.addressWatch.configure(watch);
    if (options.announce) agent.announce();
    return agent;
  }

  /** Log that the agent is up (once every intake process listens, when there are several). */
  announce(): void {
    this.log.info(`daemon started -- version ${VERSION}, configuration ${this.config.source}`);
  }

  /**
   * Re-read the configuration (SIGHUP). Listeners, limits, accounts, aliases and certificate take
   * the new values for new connections; a configuration that does not load changes nothing.
   */
  async reload(file: string | null): Promise<boolean> {
    let next: AgentConfig;
    let routing: Agent["routing"];
    let http: HttpSettings | null;
    let watch: AddressWatchSettings | null;
    try {
      next = loadAgentConfig(file);
      if (next.spool !== this.config.spool) throw new Error(`spool cannot change on reload (${this.config.spool} → ${next.spool}); restart the agent`);
      http = hasHttp(next) ? await HttpSubmission.prepare(next, this.log.component("http")) : null;
      watch = await addressWatchSettings(next, this.log, `homerelay/${VERSION}`);
      routing = await buildRouting(next, this.spool, this.log, (m) => this.qmgr.enqueue(m.record.id, m), () => this.homeRefusal);
    } catch (err) {
      this.log.error(`reload failed, keeping the running configuration: ${(err as Error).message}`);
      return false;
    }
    const old = this.listeners;
    this.listeners = [];
    this.config = next;
    const previous = this.routing;
    this.routing = routing;
    this.qmgr.reconfigure(qmgrOptions(next, this.spool, this.log, routing, this.journal));
    this.addressWatch.configure(watch);
    previous.smtp.close();
    // The API first and on its own: its tokens (a revoked one above all) must not wait on an SMTP port.
    let ok = true;
    try {
      if (http === null) await this.closeHttp();
      else if (this.http) await this.http.reconfigure(http);
      else await this.openHttp(http);
    } catch (err) {
      this.log.error(`reload: cannot open the HTTP API: ${(err as Error).message}`);
      ok = false;
    }
    await Promise.all(old.map((l) => l.stop()));
    try {
      await this.openListeners(next);
    } catch (err) {
      this.log.error(`reload: cannot open listeners: ${(err as Error).message}`);
      return false;
    }
    if (!ok) return false;
    this.log.info(`reload -- version ${VERSION}, configuration ${next.source}`);
    return true;
  }

  /** Stop listening, let open DATA transfers finish, wait for deliveries in progress. */
  async stop(): Promise<void> {
    await this.addressWatch.stop();
    await Promise.all(this.listeners.map((l) => l.stop()));
    await this.closeHttp();
    await this.control?.close();
    await this.pickup?.stop();
    await this.qmgr.stop();
    this.routing.smtp.close();
    this.journal.close();
    await this.spool.close();
    this.log.info("daemon stopped");
  }

  private async openListeners(config: AgentConfig): Promise<void> {
    if (!this.intake) return;
    this.listeners = await openListeners(config, this.spool, this.log, this.routing.recipients, (m) => this.qmgr.enqueue(m.record.id, m));
  }

  /** Start the HTTP submission API; it runs here, never in intake processes. */
  private async openHttp(settings: HttpSettings): Promise<void> {
    this.http = await HttpSubmission.start(
      {
        spool: this.spool,
        journal: this.journal,
        log: this.log.component("http"),
        recipients: () => this.routing.recipients,
        queued: (m) => this.qmgr.enqueue(m.record.id, m),
        version: VERSION,
      },
      settings,
    );
  }

  private async closeHttp(): Promise<void> {
    await this.http?.stop();
    this.http = null;
  }
}

/** Whether the configuration turns the HTTP submission API on. */
function hasHttp(config: AgentConfig): config is AgentConfig & { http: HttpConfig } {
  return config.http !== undefined;
}

/** The parts that decide and carry out delivery, rebuilt on reload. */
interface Routing {
  recipients: LocalRecipients;
  router: Router;
  local: LocalDelivery;
  smtp: SmtpTransport;
  /** Only when the configuration has a `cloud:` section. */
  cloud: CloudTransport | null;
  /** DKIM signing keys; null without a `dkim:` section. */
  dkim: DkimKeys | null;
  notifier: Notifier;
  /** Receivers learned to refuse the home address, and what to make of an MX's refusal. */
  learned: LearnedRoutes;
  directRoutes: DirectRouteAdvisor;
}

async function buildRouting(config: AgentConfig, spool: Spool, log: MailLog, queued: (message: QueuedMessage) => void, homeRefusal: () => string | null): Promise<Routing> {
  // What can refuse to start (an unsafe key file) comes first; the later parts hold nothing that needs closing.
  const cloud = config.cloud ? await CloudTransport.create({ cloud: config.cloud, concurrency: config.delivery.destinationConcurrency, log: log.component("cloud") }) : null;
  const dkim = config.dkim ? DkimKeys.load(config.dkim) : null;
  const recipients = await localRecipients(config, spool);
  const local = new LocalDelivery({ hostname: config.hostname, mailboxes: config.mailboxes, recipients, spool, log: log.component("local"), queued });
  const resolver = new MailResolver({ ...(config.dns.servers ? { servers: config.dns.servers } : {}), timeoutSeconds: config.dns.timeout });
  const smtp = new SmtpTransport({ config, resolver, log: log.component("smtp"), ...(config.delivery.ca ? { mxCa: [...rootCertificates, await readFile(config.delivery.ca, "utf8")] } : {}) });
  const notifier = new Notifier({ spool, hostname: config.hostname, log: log.component("bounce"), notifyPostmaster: config.queue.notifyPostmaster, queued });
  const learned = await LearnedRoutes.open(spool.privateDir);
  const directRoutes = new DirectRouteAdvisor({ learned, resolver, log: log.component("qmgr"), expirySeconds: config.delivery.learnedRouteExpiry, homeRefusal });
  return { recipients, router: new Router(config), local, smtp, cloud, dkim, notifier, learned, directRoutes };
}

function qmgrOptions(config: AgentConfig, spool: Spool, log: MailLog, routing: Routing, journal: SubmissionJournal): QmgrOptions {
  return {
    spool,
    log: log.component("qmgr"),
    // The HTTP API's journal follows where its messages stand.
    outcome: (id, status) => journal.note({ id, ...status }),
    route: (recipient, sender) => routing.router.resolve(recipient, sender),
    // Mail leaving by a remote way out is DKIM-signed at delivery time; local delivery never is.
    transports: { local: routing.local, ...signOutgoing(routing.dkim, { mx: routing.smtp, smarthost: routing.smtp, ...(routing.cloud ? { cloud: routing.cloud } : {}) }, log.component("dkim")) },
    notifier: routing.notifier,
    directRoutes: routing.directRoutes,
    timing: config.queue,
    concurrency: config.delivery.concurrency,
  };
}

/** Open one smtpd per configured listener; on failure, closes what was opened and throws. */
export async function openListeners(config: AgentConfig, spool: Spool, log: MailLog, recipients: LocalRecipients, queued: (message: QueuedMessage) => void): Promise<Smtpd[]> {
  const tls = await loadTlsIdentity(config.tls, spool.privateDir, config.hostname);
  const anvil = new Anvil();
  const trustedNetworks = new NetworkList(config.trustedNetworks);
  const smtpdLog = log.component("smtpd");
  const opened: Smtpd[] = [];
  try {
    for (const listener of config.listeners) {
      const smtpd = new Smtpd({ config, listener, spool, log: smtpdLog, tls, anvil, trustedNetworks, recipients, queued });
      await smtpd.listen();
      opened.push(smtpd);
      const bound = smtpd.address();
      log.info(`listening on ${formatHostPort({ host: bound.address, port: bound.port })} (${listener.role}, tls ${listener.tls}${listener.requireAuth ? ", AUTH required" : ""})`);
    }
  } catch (err) {
    await Promise.all(opened.map((l) => l.stop()));
    throw err;
  }
  return opened;
}

/** The local recipient table of a configuration (for intake processes, which need nothing else). */
export async function localRecipients(config: AgentConfig, spool: Spool): Promise<LocalRecipients> {
  const aliases = config.aliases ? await loadAliases(config.aliases) : null;
  const srs = new SenderRewriter({ secret: await loadOrCreateSrsSecret(spool.privateDir), domain: config.localDomains[0]! });
  return new LocalRecipients(config.localDomains, Object.keys(config.users), aliases, srs);
}
