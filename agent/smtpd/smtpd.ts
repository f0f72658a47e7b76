/**
 * smtpd — one SMTP listener (Postfix smtpd(8)): greets, negotiates TLS and AUTH, applies relay
 * control and limits, and streams each accepted message through cleanup into the queue.
 * A 250 is sent only after the queue file is fsynced and in active/.
 */
import { statfs } from "node:fs/promises";
import type { Readable, Writable } from "node:stream";
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerSession, SMTPServerOptions } from "smtp-server";
import { parseAddress, senderMatches } from "../../shared/address.js";
import type { Envelope, DsnNotify } from "../../shared/envelope.js";
import type { MailLog } from "../../shared/log.js";
import { formatHostPort, isLoopback, type NetworkList } from "../../shared/net.js";
import { rfc5322Date } from "../../shared/rfc5322-date.js";
import { Cleanup, type CleanupFault } from "../cleanup/cleanup.js";
import type { AgentConfig, ListenerConfig } from "../config.js";
import { IncomingQueueFile, type QueuedMessage } from "../queue/queue-file.js";
import type { Spool } from "../queue/spool.js";
import type { TlsIdentity } from "../tls/certificate.js";
import type { Anvil } from "./anvil.js";
import { receivedHeader } from "./received.js";
import { checkCredentials, SASL_MECHANISMS } from "./sasl.js";
import { HookedSMTPServer, type HookedConnection } from "./smtp-server-hooks.js";

/** What smtpd asks about local recipients (Postfix local_recipient_maps). */
export interface LocalRecipientTable {
  isLocalDomain(domain: string): boolean;
  /** Does this local part name a mailbox, alias or SRS return address here? */
  isLocalRecipient(localPart: string, domain: string): boolean;
}

/** What one listener needs from the rest of the agent. */
export interface SmtpdContext {
  config: AgentConfig;
  listener: ListenerConfig;
  spool: Spool;
  log: MailLog;
  tls: TlsIdentity;
  anvil: Anvil;
  trustedNetworks: NetworkList;
  recipients: LocalRecipientTable;
  /** A message was committed to active/. */
  queued(message: QueuedMessage): void;
}

/** What smtpd remembers of one connection besides smtp-server's session. */
interface ClientState {
  name: string;
  /** Relay permission by network: submission listener and a client in trustedNetworks. */
  trusted: boolean;
  counts: Map<string, number>;
  minuteStart: number;
  minuteCommands: number;
  saslMethod?: string;
  tls?: { protocol: string; cipher: string; bits?: number };
}

/** A refusal with its full reply text (enhanced status code first). */
function reply(code: number, text: string): Error & { responseCode: number } {
  return Object.assign(new Error(text), { responseCode: code });
}

const STORAGE_ERRORS = new Set(["ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EIO", "EMFILE", "ENFILE"]);

/** One SMTP listener. */
export class Smtpd {
  private readonly server: HookedSMTPServer;
  private readonly clients = new Map<string, ClientState>();
  private readonly inflight = new Set<Promise<unknown>>();
  private freeSpace = { checked: 0, ok: true };

  constructor(private readonly ctx: SmtpdContext) {
    const { config, listener } = ctx;
    const options: SMTPServerOptions = {
      name: config.hostname,
      banner: "homerelay",
      secure: listener.tls === "implicit",
      disabledCommands: [...(listener.tls === "none" ? ["STARTTLS"] : []), ...(listener.role === "mx" ? ["AUTH"] : [])],
      key: ctx.tls.key,
      cert: ctx.tls.cert,
      authMethods: [...SASL_MECHANISMS],
      hideENHANCEDSTATUSCODES: false,
      hideDSN: false,
      authOptional: !listener.requireAuth,
      // smtpd decides per client (hooks): loopback may AUTH in clear, everyone else after STARTTLS.
      allowInsecureAuth: true,
      size: config.limits.messageSize,
      maxRecipients: config.limits.recipients,
      maxCommandLength: config.limits.commandLength,
      maxClients: config.limits.clients,
      socketTimeout: config.limits.idleTimeout * 1000,
      closeTimeout: config.limits.dataTimeout * 1000,
      disableReverseLookup: true,
      logger: false,
      onConnect: (session, cb) => this.onConnect(session, cb),
      onSecure: (socket, session, cb) => this.onSecure(socket as import("node:tls").TLSSocket, session, cb),
      onAuth: (auth, session, cb) => {
        this.onAuth(auth, session).then((user) => cb(null, { user }), (err: Error) => cb(err));
      },
      onMailFrom: (address, session, cb) => {
        this.onMailFrom(address, session).then(() => cb(), (err: Error) => cb(err));
      },
      onRcptTo: (address, session, cb) => cb(this.onRcptTo(address, session) ?? undefined),
      onData: (stream, session, cb) => {
        const work = this.onData(stream, session).then((id) => cb(null, `2.0.0 Ok: queued as ${id}`), (err: Error) => cb(err));
        this.inflight.add(work);
        void work.finally(() => this.inflight.delete(work));
      },
      onClose: (session) => this.onClose(session),
    };
    this.server = new HookedSMTPServer(options, {
      greetingDelay: listener.greetingDelay,
      authWithoutTls: (address) => isLoopback(address),
      onCommand: (connection, verb) => this.onCommand(connection, verb),
      commandDeadline: { ms: config.limits.idleTimeout * 1000, expired: (connection) => this.onCommandTimeout(connection) },
    });
    this.server.on("error", (err: Error) => ctx.log.warn(`smtpd ${formatHostPort(listener.listen)}: ${err.message}`));
  }

