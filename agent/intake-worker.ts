/**
 * intake-worker — an SMTP intake process for `intakeProcesses` > 1 (node:cluster): runs the
 * listeners only, writes accepted mail into the shared spool, and tells the main process, whose
 * queue manager delivers it. Like Postfix's many smtpd processes under one qmgr.
 */
import type { MailLog } from "../shared/log.js";
import { loadAgentConfig, type AgentConfig } from "./config.js";
import { localRecipients, openListeners } from "./master.js";
import type { QueuedMessage } from "./queue/queue-file.js";
import { Spool } from "./queue/spool.js";
import type { Smtpd } from "./smtpd/smtpd.js";

/** Messages between the main process and intake processes. */
export type IntakeMessage = { type: "queued"; message: QueuedMessage } | { type: "stop" } | { type: "reload" };

/** The listeners of one intake process. */
export class IntakeWorker {
  private constructor(
    private listeners: Smtpd[],
    private readonly spool: Spool,
    private readonly log: MailLog,
  ) {}

  /** Open the configured listeners; accepted mail is reported with `process.send`. */
  static async start(config: AgentConfig, log: MailLog): Promise<IntakeWorker> {
    const spool = new Spool(config.spool);
    const listeners = await openListeners(config, spool, log, await localRecipients(config, spool), report);
    return new IntakeWorker(listeners, spool, log);
  }

  /** Re-read the configuration; a bad one is logged and the running one kept. */
  async reload(file: string | null): Promise<void> {
    let next: AgentConfig;
    try {
      next = loadAgentConfig(file);
    } catch (err) {
      this.log.error(`reload failed, keeping the running configuration: ${(err as Error).message}`);
      return;
    }
    const recipients = await localRecipients(next, this.spool);
    await Promise.all(this.listeners.map((l) => l.stop()));
    this.listeners = await openListeners(next, this.spool, this.log, recipients, report);
  }

  /** Stop listening and let messages in DATA finish. */
  async stop(): Promise<void> {
    await Promise.all(this.listeners.map((l) => l.stop()));
    await this.spool.close();
  }
}

function report(message: QueuedMessage): void {
  // The content stays here: the queue manager reads it from the file. (Through the IPC pipe's JSON a
  // Buffer would arrive as { type, data } and could not be streamed.)
  const { content: _content, ...onDisk } = message;
  process.send?.({ type: "queued", message: onDisk } satisfies IntakeMessage);
}
