/**
 * smtp-client — one outbound SMTP connection (Postfix smtp(8)'s session layer) over nodemailer's
 * SMTPConnection: connect, EHLO, STARTTLS per policy, AUTH, and transactions whose outcome is
 * told per recipient in Postfix's words (`host mx.example.org[192.0.2.1] said: 550 … (in reply
 * to RCPT TO command)`), so the queue manager can deliver, retry or bounce each one. Every reply
 * has a deadline, and the server's words are quoted cut short.
 */
import { isIP } from "node:net";
import type { Readable } from "node:stream";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import type { Envelope, EnvelopeRecipient } from "../envelope.js";
import { ConversationDeadline } from "./conversation-deadline.js";

/** How much of a server's reply a log line quotes (and with it the status log and DSNs). */
const DETAIL_REPLY_CHARS = 512;
/** How much of a refusal is kept for judging why the server refused. */
const KEPT_REPLY_CHARS = 2048;

/** Where and how to connect. */
export interface SmtpTarget {
  /** Address (or name) to connect to. */
  address: string;
  port: number;
  /** The server's name, for logs, SNI and certificate checks (the MX or smarthost name). */
  hostname: string;
  /** `may`: STARTTLS when offered; `encrypt`: STARTTLS required; `verify`: required and the certificate must match `hostname`; `implicit`: TLS from the first byte; `none`: never. */
  tls: "may" | "encrypt" | "verify" | "implicit" | "none";
  /** With `implicit`: check the certificate against `hostname` too (always checked with `verify`). */
  verifyImplicit?: boolean;
  /** Trusted CAs for `verify` (default: the system store). */
  ca?: string | Buffer | (string | Buffer)[];
  /** Our EHLO name: the configured hostname, never `localhost`. */
  helo: string;
  auth?: { user: string; pass: string; method: "PLAIN" | "LOGIN" | "CRAM-MD5" };
  connectTimeout: number;
  commandTimeout: number;
}

/** What happened to one recipient in one attempt. */
export interface RecipientOutcome {
  recipient: string;
  status: "sent" | "deferred" | "bounced";
  /** RFC 3463 enhanced status code. */
  dsn: string;
  /** `mx.example.org[192.0.2.1]:25`, or `none` when nothing was reached. */
  relay: string;
  /** The server's reply or the reason, as Postfix logs it. */
  detail: string;
  /** A failure to reach any server (connection or DNS), as opposed to a server's answer. */
  unreachable?: boolean;
  /** The receiving server offered DSN (RFC 3461), so it will send success notices itself. */
  dsnOffered?: boolean;
  /** A 4xx/5xx reply as the server sent it (lines joined by LF), for judging why it refused. */
  reply?: string;
}

/** A failure of the connection or session as a whole (before any recipient was answered). */
export class SmtpSessionError extends Error {
  constructor(
    message: string,
    /** 4xx/5xx reply code, when the server answered; absent for network failures. */
    readonly replyCode: number | undefined,
    readonly enhanced: string,
    /** True when the server was never reached or went away: try the next host. */
    readonly unreachable: boolean,
    /** The TLS handshake failed (for `may`, retry in plaintext). */
    readonly tlsFailure = false,
    /** The server's refusal as sent (lines joined by LF), when it answered. */
    readonly reply?: string,
  ) {
    super(message);
    this.name = "SmtpSessionError";
  }

  get temporary(): boolean {
    return this.replyCode === undefined || this.replyCode < 500;
  }
}

type NodemailerError = Error & {
  code?: string;
  /** The system error's code (ECONNREFUSED) when nodemailer set its own (ESOCKET). */
  originalCode?: string;
  /** With ETIMEDOUT: CONNECT_TIMEOUT, GREETING_TIMEOUT, UPGRADE_TIMEOUT (TLS handshake) or SOCKET_TIMEOUT (silence). */
  timeoutType?: string;
  response?: string;
  responseCode?: number;
  command?: string;
  recipient?: string;
  rejectedErrors?: NodemailerError[];
};