  /** Start listening; resolves once the socket is bound. */
  listen(): Promise<void> {
    const { host, port } = this.ctx.listener.listen;
    return new Promise((resolve, reject) => {
      const net = this.server.server;
      net.once("error", reject);
      this.server.listen(port, host, () => {
        net.off("error", reject);
        resolve();
      });
    });
  }

  /** The bound address (useful when the configuration asked for port 0). */
  address(): { address: string; port: number } {
    return this.server.server.address() as { address: string; port: number };
  }

  /**
   * Stop accepting, let messages in DATA finish (up to the DATA timeout), then tell the
   * remaining clients `421` and close.
   */
  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.allSettled([...this.inflight]);
    for (const c of this.server.live.values()) c.refuse(421, `4.3.2 ${this.ctx.config.hostname} Service shutting down, closing transmission channel`);
    await closed;
  }

  private state(session: { id: string }): ClientState {
    const s = this.clients.get(session.id);
    if (!s) throw new Error(`smtpd: no state for session ${session.id}`);
    return s;
  }

  private onConnect(session: SMTPServerSession, cb: (err?: Error) => void): void {
    const { config, listener, anvil, log } = this.ctx;
    const name = `unknown[${session.remoteAddress}]`;
    log.info(`connect from ${name}`);
    const state: ClientState = {
      name,
      trusted: listener.role === "submission" && this.ctx.trustedNetworks.contains(session.remoteAddress),
      counts: new Map(),
      minuteStart: Date.now(),
      minuteCommands: 0,
    };
    this.clients.set(session.id, state);
    const { concurrent, perMinute } = anvil.connect(session.remoteAddress);
    if (concurrent > config.limits.clientsPerAddress) {
      log.warn(`Connection concurrency limit exceeded: ${concurrent} from ${name} for service ${listener.role}`);
      return cb(reply(421, `4.7.0 ${config.hostname} Error: too many connections from ${session.remoteAddress}`));
    }
    if (config.limits.connectionRate > 0 && perMinute > config.limits.connectionRate) {
      log.warn(`Connection rate limit exceeded: ${perMinute} from ${name} for service ${listener.role}`);
      return cb(reply(421, `4.7.0 ${config.hostname} Error: too many connections from ${session.remoteAddress}`));
    }
    cb();
  }

  private onSecure(socket: import("node:tls").TLSSocket, session: SMTPServerSession, cb: (err?: Error) => void): void {
    const state = this.state(session);
    const cipher = socket.getCipher();
    const protocol = socket.getProtocol() ?? "TLS";
    state.tls = { protocol, cipher: cipher.standardName ?? cipher.name, bits: (cipher as { bits?: number }).bits };
    const bits = state.tls.bits ? ` (${state.tls.bits}/${state.tls.bits} bits)` : "";
    this.ctx.log.info(`Anonymous TLS connection established from ${state.name}: ${protocol} with cipher ${state.tls.cipher}${bits}`);
    cb();
  }

  private onCommand(connection: HookedConnection, verb: string): { code: number; message: string } | null {
    const state = this.clients.get(connection.id);
    if (!state) return null;
    state.counts.set(verb, (state.counts.get(verb) ?? 0) + 1);
    const limit = this.ctx.config.limits.commandRate;
    const now = Date.now();
    if (now - state.minuteStart >= 60_000) {
      state.minuteStart = now;
      state.minuteCommands = 0;
    }
    if (limit > 0 && ++state.minuteCommands > limit) {
      this.ctx.log.warn(`Command rate limit exceeded: ${state.minuteCommands} from ${state.name} for service ${this.ctx.listener.role}`);
      return { code: 421, message: `4.7.0 ${this.ctx.config.hostname} Error: too many commands, slow down` };
    }
    return null;
  }

  /** A command line trickled in for longer than limits.idleTimeout (Postfix smtpd_per_record_deadline). */
  private onCommandTimeout(connection: HookedConnection): void {
    const name = this.clients.get(connection.id)?.name ?? `unknown[${connection.remoteAddress}]`;
    this.ctx.log.warn(`timeout after ${connection.where} from ${name}`);
    connection.refuse(421, `4.4.2 ${this.ctx.config.hostname} Error: timeout exceeded`);
  }

  private async onAuth(auth: import("smtp-server").SMTPServerAuthentication, session: SMTPServerSession): Promise<string> {
    const { anvil, log, config } = this.ctx;
    const state = this.state(session);
    const delay = anvil.authDelay(session.remoteAddress);
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    const user = await checkCredentials(auth, config.users);
    if (user === null) {
      const failures = anvil.authFailed(session.remoteAddress);
      log.warn(`${state.name}: SASL ${auth.method} authentication failed: authentication failure${failures >= 3 ? ` (${failures} failures, replies slowed down)` : ""}`);
      throw reply(535, "5.7.8 Error: authentication failed: authentication failure");
    }
    anvil.authSucceeded(session.remoteAddress);
    state.saslMethod = auth.method;
    return user;
  }

  private async onMailFrom(address: SMTPServerAddress, session: SMTPServerSession): Promise<void> {
    const { config } = this.ctx;
    const state = this.state(session);
    const sender = address.address;
    if (sender !== "" && !parseAddress(sender).ok) {
      throw this.reject(state, session, "MAIL", 501, `5.1.7 <${sender}>: Sender address rejected: bad address syntax`, sender);
    }
    if (!(await this.enoughSpace())) {
      throw this.reject(state, session, "MAIL", 452, "4.3.1 Insufficient system storage", sender);
    }
    const user = typeof session.user === "string" ? session.user : undefined;
    if (user !== undefined && sender !== "") {
      const account = config.users[user];
      const patterns = account?.senders ?? config.localDomains.map((d) => `${user}@${d}`);
      if (!patterns.some((p) => senderMatches(sender, p))) {
        throw this.reject(state, session, "MAIL", 553, `5.7.1 <${sender}>: Sender address rejected: not owned by user ${user}`, sender);
      }
    }
  }

  private onRcptTo(address: SMTPServerAddress, session: SMTPServerSession): Error | null {
    const { recipients } = this.ctx;
    const state = this.state(session);
    // RFC 5321 section 4.5.1: a bare <postmaster> must be accepted; qualify it so every later step reads it alike.
    if (address.address.toLowerCase() === "postmaster") address.address = `postmaster@${this.ctx.config.localDomains[0]}`;
    const rcpt = address.address;
    const sender = session.envelope.mailFrom ? session.envelope.mailFrom.address : "";
    const parsed = parseAddress(rcpt);
    if (!parsed.ok) return this.reject(state, session, "RCPT", 501, `5.1.3 <${rcpt}>: Recipient address rejected: bad address syntax`, sender, rcpt);
    const { mailbox, flaws } = parsed;
    const local = !flaws.includes("address-literal") && recipients.isLocalDomain(mailbox.domain);
    const mayRelay = state.trusted || typeof session.user === "string";
    // Strangers may only reach local mailboxes, and only by addresses that cannot be read two ways.
    if (!mayRelay && (!local || flaws.length > 0)) {
      return this.reject(state, session, "RCPT", 554, `5.7.1 <${rcpt}>: Relay access denied`, sender, rcpt);
    }
    if (local && (flaws.length > 0 || !recipients.isLocalRecipient(mailbox.local, mailbox.domain))) {
      return this.reject(state, session, "RCPT", 550, `5.1.1 <${rcpt}>: Recipient address rejected: User unknown in local recipient table`, sender, rcpt);
    }
    return null;
  }

  private async onData(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    const { config, listener, spool, log } = this.ctx;
    const state = this.state(session);
    const envelope = envelopeOf(session);
    const user = typeof session.user === "string" ? session.user : undefined;
    let file: IncomingQueueFile;
    try {
      file = await IncomingQueueFile.create(spool, {
        envelope,
        client: { address: session.remoteAddress, hostname: "unknown", helo: session.hostNameAppearsAs || "", listener: `${listener.role}/${formatHostPort(listener.listen)}` },
        ...(state.tls ? { tls: { protocol: state.tls.protocol, cipher: state.tls.cipher } } : {}),
        ...(user ? { saslUser: user } : {}),
        origin: "smtp",
      });
    } catch (err) {
      stream.resume();
      throw this.storageFailure(err as NodeJS.ErrnoException, state);
    }
    const id = file.id;
    const now = new Date(file.record.arrival);
    const cleanup = new Cleanup({
      received: receivedHeader({
        helo: session.hostNameAppearsAs || "",
        clientHostname: "unknown",
        clientAddress: session.remoteAddress,
        hostname: config.hostname,
        queueId: id,
        esmtp: (session.openingCommand || "").toUpperCase() !== "HELO",
        ...(state.tls ? { tls: state.tls } : {}),
        ...(user ? { saslUser: user } : {}),
        ...(envelope.recipients.length === 1 ? { recipient: envelope.recipients[0]!.address } : {}),
        date: now,
      }),
      complete: listener.role === "submission" ? { messageId: `<${id}@${config.hostname}>`, date: rfc5322Date(now) } : null,
      hopLimit: config.limits.hopCount,
      lineLength: config.limits.lineLength,
      headerSize: 1024 * 1024,
    });
    const timer = setTimeout(() => {
      log.warn(`${id}: timeout after DATA (${cleanup.size} bytes) from ${state.name}`);
      this.server.live.get(session.id)?.refuse(421, `4.4.2 ${config.hostname} Error: timeout exceeded`);
    }, config.limits.dataTimeout * 1000);
    try {
      await receive(stream, cleanup, file.content());
    } catch (err) {
      await file.abort();
      const e = err as NodeJS.ErrnoException;
      if (e.code === "ECONNECTION" || e.code === "ERR_STREAM_PREMATURE_CLOSE") {
        log.info(`${id}: lost connection after DATA (${cleanup.size} bytes) from ${state.name}`);
        throw reply(421, "4.4.2 Lost connection");
      }
      throw this.storageFailure(e, state, id);
    } finally {
      clearTimeout(timer);
    }
    const refusal = stream.sizeExceeded
      ? reply(552, `5.3.4 Message size exceeds fixed limit`)
      : cleanup.fault
        ? faultReply(cleanup.fault, config.limits.hopCount)
        : null;
    if (refusal) {
      await file.abort();
      log.info(`${id}: reject: DATA from ${state.name}: ${refusal.responseCode} ${refusal.message}; from=<${envelope.sender}> proto=ESMTP helo=<${session.hostNameAppearsAs}>`);
      throw refusal;
    }
    let queued: QueuedMessage;
    try {
      queued = await file.commit();
    } catch (err) {
      await file.abort();
      throw this.storageFailure(err as NodeJS.ErrnoException, state, id);
    }
    log.info(`${id}: client=${state.name}${state.saslMethod ? `, sasl_method=${state.saslMethod}, sasl_username=${user}` : ""}`);
    log.info(`${id}: from=<${envelope.sender}>, size=${cleanup.size}, nrcpt=${envelope.recipients.length} (queue active)`, {
      queueId: id,
      from: envelope.sender,
      size: cleanup.size,
      nrcpt: envelope.recipients.length,
    });
    this.ctx.queued(queued);
    return id;
  }

  private onClose(session: SMTPServerSession): void {
    const state = this.clients.get(session.id);
    if (!state) return;
    this.clients.delete(session.id);
    this.ctx.anvil.disconnect(session.remoteAddress);
    let total = 0;
    const parts: string[] = [];
    for (const [verb, n] of state.counts) {
      total += n;
      parts.push(`${verb.toLowerCase()}=${n}`);
    }
    this.ctx.log.info(`disconnect from ${state.name}${parts.length ? " " + parts.join(" ") : ""} commands=${total}`);
  }

  /** Log a refusal the way Postfix does (NOQUEUE: reject: …) and return the error to answer with. */
  private reject(state: ClientState, session: SMTPServerSession, stage: string, code: number, text: string, sender: string, rcpt?: string) {
    const to = rcpt !== undefined ? ` to=<${rcpt}>` : "";
    this.ctx.log.info(`NOQUEUE: reject: ${stage} from ${state.name}: ${code} ${text}; from=<${sender}>${to} proto=ESMTP helo=<${session.hostNameAppearsAs || ""}>`);
    return reply(code, text);
  }

  private storageFailure(err: NodeJS.ErrnoException, state: ClientState, id = "NOQUEUE") {
    this.ctx.log.warn(`${id}: queue file write error from ${state.name}: ${err.code ?? "error"}: ${err.message}`);
    this.freeSpace.checked = 0;
    if (err.code && STORAGE_ERRORS.has(err.code)) return reply(452, "4.3.1 Insufficient system storage");
    return reply(451, "4.3.0 Error: queue file write error");
  }

  /** Postfix queue_minfree: refuse MAIL early when the spool's file system is nearly full. */
  private async enoughSpace(): Promise<boolean> {
    const now = Date.now();
    if (now - this.freeSpace.checked < 1000) return this.freeSpace.ok;
    try {
      const s = await statfs(this.ctx.spool.root);
      this.freeSpace = { checked: now, ok: s.bavail * s.bsize >= this.ctx.config.limits.queueMinFree };
    } catch {
      this.freeSpace = { checked: now, ok: false };
    }
    if (!this.freeSpace.ok) this.ctx.log.warn(`not enough free space in ${this.ctx.spool.root} (queueMinFree ${this.ctx.config.limits.queueMinFree} bytes)`);
    return this.freeSpace.ok;
  }
}

