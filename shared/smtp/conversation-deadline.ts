/**
 * conversation-deadline — how long an outbound SMTP server may take to answer (Postfix smtp(8)'s
 * smtp_*_timeout): a deadline per reply, so that a tarpit trickling a never-ending reply a byte
 * at a time is given up, and the stage it stalled in, in Postfix's words, for the log.
 */
import type { ExternalLogger, LogEntry } from "nodemailer/lib/shared";

/**
 * A message body may take the command timeout plus one second per KiB: slower than any uplink
 * shared by parallel deliveries, yet finite for a server that reads a byte a second. (Postfix
 * bounds each write by smtp_data_xfer_timeout instead, and nothing bounds the whole.)
 */
const BODY_BYTES_PER_SECOND = 1024;
/** The reply to the end of DATA may take twice the command timeout (Postfix: smtp_data_done_timeout 600 s vs 300 s). */
const FINAL_REPLY_FACTOR = 2;

const GREETING = "receiving the initial server greeting";
const DATA = "sending DATA command";
const BODY = "sending message body";
const END_OF_DATA = "sending end of data -- message may be sent more than once";

/** The stage a command opens, as Postfix names it in "conversation with … timed out while …". */
const STAGES: Record<string, string> = {
  EHLO: "performing the EHLO handshake",
  HELO: "performing the HELO handshake",
  LHLO: "performing the LHLO handshake",
  STARTTLS: "receiving the STARTTLS response",
  // Postfix counts AUTH into the EHLO handshake; naming it tells the administrator more.
  AUTH: "performing the AUTH handshake",
  MAIL: "sending MAIL FROM",
  RCPT: "sending RCPT TO",
  DATA,
  RSET: "sending RSET probe",
  QUIT: "sending QUIT",
};

/**
 * Follows one SMTP session through nodemailer's transaction log (its `logger` with
 * `transactionLog`: each command sent, each complete reply received) and calls `expire` with
 * the stage when a reply is not complete in time. Each reply awaited gets the command timeout
 * from the moment it is due; the message body and the final reply get their own limits.
 */
export class ConversationDeadline {
  /** Stages of the commands sent whose replies are still to come, oldest first. */
  private readonly awaited: string[] = [];
  private greeted = false;
  private phase: "commands" | "body" | "final" = "commands";
  private bodySize = 0;
  private last = GREETING;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    /** Seconds a reply may take. */
    private readonly commandTimeout: number,
    private readonly expire: (stage: string) => void,
  ) {}

  /**
   * For nodemailer's `logger` option, with `transactionLog` on. nodemailer hands its other levels
   * to `debug` too; only the transaction lines (`tnx` client and server) count.
   */
  readonly logger: ExternalLogger = {
    debug: (entry?: LogEntry, message?: string) => {
      if (entry?.tnx === "client") this.sent(String(message ?? ""));
      else if (entry?.tnx === "server") this.received(String(message ?? ""));
    },
  };

  /** Where the conversation is, in Postfix's words (`sending RCPT TO`). */
  get stage(): string {
    if (!this.greeted) return GREETING;
    if (this.phase === "body") return BODY;
    if (this.phase === "final") return END_OF_DATA;
    return this.awaited[0] ?? this.last;
  }

  /** A transaction begins: once DATA is answered, a body of `size` bytes follows. */
  expectBody(size: number): void {
    this.bodySize = size;
  }

  /** The whole body is handed to the connection: the reply to the end of DATA is awaited. */
  bodySent(): void {
    if (this.phase !== "body") return;
    this.phase = "final";
    this.arm(this.commandTimeout * FINAL_REPLY_FACTOR);
  }

  /** The exchange in flight is over (answered or failed): nothing is awaited any more. */
  idle(): void {
    this.awaited.length = 0;
    this.phase = "commands";
    this.disarm();
  }

  /** The session is over: no deadline from now on. */
  stop(): void {
    this.stopped = true;
    this.idle();
  }

  private sent(command: string): void {
    const verb = /^\S*/.exec(command)![0].toUpperCase();
    // AUTH continuation lines (and nodemailer's lone "." after an empty DATA) continue the stage before.
    this.last = STAGES[verb] ?? this.last;
    this.awaited.push(this.last);
    if (this.awaited.length === 1) this.arm(this.commandTimeout);
  }

  private received(reply: string): void {
    if (!this.greeted) {
      this.greeted = true;
      return;
    }
    if (this.phase === "final") {
      this.phase = "commands";
      this.disarm();
      return;
    }
    const answered = this.awaited.shift();
    // 354, or 250 from the servers that answer DATA so (nodemailer accepts both).
    if (answered === DATA && /^[23]/.test(reply)) {
      this.phase = "body";
      this.arm(this.commandTimeout + this.bodySize / BODY_BYTES_PER_SECOND);
    } else if (this.awaited.length > 0) this.arm(this.commandTimeout);
    else this.disarm();
  }

  private arm(seconds: number): void {
    this.disarm();
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.expire(this.stage);
    }, seconds * 1000);
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