/** An open, greeted (and possibly encrypted and authenticated) SMTP session. */
export class SmtpClient {
  private broken = false;
  /** The last transaction ended with the server's reply to the message (or none was started). */
  private finished = true;
  private readonly conn: SMTPConnection;
  private readonly deadline: ConversationDeadline;
  /** Fails the exchange in flight when the server does not answer in time. */
  private abandon: ((error: SmtpSessionError) => void) | undefined;

  private constructor(readonly target: SmtpTarget) {
    this.deadline = new ConversationDeadline(target.commandTimeout, (stage) => {
      this.broken = true;
      this.abandon?.(timedOut(this.host, stage));
      this.conn.close();
    });
    this.conn = new SMTPConnection({
      host: target.address,
      port: target.port,
      name: target.helo,
      secure: target.tls === "implicit",
      ignoreTLS: target.tls === "none",
      // Not requireTLS: nodemailer would then send STARTTLS even when it is not offered; open()
      // turns "not offered" into Postfix's 4.7.4 deferral instead. Offered STARTTLS is always used.
      requireTLS: false,
      ...(isIP(target.hostname) ? {} : { servername: target.hostname }),
      connectionTimeout: target.connectTimeout * 1000,
      greetingTimeout: target.commandTimeout * 1000,
      // Silence only; a server that trickles its reply is stopped by the conversation deadline.
      socketTimeout: target.commandTimeout * 1000,
      allowInternalNetworkInterfaces: true,
      logger: this.deadline.logger,
      transactionLog: true,
      tls: {
        rejectUnauthorized: target.tls === "verify" || (target.tls === "implicit" && target.verifyImplicit === true),
        // SNI carries names only (RFC 6066); an address would be refused by Node.
        ...(isIP(target.hostname) ? {} : { servername: target.hostname }),
        ...(target.ca ? { ca: target.ca } : {}),
        minVersion: "TLSv1.2",
      },
    });
    this.conn.on("error", () => (this.broken = true));
    this.conn.on("end", () => (this.broken = true));
  }

  /** `name[address]:port` as in Postfix's `relay=` field. */
  get relay(): string {
    return `${this.host}:${this.target.port}`;
  }

  /** `name[address]`, as Postfix names the server in its messages. */
  private get host(): string {
    return `${this.target.hostname}[${this.target.address}]`;
  }

  /** The session is encrypted. */
  get secure(): boolean {
    return this.conn.secure;
  }

  /** Still open and fit for another transaction. */
  get usable(): boolean {
    return !this.broken && !this.conn.destroyed;
  }

  /** Connect and get the session ready. Rejects with SmtpSessionError. */
  static async open(target: SmtpTarget): Promise<SmtpClient> {
    const client = new SmtpClient(target);
    const conn = client.conn;
    const where = client.relay;
    const failed = (err: unknown): never => {
      client.deadline.stop();
      conn.close();
      throw err instanceof SmtpSessionError ? err : sessionError(err as NodemailerError, where);
    };
    await client
      .exchange<void>((done) => {
        conn.once("error", done);
        // Called with an error when the server closes before its greeting (no 'error' then).
        conn.connect((err) => {
          conn.off("error", done);
          done(err ?? null);
        });
      })
      .catch(failed);
    if ((target.tls === "encrypt" || target.tls === "verify") && !conn.secure) {
      client.deadline.stop();
      conn.close();
      throw new SmtpSessionError(`TLS is required, but was not offered by host ${where}`, undefined, "4.7.4", false);
    }
    if (target.auth) {
      const auth = target.auth;
      await client.exchange<boolean>((done) => conn.login({ user: auth.user, pass: auth.pass, method: auth.method }, done)).catch(failed);
    }
    return client;
  }

