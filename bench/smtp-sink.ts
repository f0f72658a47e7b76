/**
 * smtp-sink — the benchmark's receiving end (like Postfix's smtp-sink): accepts every message,
 * discards it and counts, so end-to-end rates can be measured without Postfix.
 */
import type { SMTPServer } from "smtp-server";
import { HookedSMTPServer } from "../agent/smtpd/smtp-server-hooks.js";

/** A running sink on 127.0.0.1. */
export interface Sink {
  port: number;
  /** Messages received so far. */
  count(): number;
  /** Resolves when `n` messages have been received in total, or rejects after `ms`. */
  waitFor(n: number, ms: number): Promise<void>;
  close(): Promise<void>;
}

/** Start a sink on a free port. */
export async function startSink(): Promise<Sink> {
  let count = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  const server: SMTPServer = new HookedSMTPServer(
    {
      logger: false,
      disabledCommands: ["AUTH", "STARTTLS"],
      authOptional: true,
      disableReverseLookup: true,
      size: 64 * 1024 * 1024,
      onData(stream, _session, cb) {
        stream.resume();
        stream.on("end", () => {
          count++;
          for (const w of waiters.filter((w) => w.n <= count)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve();
          }
          cb(null, `2.0.0 Ok: sink ${count}`);
        });
      },
    },
    { greetingDelay: 0, authWithoutTls: () => true, onCommand: () => null },
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    port: (server.server.address() as { port: number }).port,
    count: () => count,
    waitFor(n, ms) {
      if (count >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`sink received ${count} of ${n} messages within ${ms} ms`)), ms);
        waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) });
      });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
