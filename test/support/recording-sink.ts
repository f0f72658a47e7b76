/**
 * recording-sink — the receiving end of the reliability tests: an SMTP server on loopback that
 * keeps the Message-ID and the agent's queue ID of every message it takes, and lets a test act at
 * the moments a delivery passes (MAIL FROM, the end of DATA before and after the reply) or answer
 * a message with a temporary failure instead.
 */
import type { Socket } from "node:net";
import type { SMTPServer, SMTPServerSession } from "smtp-server";
import { HookedSMTPServer } from "../../agent/smtpd/smtp-server-hooks.js";

/** A message the sink took: recorded at the end of DATA, when a real MTA has it. */
export interface SinkMessage {
  messageId: string;
  /** The agent's queue ID, from the Received: field it added at intake (`(none)` when absent). */
  queueId: string;
  /** The envelope recipients. */
  rcptTo: string[];
  raw: Buffer;
}

/** What the sink does at the end of DATA: take the message (250) or defer it (451). */
export type SinkVerdict = "accept" | "defer";

/** Moments a test may act on; each is called synchronously, so a kill lands right there. */
export interface SinkHooks {
  /** MAIL FROM arrived: a delivery is in flight. */
  mail?(): void;
  /** The whole message arrived; the verdict decides the reply. */
  verdict?(message: SinkMessage): SinkVerdict;
  /** The reply to the end of DATA was just written (250 or 451). */
  replied?(message: SinkMessage, verdict: SinkVerdict): void;
}

const RECEIVED_ID = /\(homerelay\) with E?SMTPS?A? id ([0-9A-Z]{16})/;
const MESSAGE_ID = /^Message-ID:[ \t]*(<[^>\r\n]+>)\r?$/im;

/** A recording SMTP sink on 127.0.0.1 (no TLS, no AUTH). */
export class RecordingSink {
  /** Every message taken, in order (duplicates included). */
  readonly received: SinkMessage[] = [];
  /** What the test does at each moment; none set: every message is taken. */
  hooks: SinkHooks = {};
  private readonly sockets = new Set<Socket>();
  private readonly waiters = new Set<() => void>();
  private readonly server: SMTPServer;

  private constructor(readonly port: number, server: SMTPServer) {
    this.server = server;
  }

  /** Start on a free port. */
  static async start(): Promise<RecordingSink> {
    let sink!: RecordingSink;
    // No greeting pause (smtp-server's own is 100 ms): the cloud opens a session per message.
    const server: SMTPServer = new HookedSMTPServer({
      logger: false,
      disabledCommands: ["AUTH", "STARTTLS"],
      authOptional: true,
      disableReverseLookup: true,
      hideDSN: false,
      size: 64 * 1024 * 1024,
      closeTimeout: 100,
      onMailFrom: (_address, _session, callback) => {
        sink.hooks.mail?.();
        callback();
      },
      onData: (stream, session, callback) => sink.take(stream, session, callback),
    }, { greetingDelay: 0, authWithoutTls: () => true, onCommand: () => null });
    // Resets by killed agents are the point of these tests; nothing else is expected.
    server.on("error", () => {});
    const bound = await new Promise<number>((resolve, reject) => {
      server.server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve((server.server.address() as { port: number }).port));
    });
    sink = new RecordingSink(bound, server);
    server.server.on("connection", (socket: Socket) => {
      sink.sockets.add(socket);
      socket.once("close", () => sink.sockets.delete(socket));
    });
    return sink;
  }

  /** The number of copies received of each Message-ID. */
  copies(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const m of this.received) counts.set(m.messageId, (counts.get(m.messageId) ?? 0) + 1);
    return counts;
  }

  /** Resolve once `done()` holds (checked after every message taken), or reject after `ms`. */
  until(what: string, done: () => boolean, ms: number): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!done()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out after ${ms} ms waiting until ${what} (${this.received.length} messages received)`));
      }, ms);
      this.waiters.add(check);
    });
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private take(stream: NodeJS.ReadableStream, session: SMTPServerSession, callback: (err?: Error | null, message?: string) => void): void {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      const raw = Buffer.concat(chunks);
      const head = raw.subarray(0, Math.min(raw.length, 64 * 1024)).toString("latin1");
      const message: SinkMessage = {
        messageId: MESSAGE_ID.exec(head)?.[1] ?? "(none)",
        queueId: RECEIVED_ID.exec(head)?.[1] ?? "(none)",
        rcptTo: session.envelope.rcptTo.map((r) => r.address),
        raw,
      };
      const verdict = this.hooks.verdict?.(message) ?? "accept";
      if (verdict === "accept") {
        this.received.push(message);
        callback(null, `2.0.0 Ok: queued as sink-${this.received.length}`);
      } else {
        callback(Object.assign(new Error("4.3.0 Try again later"), { responseCode: 451 }));
      }
      this.hooks.replied?.(message, verdict);
      for (const w of [...this.waiters]) w();
    });
  }
}