  /**
   * One transaction: MAIL, RCPT for each recipient (all sharing the same DSN parameters, which
   * nodemailer applies per transaction), DATA. Resolves with one outcome per recipient.
   */
  async send(envelope: Envelope, recipients: EnvelopeRecipient[], content: Readable, size: number): Promise<RecipientOutcome[]> {
    const first = recipients[0];
    const dsn =
      envelope.ret || envelope.envid || first?.notify || first?.orcpt
        ? {
            ...(envelope.ret ? { ret: envelope.ret } : {}),
            ...(envelope.envid ? { envid: envelope.envid } : {}),
            ...(first?.notify ? { notify: first.notify } : {}),
            ...(first?.orcpt ? { orcpt: first.orcpt } : {}),
          }
        : undefined;
    const addresses = recipients.map((r) => r.address);
    const relay = this.relay;
    const host = this.host;
    // One message may take several transactions on this session (NOTIFY groups): one cut short
    // (every recipient refused, DATA refused) leaves the server inside it, and the next MAIL would get 503.
    if (!this.finished) {
      try {
        await this.readyForNext();
      } catch (error) {
        this.broken = true;
        const why = resetFailure(host, error);
        return recipients.map((r) => ({ recipient: r.address, status: "deferred", relay, ...why }));
      }
    }
    try {
      // Once the server has taken the last byte of the body, its final reply has a deadline of its own.
      this.deadline.expectBody(size);
      content.once("end", () => this.deadline.bodySent());
      this.finished = false;
      const info = await this.exchange<SMTPConnection.SentMessageInfo>((done) =>
        this.conn.send(
          { from: envelope.sender === "" ? false : envelope.sender, to: addresses, size, ...(dsn ? { dsn } : {}), use8BitMime: envelope.body === "8BITMIME" },
          content,
          done,
        ),
      );
      this.finished = true;
      const dsnOffered = (info.ehlo ?? []).some((line) => /^DSN\b/i.test(line));
      const rejected = new Map((info.rejectedErrors ?? []).map((e) => [(e as NodemailerError).recipient ?? "", e as NodemailerError]));
      return recipients.map((r) => {
        const err = rejected.get(r.address);
        if (err) return replyOutcome(r.address, relay, host, err.response ?? err.message, "RCPT TO");
        return { recipient: r.address, status: "sent", dsn: enhancedOf(info.response, "2.0.0"), relay, detail: replyLine(info.response), dsnOffered };
      });
    } catch (error) {
      content.destroy?.();
      // The server stopped answering: given up (so the connection is gone), though it was reached.
      const timeout = error instanceof SmtpSessionError ? error : undefined;
      const err = error as NodemailerError;
      this.broken ||= !err.response;
      const perRecipient = new Map((err.rejectedErrors ?? this.rejectedSoFar()).map((e) => [e.recipient ?? "", e]));
      return recipients.map((r) => {
        const own = perRecipient.get(r.address);
        if (own?.response) return replyOutcome(r.address, relay, host, own.response, "RCPT TO");
        if (err.response) return replyOutcome(r.address, relay, host, err.response, commandName(err.command));
        if (timeout) return { recipient: r.address, status: "deferred", dsn: timeout.enhanced, relay, detail: timeout.message };
        // No reply: the connection broke mid-transaction. Never assume delivery.
        return { recipient: r.address, status: "deferred", dsn: "4.4.2", relay, detail: `lost connection with ${host} while sending message (${err.message})`, unreachable: true };
      });
    }
  }

  /**
   * Make the session ready for another message: RSET when the last transaction was cut short. After
   * its reply to the message the server has reset itself (RFC 5321 section 4.1.1.4), which is why
   * nodemailer's own pool sends no RSET then either; a round trip per message saved.
   */
  async readyForNext(): Promise<void> {
    if (this.finished) return;
    await this.exchange<boolean>((done) => {
      // nodemailer never calls back for a reset the server hung up on: the hang-up is the answer.
      const hungUp = () => done(Object.assign(new Error("Connection closed unexpectedly"), { code: "ECONNECTION" }));
      this.conn.once("end", hungUp);
      this.conn.reset((err, ok) => {
        this.conn.off("end", hungUp);
        done(err, ok);
      });
    });
    this.finished = true;
  }