function faultReply(fault: CleanupFault, hopLimit: number) {
  switch (fault) {
    case "loop":
      return reply(554, `5.4.6 Too many hops (more than ${hopLimit} Received: headers): mail forwarding loop`);
    case "line-too-long":
      return reply(552, "5.6.0 Message line too long (RFC 5322 limit is 998 characters)");
    case "header-too-large":
      return reply(552, "5.6.0 Message header too large");
  }
}

/** The envelope of the current transaction, with its DSN and SMTPUTF8 parameters. */
function envelopeOf(session: SMTPServerSession): Envelope {
  const env = session.envelope as SMTPServerSession["envelope"] & {
    dsn?: { ret?: string; envid?: string };
    smtpUtf8?: boolean;
    bodyType?: string;
  };
  const from = env.mailFrom ? env.mailFrom.address : "";
  const envelope: Envelope = {
    sender: from,
    recipients: env.rcptTo.map((r) => {
      const dsn = (r as SMTPServerAddress & { dsn?: { notify?: string[]; orcpt?: string } }).dsn;
      return {
        address: r.address,
        ...(dsn?.notify ? { notify: dsn.notify as DsnNotify[] } : {}),
        ...(dsn?.orcpt ? { orcpt: dsn.orcpt } : {}),
      };
    }),
  };
  if (env.dsn?.ret === "FULL" || env.dsn?.ret === "HDRS") envelope.ret = env.dsn.ret;
  if (env.dsn?.envid) envelope.envid = env.dsn.envid;
  if (env.smtpUtf8) envelope.smtputf8 = true;
  if (env.bodyType) envelope.body = env.bodyType.toUpperCase() === "8BITMIME" ? "8BITMIME" : "7BIT";
  return envelope;
}

/**
 * Pipe the client's DATA through cleanup into the queue file. Resolves when all of it is written;
 * on a write error, rejects only after the rest of the DATA has been read, so the client still
 * gets its reply on this connection.
 */
function receive(source: Readable, cleanup: Cleanup, sink: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    let failure: Error | null = null;
    let sourceEnded = false;
    let sinkFinished = false;
    const settle = () => {
      if (failure && (sourceEnded || source.destroyed)) reject(failure);
      else if (!failure && sourceEnded && sinkFinished) resolve();
    };
    const fail = (err: Error) => {
      if (failure) return;
      failure = err;
      source.unpipe(cleanup);
      cleanup.unpipe(sink);
      if (!source.destroyed) source.resume();
      settle();
    };
    source.once("end", () => {
      sourceEnded = true;
      settle();
    });
    source.once("error", fail);
    cleanup.once("error", fail);
    sink.once("error", fail);
    sink.once("finish", () => {
      sinkFinished = true;
      settle();
    });
    source.pipe(cleanup).pipe(sink);
  });
}
