/**
 * smtp-dialog — a bare SMTP client for tests that must send exactly the bytes they mean
 * (relay tricks, malformed commands, pipelining): one command, one parsed reply.
 */
import { connect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";

/** One SMTP reply: code, and the text lines without the code prefix. */
export interface SmtpReply {
  code: number;
  lines: string[];
  /** The whole reply as received, lines joined with \n. */
  text: string;
}

/** A raw SMTP conversation over TCP (or TLS after `starttls()`). */
export class SmtpDialog {
  private buffer = "";
  private waiting: ((r: SmtpReply | Error) => void) | null = null;
  private replies: SmtpReply[] = [];
  private closed = false;

  private constructor(private socket: Socket | TLSSocket) {
    this.attach(socket);
  }

  /** Connect and read the greeting. */
  static async open(port: number, host = "127.0.0.1", options: { implicitTls?: boolean } = {}): Promise<{ dialog: SmtpDialog; greeting: SmtpReply }> {
    const socket = options.implicitTls ? tlsConnect({ port, host, rejectUnauthorized: false }) : connect({ port, host });
    await new Promise<void>((resolve, reject) => {
      socket.once(options.implicitTls ? "secureConnect" : "connect", () => resolve());
      socket.once("error", reject);
    });
    const dialog = new SmtpDialog(socket);
    const greeting = await dialog.read();
    return { dialog, greeting };
  }

  private attach(socket: Socket | TLSSocket): void {
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      this.buffer += d;
      this.parse();
    });
    socket.on("close", () => {
      this.closed = true;
      this.waiting?.(new Error("connection closed"));
      this.waiting = null;
    });
    socket.on("error", () => {});
  }

  private parse(): void {
    for (;;) {
      const lines: string[] = [];
      let pos = 0;
      let complete: SmtpReply | null = null;
      for (;;) {
        const nl = this.buffer.indexOf("\n", pos);
        if (nl === -1) break;
        const line = this.buffer.slice(pos, nl).replace(/\r$/, "");
        pos = nl + 1;
        lines.push(line);
        if (/^\d{3} /.test(line) || /^\d{3}$/.test(line)) {
          complete = { code: Number(line.slice(0, 3)), lines: lines.map((l) => l.slice(4)), text: lines.join("\n") };
          break;
        }
      }
      if (!complete) return;
      this.buffer = this.buffer.slice(pos);
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = null;
        w(complete);
      } else this.replies.push(complete);
    }
  }

  /** The next reply. */
  read(ms = 10_000): Promise<SmtpReply> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closed) return Promise.reject(new Error("connection closed"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        reject(new Error("timeout waiting for SMTP reply"));
      }, ms);
      this.waiting = (r) => {
        clearTimeout(timer);
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
    });
  }

  /** Send raw bytes (no CRLF added). */
  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Send one command line and read its reply. */
  async command(line: string): Promise<SmtpReply> {
    this.write(line + "\r\n");
    return this.read();
  }

  /** STARTTLS and upgrade the socket; resolves with the 220 reply. */
  async starttls(): Promise<SmtpReply> {
    const r = await this.command("STARTTLS");
    if (r.code !== 220) return r;
    const plain = this.socket;
    plain.removeAllListeners("data");
    const secure = tlsConnect({ socket: plain, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", () => resolve());
      secure.once("error", reject);
    });
    this.socket = secure;
    this.attach(secure);
    return r;
  }

  /** Whether the server has closed the connection. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Send DATA, the message (dot-stuffed here) and the final dot; returns the reply to the dot. */
  async data(message: string | Buffer): Promise<SmtpReply> {
    const r = await this.command("DATA");
    if (r.code !== 354) return r;
    const text = Buffer.isBuffer(message) ? message.toString("latin1") : message;
    const stuffed = text.replace(/^\./gm, "..");
    this.write(Buffer.from(stuffed + (stuffed.endsWith("\r\n") ? "" : "\r\n") + ".\r\n", "latin1"));
    return this.read(60_000);
  }

  /** QUIT and close. */
  async quit(): Promise<void> {
    if (!this.closed) {
      await this.command("QUIT").catch(() => undefined);
      this.socket.destroy();
    }
  }

  /** Close without QUIT. */
  destroy(): void {
    this.socket.destroy();
  }
}
