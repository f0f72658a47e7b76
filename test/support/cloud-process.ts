/**
 * cloud-process — the built `homerelay-cloud serve` as a child process on a port its own
 * configuration names, so a test can SIGKILL it and start it again on the same port and store,
 * as a crash and a systemd restart would.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";

/** The built cloud CLI. */
const CLOUD_CLI = resolve(import.meta.dirname, "../../dist/cloud/cli.js");

/** A running (or killed) `homerelay-cloud serve`. */
export class CloudProcess {
  private child!: ChildProcess;
  private output = "";
  private exited!: Promise<void>;

  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly configFile: string,
  ) {}

  /**
   * Start the cloud on a free loopback port with `config` (listen, authority and store are
   * filled in; the log is text). Every file it makes is under one temporary directory.
   */
  static async start(config: Record<string, unknown>): Promise<CloudProcess> {
    const dir = await mkdtemp(join(tmpdir(), "hr-cloud-process-"));
    const port = await freePort();
    const configFile = join(dir, "cloud.yaml");
    const full = { listen: `127.0.0.1:${port}`, authority: [`127.0.0.1:${port}`], store: join(dir, "store"), log: { format: "text", level: "info" }, ...config };
    await writeFile(configFile, stringify(full));
    const cloud = new CloudProcess(dir, port, configFile);
    await cloud.launch();
    return cloud;
  }

  /** `http://127.0.0.1:port`, the agent's `cloud.url`. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Everything every life of the process logged. */
  log(): string {
    return this.output;
  }

  /** SIGKILL now (synchronously). */
  signal(): void {
    this.child.kill("SIGKILL");
  }

  /** Resolves once the process has exited. */
  whenExited(): Promise<void> {
    return this.exited;
  }

  /** Start again on the same port, configuration and store. */
  async restart(): Promise<void> {
    await this.exited;
    await this.launch();
  }

  /** Kill if running and remove the directory. */
  async cleanup(): Promise<void> {
    this.child.kill("SIGKILL");
    await this.exited;
    await rm(this.dir, { recursive: true, force: true });
  }

  private async launch(): Promise<void> {
    const from = this.output.length;
    const child = spawn(process.execPath, [CLOUD_CLI, "serve", "--config", this.configFile], { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    this.exited = new Promise((r) => child.once("exit", () => r()));
    const ready = new Promise<void>((resolveReady, reject) => {
      const onData = (d: Buffer) => {
        this.output += d.toString();
        if (/listening on /.test(this.output.slice(from))) resolveReady();
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", onData);
      child.once("exit", (code) => reject(new Error(`homerelay-cloud serve exited (${code}) before it listened:\n${this.output.slice(from)}`)));
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    try {
      await ready;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A loopback port that was free a moment ago (the cloud's configuration must name its port). */
async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const { port } = probe.address() as AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}
