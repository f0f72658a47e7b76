/**
 * agent-process — runs the built `homerelay agent` as a child process on a temporary spool,
 * as a person would, for end-to-end tests: listeners on port 0, ports read from the log.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";

/** The built CLI; `npm test` builds before running the tests. */
export const CLI = resolve(import.meta.dirname, "../../dist/agent/cli.js");

/** A running agent child process and its temporary directory. */
export interface AgentProcess {
  dir: string;
  spool: string;
  mailboxes: string;
  configFile: string;
  /** Bound listener ports, in configuration order. */
  ports: number[];
  child: ChildProcess;
  /** Everything the agent logged so far. */
  log(): string;
  /** Resolve when the log matches `pattern` (after `from` characters), or reject after `ms`. */
  waitForLog(pattern: RegExp, ms?: number, from?: number): Promise<RegExpMatchArray>;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  /** Start again on the same directory and configuration (after stop or kill). */
  restart(): Promise<AgentProcess>;
  /** Stop if running and remove the directory. */
  cleanup(): Promise<void>;
}

/**
 * Start an agent with `config` (merged over test defaults: spool and mailboxes in a temp dir,
 * one submission listener on 127.0.0.1:0). Paths in `files` are written into the dir first;
 * `env` adds variables to the child's environment.
 */
export async function startAgent(
  config: Record<string, unknown> = {},
  options: { dir?: string; files?: Record<string, string | Buffer>; env?: Record<string, string> } = {},
): Promise<AgentProcess> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), "hr-agent-")));
  const full = {
    hostname: "home.example.net",
    spool: join(dir, "spool"),
    mailboxes: join(dir, "mail"),
    listeners: [{ role: "submission", listen: "127.0.0.1:0" }],
    // Tests never ask real DNS: by default a resolver address where nothing answers (every lookup defers).
    dns: { servers: ["127.0.0.1:9"], timeout: 1 },
    ...config,
  };
  for (const [name, content] of Object.entries(options.files ?? {})) await writeFile(join(dir, name), content, { mode: 0o600 });
  const configFile = join(dir, "homerelay.yaml");
  await writeFile(configFile, stringify(full));
  return launch(dir, configFile, full.spool as string, full.mailboxes as string, options.env);
}

async function launch(dir: string, configFile: string, spool: string, mailboxes: string, env?: Record<string, string>): Promise<AgentProcess> {
  const child = spawn(process.execPath, [CLI, "agent", "--config", configFile], {
    stdio: ["ignore", "pipe", "pipe"],
    cwd: dir,
    // Extra variables for the child (e.g. NODE_EXTRA_CA_CERTS), on top of the test's own environment.
    ...(env ? { env: { ...process.env, ...env } } : {}),
  });
  let output = "";
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    output += d.toString();
    for (const w of waiters) w();
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  let running = true;
  void exited.then(() => {
    running = false;
    for (const w of waiters) w();
  });

  const waitForLog = (pattern: RegExp, ms = 10_000, from = 0) =>
    new Promise<RegExpMatchArray>((resolveWait, reject) => {
      const check = () => {
        const m = output.slice(from).match(pattern);
        if (m) {
          done();
          resolveWait(m);
        } else if (!running) {
          done();
          reject(new Error(`agent exited before log matched ${pattern}:\n${output}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timeout waiting for ${pattern} in agent log:\n${output}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });

  const agent: AgentProcess = {
    dir,
    spool,
    mailboxes,
    configFile,
    ports: [],
    child,
    log: () => output,
    waitForLog,
    async stop() {
      if (running) child.kill("SIGTERM");
      return exited;
    },
    async kill() {
      if (running) child.kill("SIGKILL");
      await exited;
    },
    restart: () => launch(dir, configFile, spool, mailboxes, env),
    async cleanup() {
      if (running) child.kill("SIGKILL");
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitForLog(/daemon started/, 15_000);
  } catch (err) {
    if (running) child.kill("SIGKILL");
    throw err;
  }
  agent.ports = [...output.matchAll(/listening on (?:\[[^\]]+\]|[^\s:]+):(\d+)/g)].map((m) => Number(m[1]));
  return agent;
}
