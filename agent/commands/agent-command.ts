/**
 * agent-command — `homerelay agent`: load the configuration, start the agent in the foreground,
 * and with `intakeProcesses` > 1 run the SMTP listeners in that many intake processes
 * (node:cluster) that hand accepted mail to this process's queue manager. Signals: SIGTERM and
 * SIGINT drain and exit, SIGHUP reloads.
 */
import cluster, { type Worker } from "node:cluster";
import { ConfigError, EX_CONFIG } from "../../shared/config-file.js";
import { createMailLog, type MailLog } from "../../shared/log.js";
import { stopOnSignals } from "../../shared/shutdown.js";
import { configPath, loadAgentConfig, type AgentConfig } from "../config.js";
import { applyHeapPolicy } from "../heap-policy.js";
import { IntakeWorker, type IntakeMessage } from "../intake-worker.js";
import { AliasError } from "../local/aliases.js";
import { Agent } from "../master.js";
import { SecretFileError } from "../../shared/secret-file.js";

/** sysexits(3) EX_UNAVAILABLE: a listener's port is taken or not ours to bind. */
const EX_UNAVAILABLE = 69;

/** Run `homerelay agent`; returns only for `--check-config`. */
export async function runAgent(options: { config?: string; checkConfig?: boolean }): Promise<void> {
  const file = configPath(options.config);
  let config: AgentConfig;
  try {
    config = loadAgentConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`homerelay: fatal: configuration error:\n${err.message}\n`);
      process.exit(EX_CONFIG);
    }
    throw err;
  }
  if (options.checkConfig) {
    process.stdout.write(`${config.source}: configuration OK\n`);
    return;
  }
  const log = createMailLog({ format: config.log.format, level: config.log.level });
  applyHeapPolicy();
  if (cluster.isWorker) return runIntake(config, file, log);

  const processes = config.intakeProcesses;
  const agent = await Agent.start(config, log, { intake: processes === 1, announce: processes === 1 }).catch((err: NodeJS.ErrnoException) => fatal(log, err));
  const workers = processes > 1 ? await startIntake(processes, agent, log) : null;
  if (workers) agent.announce();

  stopOnSignals(async () => {
    if (workers) await workers.stop();
    await agent.stop();
  }, log);
  process.on("SIGHUP", () => {
    void agent.reload(file);
    workers?.reload();
  });
}

function fatal(log: MailLog, err: NodeJS.ErrnoException): never {
  log.error(`fatal: ${err.message}`);
  log.flush();
  process.exit(err instanceof AliasError || err instanceof SecretFileError ? EX_CONFIG : err.code === "EADDRINUSE" || err.code === "EACCES" ? EX_UNAVAILABLE : 1);
}

/** Fork the intake processes; resolves once every one listens. Replaces any that dies. */
async function startIntake(count: number, agent: Agent, log: MailLog): Promise<{ stop(): Promise<void>; reload(): void }> {
  // Each process accepts on the shared socket itself, rather than the main process handing connections out.
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  let stopping = false;
  const live = new Set<Worker>();
  const fork = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork();
      live.add(worker);
      worker.on("message", (m: IntakeMessage | { type: "ready" }) => {
        if (m.type === "queued") agent.qmgr.enqueue(m.message.record.id, m.message);
        else if (m.type === "ready") resolve();
      });
      worker.once("exit", (code, signal) => {
        live.delete(worker);
        if (stopping) return;
        reject(new Error(`intake process ${worker.process.pid} exited (${signal ?? code}) before it was ready`));
        log.warn(`intake process ${worker.process.pid} exited (${signal ?? code}); starting another`);
        void fork().catch((err: Error) => log.error(err.message));
      });
    });
  await Promise.all(Array.from({ length: count }, fork));
  return {
    async stop() {
      stopping = true;
      await Promise.all(
        [...live].map(
          (w) =>
            new Promise<void>((resolve) => {
              w.once("exit", () => resolve());
              w.send({ type: "stop" } satisfies IntakeMessage);
            }),
        ),
      );
    },
    reload() {
      for (const w of live) w.send({ type: "reload" } satisfies IntakeMessage);
    },
  };
}

/** The body of an intake process. */
async function runIntake(config: AgentConfig, file: string | null, log: MailLog): Promise<void> {
  const intake = await IntakeWorker.start(config, log).catch((err: NodeJS.ErrnoException) => fatal(log, err));
  process.send?.({ type: "ready" });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void intake.stop().finally(() => {
      log.flush();
      process.exit(0);
    });
  };
  process.on("message", (m: IntakeMessage) => {
    if (m.type === "stop") stop();
    else if (m.type === "reload") void intake.reload(file);
  });
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // The main process forwards SIGHUP as a reload message; a signal sent to the whole group must not kill us.
  process.on("SIGHUP", () => {});
}
