/**
 * smtp-client — one outbound SMTP connection (Postfix smtp(8)'s session layer) over nodemailer's
 * SMTPConnection: connect, EHLO, STARTTLS per policy, AUTH, and transactions whose outcome is
 * told per recipient in Postfix's words (`host mx.example.org[192.0.2.1] said: 550 … (in reply
 * to RCPT TO command)`), so the queue manager can deliver, retry or bounce each one.
 */
import { isIP } from "node:net";
import type { Readable } from "node:stream";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import type { Envelope, EnvelopeRecipient } from "../envelope.js";

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

type NodemailerError = Error & { code?: string; response?: string; responseCode?: number; command?: string; recipient?: string; rejectedErrors?: NodemailerError[] };

/** An open, greeted (and possibly encrypted and authenticated) SMTP session. */
export class SmtpClient {
  private broken = false;

  private constructor(
    private readonly conn: SMTPConnection,
    readonly target: SmtpTarget,
  ) {
    conn.on("error", () => (this.broken = true));
    conn.on("end", () => (this.broken = true));
  }

  /** `name[address]:port` as in Postfix's `relay=` field. */
  get relay(): string {
    return `${this.target.hostname}[${this.target.address}]:${this.target.port}`;
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
    const conn = new SMTPConnection({
      host: target.address,
      port: target.port,
      name: target.helo,
      secure: target.tls === "implicit",
      ignoreTLS: target.tls === "none",
      // Not requireTLS: nodemailer would then send STARTTLS even when it is not offered; the check below
      // turns "not offered" into Postfix's 4.7.4 deferral instead. Offered STARTTLS is always used.
      requireTLS: false,
      ...(isIP(target.hostname) ? {} : { servername: target.hostname }),
      connectionTimeout: target.connectTimeout * 1000,
      greetingTimeout: target.commandTimeout * 1000,
      socketTimeout: target.commandTimeout * 1000,
      allowInternalNetworkInterfaces: true,
      tls: {
        rejectUnauthorized: target.tls === "verify" || (target.tls === "implicit" && target.verifyImplicit === true),
        // SNI carries names only (RFC 6066); an address would be refused by Node.
        ...(isIP(target.hostname) ? {} : { servername: target.hostname }),
        ...(target.ca ? { ca: target.ca } : {}),
        minVersion: "TLSv1.2",
      },
    });
    const where = `${target.hostname}[${target.address}]:${target.port}`;
    await new Promise<void>((resolve, reject) => {
      conn.once("error", (err: NodemailerError) => reject(sessionError(err, where)));
      conn.connect(() => resolve());
    }).catch((err) => {
      conn.close();
      throw err;
    });
    if ((target.tls === "encrypt" || target.tls === "verify") && !conn.secure) {
      conn.close();
      throw new SmtpSessionError(`TLS is required, but was not offered by host ${where}`, undefined, "4.7.4", false);
    }
    const client = new SmtpClient(conn, target);
    if (target.auth) {
      const auth = target.auth;
      await new Promise<void>((resolve, reject) => {
        conn.login({ user: auth.user, pass: auth.pass, method: auth.method }, (err) => (err ? reject(sessionError(err as NodemailerError, where)) : resolve()));
      }).catch((err) => {
        conn.close();
        throw err;
      });
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
    const host = `${this.target.hostname}[${this.target.address}]`;
    try {
      const info = await new Promise<SMTPConnection.SentMessageInfo>((resolve, reject) => {
        this.conn.send(
          { from: envelope.sender === "" ? false : envelope.sender, to: addresses, size, ...(dsn ? { dsn } : {}), use8BitMime: envelope.body === "8BITMIME" },
          content,
          (err, result) => (err ? reject(err) : resolve(result!)),
        );
      });
      const dsnOffered = (info.ehlo ?? []).some((line) => /^DSN\b/i.test(line));
      const rejected = new Map((info.rejectedErrors ?? []).map((e) => [(e as NodemailerError).recipient ?? "", e as NodemailerError]));
      return recipients.map((r) => {
        const err = rejected.get(r.address);
        if (err) return replyOutcome(r.address, relay, host, err.response ?? err.message, "RCPT TO");
        return { recipient: r.address, status: "sent", dsn: enhancedOf(info.response, "2.0.0"), relay, detail: info.response, dsnOffered };
      });
    } catch (error) {
      content.destroy?.();
      const err = error as NodemailerError;
      this.broken ||= !err.response;
      const perRecipient = new Map((err.rejectedErrors ?? this.rejectedSoFar()).map((e) => [e.recipient ?? "", e]));
      return recipients.map((r) => {
        const own = perRecipient.get(r.address);
        if (own?.response) return replyOutcome(r.address, relay, host, own.response, "RCPT TO");
        if (err.response) return replyOutcome(r.address, relay, host, err.response, commandName(err.command));
        // No reply: the connection broke mid-transaction. Never assume delivery.
        return { recipient: r.address, status: "deferred", dsn: "4.4.2", relay, detail: `lost connection with ${host} while sending message (${err.message})`, unreachable: true };
      });
    }
  }

  /** RSET, to reuse the session for another message. */
  reset(): Promise<void> {
    return new Promise((resolve, reject) => this.conn.reset((err) => (err ? reject(err) : resolve())));
  }

  /** QUIT and close. */
  close(): void {
    if (this.conn.destroyed) return;
    try {
      this.conn.quit();
    } catch {
      this.conn.close();
    }
    setTimeout(() => this.conn.close(), 1000).unref();
  }

  private rejectedSoFar(): NodemailerError[] {
    // After a failed DATA the envelope still knows which recipients RCPT refused.
    return ((this.conn as unknown as { _envelope?: { rejectedErrors?: NodemailerError[] } })._envelope?.rejectedErrors ?? []) as NodemailerError[];
  }
}

/** The outcome for a server reply: 2xx sent, 4xx deferred, 5xx bounced. */
function replyOutcome(recipient: string, relay: string, host: string, response: string, command: string): RecipientOutcome {
  const code = Number(response.slice(0, 3));
  const text = response.replace(/\r?\n/g, " ").trim();
  const detail = `host ${host} said: ${text} (in reply to ${command} command)`;
  if (code >= 200 && code < 300) return { recipient, status: "sent", dsn: enhancedOf(response, "2.0.0"), relay, detail: text };
  const reply = response.replace(/\r\n/g, "\n").trim();
  if (code >= 500) return { recipient, status: "bounced", dsn: enhancedOf(response, "5.0.0"), relay, detail, reply };
  return { recipient, status: "deferred", dsn: enhancedOf(response, "4.0.0"), relay, detail, reply };
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

/** Turn a nodemailer connect/greeting/TLS/AUTH error into a session error in Postfix's words. */
function sessionError(err: NodemailerError, where: string): SmtpSessionError {
  if (err.response && err.responseCode) {
    const text = err.response.replace(/\r?\n/g, " ").trim();
    const stage = err.command ? ` (in reply to ${err.command.split(" ")[0]} command)` : "";
    const reply = err.response.replace(/\r\n/g, "\n").trim();
    return new SmtpSessionError(`host ${where.replace(/:\d+$/, "")} said: ${text}${stage}`, err.responseCode, enhancedOf(err.response, err.responseCode >= 500 ? "5.0.0" : "4.0.0"), false, false, reply);
  }
  const reason = /ECONNREFUSED/.test(err.message) ? "Connection refused" : /ETIMEDOUT|timed? ?out/i.test(err.message) || err.code === "ETIMEDOUT" ? "Connection timed out" : err.message;
  const tls = err.code === "ETLS" || /TLS|SSL|certificate/i.test(err.message);
  // The host answered, so a failed handshake does not mean the network is down.
  if (tls) return new SmtpSessionError(`TLS handshake with ${where} failed: ${oneLine(err.message)}`, undefined, "4.7.5", false, true);
  return new SmtpSessionError(`connect to ${where}: ${oneLine(reason)}`, undefined, "4.4.1", true);
}

/** Text from a library or a peer on one log line: control characters (OpenSSL's trailing newline) become spaces. */
function oneLine(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]+/g, " ").trim();
}
