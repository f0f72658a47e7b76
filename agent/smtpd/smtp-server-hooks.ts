/**
 * smtp-server-hooks — the few places where homerelay's smtpd must act inside smtp-server's
 * connection, which the library has no option for: the greeting pause (fixed at 100 ms there),
 * replies that carry their own enhanced status code, AUTH only after TLS off loopback, a
 * per-command callback for counting and rate limits, and a deadline per command line (Postfix
 * smtpd_per_record_deadline). Acts on the ESM copies that the server itself loads
 * (`smtp-server/lib/smtp-connection.js`, `…/smtp-stream.js`); smtp-server is pinned, and tests fail if it changes.
 */
import { SMTPServer, type SMTPServerOptions } from "smtp-server";
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import { SMTPStream } from "smtp-server/lib/smtp-stream.js";
import type { Socket } from "node:net";

/** Per-listener behaviour that smtp-server cannot be configured for. */
export interface ConnectionHooks {
  /** Milliseconds between accepting the connection and sending the greeting (early-talker check). */
  greetingDelay: number;
  /** May this client use AUTH without TLS? (loopback only, in homerelay) */
  authWithoutTls(remoteAddress: string): boolean;
  /** Called for every command (not for AUTH's continuation lines); return a reply to send and close the connection instead. */
  onCommand(connection: HookedConnection, verb: string): { code: number; message: string } | null;
  /**
   * How long a command line may take from its first byte to its end (milliseconds), and what to do
   * when one takes longer: answer and close. The idle timeout alone lets a client that trickles a
   * byte now and then hold its connection slot for as long as it likes. Without it, only that applies.
   */
  commandDeadline?: { ms: number; expired(connection: HookedConnection): void };
}

/** What the hooks may look at of a live connection. */
export interface HookedConnection {
  readonly id: string;
  readonly remoteAddress: string;
  readonly secure: boolean;
  /** Postfix's "where" for "timeout after …": the client's last command, CONNECT before any, END-OF-MESSAGE after a message. */
  readonly where: string;
  /** Send a reply and close the connection. */
  refuse(code: number, message: string): void;
}

/** A reply text that starts with an enhanced status code (RFC 3463) keeps it, not smtp-server's guess. */
const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3}(\s|$)/;

// The library's own members this module relies on; checked at load so an upgrade fails loudly.
interface ConnectionInternals {
  id: string;
  remoteAddress: string;
  secure: boolean;
  _ready: boolean;
  _closing: boolean;
  _closed: boolean;
  _nextHandler: unknown;
  _parser: SMTPStream | false;
  _server: SMTPServer;
  _setListeners(callback: () => void): void;
  connectionReady(next?: () => void): void;
  send(code: number, data?: string | string[], context?: string | false): void;
  close(): void;
  handler_AUTH(command: Buffer, callback: () => void): void;
  _onCommand(command: Buffer, callback?: () => void): void;
  _createParser(): SMTPStream;
  _onClose(): void;
  init(): void;
}
const proto = SMTPConnection.prototype as unknown as ConnectionInternals;
for (const member of ["_setListeners", "connectionReady", "send", "close", "handler_AUTH", "_onCommand", "_createParser", "_onClose", "init"] as const) {
  if (typeof proto[member] !== "function") {
    throw new Error(`smtp-server changed: SMTPConnection.${member} is missing; homerelay's smtpd hooks need updating`);
  }
}
for (const member of ["_write", "_endDataMode"] as const) {
  if (typeof SMTPStream.prototype[member] !== "function") {
    throw new Error(`smtp-server changed: SMTPStream.${member} is missing; homerelay's smtpd hooks need updating`);
  }
}

/** smtp-server with homerelay's per-connection hooks. */
export class HookedSMTPServer extends SMTPServer {
  /** Connections by id, so the session callbacks (which only get the session) can reach them. */
  readonly live = new Map<string, HookedConnection>();

  constructor(
    options: SMTPServerOptions,
    private readonly hooks: ConnectionHooks,
  ) {
    super(options);
  }

  /** Replaces SMTPServer#connect (same body) to install the hooks before the connection starts. */
  override connect(socket: Socket, socketOptions?: unknown): void {
    const connection = new SMTPConnection(this, socket, socketOptions as never) as unknown as ConnectionInternals & SMTPConnection;
    const internals = this as unknown as { connections: Set<unknown>; _onError(err: Error): void; _onClientConnect(data: unknown): void };
    internals.connections.add(connection);
    connection.on("error", (err: Error) => internals._onError(err));
    connection.on("connect", (data: unknown) => internals._onClientConnect(data));
    this.install(connection);
    connection.init();
  }

