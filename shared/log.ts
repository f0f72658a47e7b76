/**
 * log — the mail log. One line per event, in Postfix's wording and layout
 * (`homerelay/smtpd[1234]: connect from unknown[127.0.0.1]`), or JSON lines through pino
 * when a machine reads the log. Fields passed with a line go into the JSON form only.
 */
import { hostname } from "node:os";
import { pino, type Logger as PinoLogger } from "pino";

/** Severity of a log line; Postfix prints `warning:`/`error:` prefixes for these. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Where and how to write the mail log. */
export interface LogOptions {
  format: "text" | "json";
  level: LogLevel;
  /** Defaults to standard error, as daemons under systemd log to the journal. */
  destination?: NodeJS.WritableStream;
  /** Syslog-style program name, e.g. `homerelay`. */
  program?: string;
}

/** A logger for one part of the program (`smtpd`, `qmgr`, `local`, …). */
export interface MailLog {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  /** A logger for another part, writing to the same place. */
  component(name: string): MailLog;
  /** Write out buffered lines now (before exit). */
  flush(): void;
}

/**
 * Octets of log lines gathered for one write(2), and the longest a line waits, ms: a write per
 * line cost a busy cloud relay a tenth of each request's time. A line reaches the terminal 25 ms
 * later at worst, and at once when the process exits or is stopped (kill -9 loses those 25 ms).
 * 4096 is PIPE_BUF: the intake processes share one standard error, and writes up to that size
 * into a pipe are never interleaved with another process's.
 */
const LOG_BUFFER = 4096;
const LOG_DELAY_MS = 25;

/** The gathered logs of this process, written out when it exits (held weakly: tests make many). */
const gathered = new Set<WeakRef<GatheredLines>>();
let exitHook = false;

/**
 * Lines gathered for one synchronous write to standard error: synchronous, so that nothing is
 * still in flight when the process exits, and cheap, since it happens once per batch. Like
 * Postfix's syslog(3), it waits when the reader (the journal) stops reading.
 */
class GatheredLines {
  private readonly out = pino.destination({ fd: 2, sync: true });
  private pending = "";
  private pendingBytes = 0;
  private due: NodeJS.Timeout | null = null;

  constructor() {
    for (const ref of gathered) if (!ref.deref()) gathered.delete(ref);
    gathered.add(new WeakRef(this));
    if (!exitHook) {
      exitHook = true;
      process.once("exit", () => {
        for (const ref of gathered) ref.deref()?.flushSync();
      });
    }
  }

  write(line: string): boolean {
    const bytes = Buffer.byteLength(line);
    if (this.pendingBytes + bytes > LOG_BUFFER) this.flushSync();
    this.pending += line;
    this.pendingBytes += bytes;
    this.due ??= setTimeout(() => this.flushSync(), LOG_DELAY_MS).unref();
    return true;
  }

  flushSync(): void {
    if (this.due) clearTimeout(this.due);
    this.due = null;
    if (this.pending === "") return;
    this.out.write(this.pending);
    this.pending = "";
    this.pendingBytes = 0;
  }
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const PREFIX: Record<LogLevel, string> = { debug: "", info: "", warn: "warning: ", error: "error: " };

/** Create the mail log for the component `name`. */
export function createMailLog(options: LogOptions, name = "master"): MailLog {
  const program = options.program ?? "homerelay";
  // Several lines to one write(2).
  const sink = options.destination ?? new GatheredLines();
  const flush = () => (sink as { flushSync?: () => void }).flushSync?.();
  if (options.format === "json") {
    const root = pino({ level: options.level, base: { pid: process.pid, host: hostname() }, messageKey: "msg" }, sink);
    return jsonLog(root.child({ program: `${program}/${name}` }), root, program, flush);
  }
  const min = RANK[options.level];
  const host = hostname().split(".")[0];
  const make = (component: string): MailLog => {
    const write = (level: LogLevel) => (message: string) => {
      if (RANK[level] < min) return;
      sink.write(`${new Date().toISOString()} ${host} ${program}/${component}[${process.pid}]: ${PREFIX[level]}${message}\n`);
    };
    return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error"), component: make, flush };
  };
  return make(name);
}

function jsonLog(logger: PinoLogger, root: PinoLogger, program: string, flush: () => void): MailLog {
  const write = (level: LogLevel) => (message: string, fields?: Record<string, unknown>) => {
    if (fields) logger[level](fields, message);
    else logger[level](message);
  };
  return {
    debug: write("debug"),
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    component: (name) => jsonLog(root.child({ program: `${program}/${name}` }), root, program, flush),
    flush,
  };
}

/** A log that drops everything, for library use and tests that do not read the log. */
export const silentLog: MailLog = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  component: () => silentLog,
  flush: () => {},
};
