/**
 * http-submission — the local submission API as a service of the agent: listens on `http.listen`
 * in the master process (next to the queue manager that takes what it queues), takes a reloaded
 * configuration (new tokens, limits; a new address means a new listener) and stops with the agent.
 * While it listens, `<spool>/private/http.address` says where, for `homerelay send` (the
 * configuration may say port 0 or 0.0.0.0); its absence means the API is not running.
 */
import { rename, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { MailLog } from "../../shared/log.js";
import { clientAddressOf, listenHttp, type HttpListener } from "../../shared/http-listener.js";
import { formatHostPort, isLoopback, type HostPort } from "../../shared/net.js";
import type { AgentConfig, HttpConfig } from "../config.js";
import type { QueuedMessage } from "../queue/queue-file.js";
import type { Spool } from "../queue/spool.js";
import type { LocalRecipientTable } from "../smtpd/smtpd.js";
import { ApiTokens } from "./api-tokens.js";
import { HttpIntake } from "./http-intake.js";
import { createSubmissionApp, type ApiSettings } from "./submission-api.js";
import type { SubmissionJournal } from "./submission-journal.js";

/** The file in the spool's private directory that holds the API's bound `host:port` while it runs. */
export function httpAddressFile(privateDir: string): string {
  return join(privateDir, "http.address");
}

/** What the service needs from the agent. */
export interface HttpSubmissionOptions {
  spool: Spool;
  journal: SubmissionJournal;
  log: MailLog;
  /** The local recipient table of the running configuration. */
  recipients(): LocalRecipientTable;
  queued(message: QueuedMessage): void;
  version: string;
}

/** A configuration with an `http:` section, and its tokens read. */
export interface HttpSettings {
  config: AgentConfig & { http: HttpConfig };
  tokens: ApiTokens;
}

/** The running API. */
export class HttpSubmission {
  private constructor(
    private readonly o: HttpSubmissionOptions,
    private settings: HttpSettings,
    private listener: HttpListener,
    private readonly fetch: (request: Request) => Response | Promise<Response>,
  ) {
    this.listening = settings.config.http.listen;
  }

  /** The configured address the open listener was opened on (the settings may name another after a failed reload). */
  private listening: HostPort;

  /** Read the tokens of `config` (making token files); throws SecretFileError for an unusable one. */
  static async prepare(config: AgentConfig & { http: HttpConfig }, log: MailLog): Promise<HttpSettings> {
    return { config, tokens: await ApiTokens.load(config.http.tokens, log) };
  }

  /** Start listening on `settings.config.http.listen`. */
  static async start(o: HttpSubmissionOptions, settings: HttpSettings): Promise<HttpSubmission> {
    let service: HttpSubmission | undefined;
    const app = createSubmissionApp({
      settings: () => service!.current(),
      intake: new HttpIntake({ spool: o.spool, journal: o.journal, log: o.log }),
      journal: o.journal,
      spool: o.spool,
      log: o.log,
      queued: o.queued,
      clientAddress: clientAddressOf,
      version: o.version,
    });
    service = new HttpSubmission(o, settings, await open(app.fetch, settings.config.http.listen, o.log), app.fetch);
    await service.publishAddress();
    return service;
  }

  /** The bound address. */
  address(): HostPort {
    return { host: this.listener.host, port: this.listener.port };
  }

  /** Take a reloaded configuration; requests in flight finish under the old one. */
  async reconfigure(settings: HttpSettings): Promise<void> {
    // Tokens and limits at once: a token revoked in the new file is refused from now on.
    this.settings = settings;
    const before = this.listening;
    const after = settings.config.http.listen;
    if (before.host === after.host && before.port === after.port) return;
    let next: HttpListener;
    try {
      next = await open(this.fetch, after, this.o.log);
    } catch {
      // The same port on another host address: free it first, and take it back if the new one fails.
      await this.listener.close();
      try {
        next = await open(this.fetch, after, this.o.log);
      } catch (err) {
        this.listener = await open(this.fetch, before, this.o.log);
        throw err;
      }
    }
    await this.listener.close();
    this.listener = next;
    this.listening = after;
    await this.publishAddress();
  }

  /** Stop accepting; requests in flight finish. */
  async stop(): Promise<void> {
    await unlink(httpAddressFile(this.o.spool.privateDir)).catch(() => {});
    await this.listener.close();
  }

  /** Write the bound address where `homerelay send` looks for it (whole, by rename). */
  private async publishAddress(): Promise<void> {
    const file = httpAddressFile(this.o.spool.privateDir);
    await writeFile(`${file}.tmp`, formatHostPort(this.address()) + "\n", { mode: 0o600 });
    await rename(`${file}.tmp`, file);
  }

  private current(): ApiSettings {
    const { config, tokens } = this.settings;
    return { config, tokens, recipients: this.o.recipients(), listener: `http/${formatHostPort(this.address())}` };
  }
}

async function open(fetch: (request: Request) => Response | Promise<Response>, listen: HostPort, log: MailLog): Promise<HttpListener> {
  const listener = await listenHttp(fetch, listen);
  const bound = formatHostPort({ host: listener.host, port: listener.port });
  log.info(`listening on ${bound} (http submission)`);
  // Bearer tokens travel in clear over plain HTTP: off loopback, a TLS proxy belongs in front.
  if (!isLoopback(listener.host)) log.warn(`http submission on ${bound} is not on loopback: tokens and mail cross the network in clear unless a TLS proxy is in front`);
  return listener;
}