  private install(c: ConnectionInternals & SMTPConnection): void {
    const hooks = this.hooks;
    let where = "CONNECT";
    let deadline: NodeJS.Timeout | undefined;
    const view: HookedConnection = {
      get id() {
        return c.id;
      },
      get remoteAddress() {
        return c.remoteAddress;
      },
      get secure() {
        return c.secure;
      },
      get where() {
        return where;
      },
      refuse: (code, message) => {
        c.send(code, message);
        c.close();
      },
    };
    this.live.set(c.id, view);
    // SMTPConnection emits no "close" of its own: its socket's close ends up here.
    const onClose = c._onClose;
    c._onClose = () => {
      clearTimeout(deadline);
      this.live.delete(c.id);
      onClose.call(c);
    };

    // The deadline runs from the first byte of a command line to its end; DATA has its own, in smtpd.
    const commandDeadline = hooks.commandDeadline;
    const watch = (parser: SMTPStream): SMTPStream => {
      const write = parser._write;
      parser._write = function (this: SMTPStream, chunk, encoding, next) {
        if (commandDeadline && !deadline && !this._dataMode && !this.isClosed && chunk.length > 0) {
          deadline = setTimeout(() => {
            deadline = undefined;
            if (!c._closing && !c._closed) commandDeadline.expired(view);
          }, commandDeadline.ms);
          deadline.unref();
        }
        return write.call(this, chunk, encoding, next);
      };
      const endData = parser._endDataMode;
      parser._endDataMode = function (this: SMTPStream, chunk, remainder, callback) {
        where = "END-OF-MESSAGE";
        return endData.call(this, chunk, remainder, callback);
      };
      return parser;
    };
    // STARTTLS gives the TLS session a parser of its own.
    if (c._parser) watch(c._parser);
    const createParser = c._createParser;
    c._createParser = function (this: ConnectionInternals) {
      return watch(createParser.call(this));
    };

    const init = c.init;
    c.init = function (this: ConnectionInternals) {
      if (hooks.greetingDelay === 100) return init.call(this);
      this._setListeners(() => {
        const options = this._server.options as SMTPServerOptions;
        if (options.maxClients && (this._server as unknown as { connections: Set<unknown> }).connections.size > options.maxClients) {
          return this.send(421, `${options.name ?? ""} Too many connected clients, try again in a moment`);
        }
        if (hooks.greetingDelay === 0) return this.connectionReady();
        setTimeout(() => this.connectionReady(), hooks.greetingDelay).unref();
      });
    };

    const send = c.send;
    c.send = function (this: ConnectionInternals, code, data, context) {
      if (typeof data === "string" && ENHANCED.test(data)) return send.call(this, code, data, false);
      // EHLO: hide AUTH until the session is encrypted, unless the client may authenticate in clear.
      if (code === 250 && Array.isArray(data) && !this.secure && !hooks.authWithoutTls(this.remoteAddress)) {
        return send.call(this, code, data.filter((line) => !/^AUTH\b/i.test(line)), context);
      }
      return send.call(this, code, data, context);
    };

    const handleAuth = c.handler_AUTH;
    c.handler_AUTH = function (this: ConnectionInternals, command, callback) {
      if (!this.secure && !hooks.authWithoutTls(this.remoteAddress)) {
        this.send(538, "5.7.11 Encryption required for requested authentication mechanism");
        return callback();
      }
      return handleAuth.call(this, command, callback);
    };

    const onCommand = c._onCommand;
    c._onCommand = function (this: ConnectionInternals, command, callback) {
      // A whole line is in: the client owes nothing until the next line starts.
      clearTimeout(deadline);
      deadline = undefined;
      // A continuation line (an answer to AUTH's 334) is part of the AUTH command, already counted,
      // and carries credentials, which must not reach the log as a command name.
      if (this._ready && !this._nextHandler) {
        const verb = command.toString("latin1").split(" ", 1)[0]!.toUpperCase();
        where = verb;
        const refusal = hooks.onCommand(view, verb);
        if (refusal) {
          this.send(refusal.code, refusal.message);
          this.close();
          return callback?.();
        }
      }
      return onCommand.call(this, command, callback);
    };
  }
}