  /** QUIT and close. */
  close(): void {
    this.deadline.stop();
    if (this.conn.destroyed) return;
    try {
      this.conn.quit();
    } catch {
      this.conn.close();
    }
    setTimeout(() => this.conn.close(), 1000).unref();
  }

  /**
   * One exchange with the server through nodemailer. When the server does not answer in time
   * (the conversation deadline, or nodemailer's own greeting and socket timeouts), it fails with
   * Postfix's "conversation with … timed out while …".
   */
  private exchange<T>(start: (done: (err: NodemailerError | null, result?: T) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.abandon = reject;
      start((err, result) => {
        if (!err) resolve(result as T);
        else if (err.code === "ETIMEDOUT" && (err.timeoutType === "GREETING_TIMEOUT" || err.timeoutType === "SOCKET_TIMEOUT")) reject(timedOut(this.host, this.deadline.stage));
        else reject(err);
      });
    }).finally(() => {
      this.abandon = undefined;
      this.deadline.idle();
    });
  }

  private rejectedSoFar(): NodemailerError[] {
    // After a failed DATA the envelope still knows which recipients RCPT refused.
    return ((this.conn as unknown as { _envelope?: { rejectedErrors?: NodemailerError[] } })._envelope?.rejectedErrors ?? []) as NodemailerError[];
  }
}

/** The outcome for a server reply: 2xx sent, 4xx deferred, 5xx bounced. */
function replyOutcome(recipient: string, relay: string, host: string, response: string, command: string): RecipientOutcome {
  const code = Number(response.slice(0, 3));
  const text = replyLine(response);
  const detail = `host ${host} said: ${text} (in reply to ${command} command)`;
  if (code >= 200 && code < 300) return { recipient, status: "sent", dsn: enhancedOf(response, "2.0.0"), relay, detail: text };
  const reply = keptReply(response);
  if (code >= 500) return { recipient, status: "bounced", dsn: enhancedOf(response, "5.0.0"), relay, detail, reply };
  return { recipient, status: "deferred", dsn: enhancedOf(response, "4.0.0"), relay, detail, reply };
}

/**
 * Why the session could not be reset for the next transaction, as a deferral: the recipients were
 * not refused, so even a 5xx reply to RSET only defers them (its class turned to 4, as Postfix's
 * soft_bounce does), and they go out on another session.
 */
function resetFailure(host: string, error: unknown): { dsn: string; detail: string } {
  if (error instanceof SmtpSessionError) return { dsn: error.enhanced, detail: error.message };
  const err = error as NodemailerError;
  if (err.response && isRefusal(err.response)) {
    return { dsn: temporaryDsn(enhancedOf(err.response, "4.0.0")), detail: `host ${host} said: ${replyLine(err.response)} (in reply to RSET command)` };
  }
  return { dsn: "4.4.2", detail: `lost connection with ${host} while resetting the session (${err.message})` };
}

/** A 5.x.x status as the deferral it becomes when the recipients were not what was refused (4.x.x). */
export function temporaryDsn(dsn: string): string {
  return dsn.startsWith("5") ? `4${dsn.slice(1)}` : dsn;
}

/**
 * The response is a 4xx or 5xx reply. nodemailer takes any leading digits for a reply code
 * ("7Èv…" is 7), so its responseCode alone does not tell.
 */
function isRefusal(response: string): boolean {
  return /^[45]\d\d(?:[ -]|$)/.test(response);
}

function commandName(command: string | undefined): string {
  if (!command) return "end of DATA";
  if (/^MAIL/i.test(command)) return "MAIL FROM";
  if (/^RCPT/i.test(command)) return "RCPT TO";
  if (/^DATA/i.test(command)) return "DATA";
  return command.split(" ")[0]!.toUpperCase() === "API" ? "end of DATA" : command;
}

