/**
 * shutdown — how both halves end on SIGTERM or SIGINT, as daemons under systemd should: log the
 * signal, stop accepting, let work in progress finish, write out the log, exit 0 (1 if stopping failed).
 */
import type { MailLog } from "./log.js";

/** Call `stop` once on the first SIGTERM or SIGINT, then exit. */
export function stopOnSignals(stop: () => Promise<void>, log: MailLog): void {
  let stopping = false;
  const onSignal = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`terminating on signal ${signal}`);
    stop().then(
      () => {
        log.flush();
        process.exit(0);
      },
      (err: Error) => {
        log.error(`stop: ${err.message}`);
        log.flush();
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
}
