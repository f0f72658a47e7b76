/**
 * smtp-server-hooks — the few places where homerelay's smtpd must act inside smtp-server's
 * connection, which the library has no option for: the greeting pause (fixed at 100 ms there),
 * replies that carry their own enhanced status code, AUTH only after TLS off loopback, and a
 * per-command callback for counting and rate limits. Acts on the ESM copy that the server itself
 * loads (`smtp-server/lib/smtp-connection.js`); smtp-server is pinned, and tests fail if it changes.
 */
import { SMTPServer, type SMTPServerOptions } from "smtp-server";
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import type { Socket } from "node:net";

/** Per-listener behaviour that smtp-server cannot be configured for. */
export interface ConnectionHooks {
  /** Milliseconds between accepting the connection and sending the greeting (early-talker check). */
  greetingDelay: number;
  /** May this client use AUTH without TLS? (loopback only, in homerelay) */
  authWithoutTls(remoteAddress: string): boolean;
  /** Called for every command line; return a reply to send and close the connection instead. */
  onCommand(connection: HookedConnection, verb: string): { code: number; message: string } | null;
}

/** What the hooks may look at of a live connection. */
export interface HookedConnection {
  readonly id: string;
  readonly remoteAddress: string;
  readonly secure: boolean;
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
  _server: SMTPServer;
  _setListeners(callback: () => void): void;
  connectionReady(next?: () => void): void;
  send(code: number, data?: string | string[], context?: string | false): void;
  close(): void;
  handler_AUTH(command: Buffer, callback: () => void): void;
  _onCommand(command: Buffer, callback?: () => void): void;
  init(): void;
}
const proto = SMTPConnection.prototype as unknown as ConnectionInternals;
for (const member of ["_setListeners", "connectionReady", "send", "close", "handler_AUTH", "_onCommand", "init"] as const) {
  if (typeof proto[member] !== "function") {
    throw new Error(`smtp-server changed: SMTPConnection.${member} is missing; homerelay's smtpd hooks need updating`);
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
      refuse: (code, message) => {
        c.send(code, message);
        c.close();
      },
    };
    this.live.set(c.id, view);
    c.once("close", () => this.live.delete(c.id));

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
      if (this._ready) {
        const verb = command.toString("latin1").split(" ", 1)[0]!.toUpperCase();
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