/** The enhanced status code in a reply (`550 5.1.1 …` → 5.1.1), or `fallback` with the reply's class. */
export function enhancedOf(response: string, fallback: string): string {
  const m = /^\d{3}[ -](\d\.\d{1,3}\.\d{1,3})\b/.exec(response);
  if (m && m[1]![0] === response[0]) return m[1]!;
  const cls = response[0];
  return cls === "2" || cls === "4" || cls === "5" ? `${cls}${fallback.slice(1)}` : fallback;
}

/** Turn a nodemailer connect/TLS/AUTH error into a session error in Postfix's words (timeouts: see timedOut). */
function sessionError(err: NodemailerError, where: string): SmtpSessionError {
  if (err.response && err.responseCode && isRefusal(err.response)) {
    const text = replyLine(err.response);
    const stage = err.command ? ` (in reply to ${err.command.split(" ")[0]} command)` : "";
    return new SmtpSessionError(`host ${where.replace(/:\d+$/, "")} said: ${text}${stage}`, err.responseCode, enhancedOf(err.response, err.responseCode >= 500 ? "5.0.0" : "4.0.0"), false, false, keptReply(err.response));
  }
  // Only nodemailer's and Node's own words are searched: the peer's (an unparseable reply) may say anything.
  const own = err.response ? "" : err.message;
  const system = err.originalCode ?? err.code;
  const tls = err.code === "ETLS" || /TLS|SSL|certificate/i.test(own);
  // The host answered, so a failed handshake does not mean the network is down.
  if (tls) return new SmtpSessionError(`TLS handshake with ${where} failed: ${oneLine(quotingPeer(err))}`, undefined, "4.7.5", false, true);
  const reason =
    system === "ECONNREFUSED" || /ECONNREFUSED/.test(own)
      ? "Connection refused"
      : system === "ETIMEDOUT" || /ETIMEDOUT|timed? ?out/i.test(own)
        ? "Connection timed out"
        : quotingPeer(err);
  return new SmtpSessionError(`connect to ${where}: ${oneLine(reason)}`, undefined, "4.4.1", true);
}

/** The server stopped answering in the middle of `stage` (Postfix's words); it was reached, so not a network failure. */
function timedOut(host: string, stage: string): SmtpSessionError {
  return new SmtpSessionError(`conversation with ${host} timed out while ${stage}`, undefined, "4.4.2", false);
}

/**
 * nodemailer's message with the peer's unparseable reply in it, quoted once and cut short
 * (it puts it in twice: "Invalid greeting. response=R: R").
 */
function quotingPeer(err: NodemailerError): string {
  const response = err.response;
  if (!response) return err.message;
  const appended = `: ${response}`;
  const message = err.message.endsWith(appended) && err.message.slice(0, -appended.length).includes(response) ? err.message.slice(0, -appended.length) : err.message;
  return message.split(response).join(clipped(oneLine(response), DETAIL_REPLY_CHARS));
}

/** A server's reply as a log line quotes it: on one line, cut short. */
function replyLine(response: string): string {
  return clipped(oneLine(response), DETAIL_REPLY_CHARS);
}

/** A refusal as kept for judging why the server refused: its lines, its first 2 KiB. */
function keptReply(response: string): string {
  return clipped(response.replace(/\r\n/g, "\n").trim(), KEPT_REPLY_CHARS);
}

/** `text` cut to `max` characters with a marker, never between the halves of a surrogate pair. */
function clipped(text: string, max: number): string {
  if (text.length <= max) return text;
  const end = /[\uD800-\uDBFF]/.test(text[max - 1]!) ? max - 1 : max;
  return `${text.slice(0, end)}...`;
}

/** Text from a library or a peer on one log line: control characters (OpenSSL's trailing newline) become spaces. */
function oneLine(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]+/g, " ").trim();
}
