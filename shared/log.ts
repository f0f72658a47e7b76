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

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const PREFIX: Record<LogLevel, string> = { debug: "", info: "", warn: "warning: ", error: "error: " };

/** Create the mail log for the component `name`. */
export function createMailLog(options: LogOptions, name = "master"): MailLog {
  const program = options.program ?? "homerelay";
  // Asynchronous writes: lines of one event-loop turn go out in one write(2), off the mail path.
  const sink = options.destination ?? pino.destination({ fd: 2, sync: false });
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
