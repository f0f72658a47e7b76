/**
 * run — `npm run bench`: homerelay's performance figures, each next to a reference measured in
 * the same run on the same machine, printed as a table and written as JSON to bench/results/.
 * Intake: the agent vs a bare smtp-server that fsyncs each message (no greeting pause); end to
 * end: the agent relaying everything to an in-repo sink, vs the load generator straight into it.
 * Cloud (bench/cloud-bench.ts): signed requests through the Node entry vs bare Hono and the floor
 * of a signed API, Ed25519 verify rates, the Lambda entry's cold import. Classifier
 * (bench/classifier-bench.ts): reroute precision and recall on the labelled real replies.
 * Reliability (bench/chaos.ts): kill -9 chaos on the SMTP and cloud paths and the fuzzers at
 * bench size (--quick: CI size); `--no-chaos` leaves it out (it takes most of the run).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { stringify } from "yaml";
import { benchChaos } from "./chaos.js";
import { benchClassifier } from "./classifier-bench.js";
import { benchCloud } from "./cloud-bench.js";
import { startSink } from "./smtp-sink.js";

const ROOT = resolve(import.meta.dirname, "..");
/** Node options the agent runs with as shipped (npm start, the systemd unit): a 4 MB young generation. */
const AGENT_NODE_OPTIONS = ["--max-semi-space-size=4"];
const { values: args } = parseArgs({
  options: {
    repeats: { type: "string", default: "3" },
    messages: { type: "string", default: "3000" },
    quick: { type: "boolean", default: false },
    "no-chaos": { type: "boolean", default: false },
  },
});
const repeats = args.quick ? 1 : Number(args.repeats);
const messages = args.quick ? 500 : Number(args.messages);

interface Server {
  name: string;
  port: number;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Spawn a node script and wait until it prints `pattern` (whose first group is the port). */
async function spawnServer(name: string, argv: string[], pattern: RegExp, log?: string): Promise<Server> {
  const child = spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "pipe"], cwd: ROOT });
  let out = "";
  let found = false;
  const logChunks: Buffer[] = [];
  const port = await new Promise<number>((res, rej) => {
    const onData = (d: Buffer) => {
      if (log) logChunks.push(d);
      // Only until the port is known: matching a growing log on every chunk would stall this
      // process, and with it the in-process sink that end-to-end figures depend on.
      if (found) return;
      out += d.toString();
      const m = out.match(pattern);
      if (m) {
        found = true;
        res(Number(m[1]));
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => rej(new Error(`${name} exited (${code}): ${out}`)));
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return {
    name,
    port,
    child,
    async stop() {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
      if (log) await writeFile(log, Buffer.concat(logChunks));
    },
  };
}

/** Peak VmRSS (MB) of a process while `work` runs, sampled every 50 ms. */
async function peakRss<T>(pid: number, work: () => Promise<T>): Promise<{ result: T; peakMb: number; startMb: number }> {
  const sample = async () => {
    const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
  };
  const startMb = await sample();
  let peakMb = startMb;
  let running = true;
  const sampler = (async () => {
    while (running) {
      peakMb = Math.max(peakMb, await sample());
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const result = await work();
  running = false;
  await sampler;
  return { result, peakMb, startMb };
}

/** Run the load generator in its own process against `port`; `wall` includes its start-up. */
async function load(port: number, m: number, s: number, l: number, reuse: boolean): Promise<{ accepted: number; seconds: number; rate: number; failures: string[]; wall: number }> {
  const argv = ["--import", "tsx", "bench/smtp-load.ts", "--port", String(port), "-m", String(m), "-s", String(s), "-l", String(l)];
  if (reuse) argv.push("--reuse");
  const started = performance.now();
  const child = spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "inherit"], cwd: ROOT });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  await new Promise((r) => child.once("exit", r));
  const result = { ...(JSON.parse(out) as { accepted: number; seconds: number; rate: number; failures: string[] }), wall: (performance.now() - started) / 1000 };
  if (result.failures.length > 0) throw new Error(`load against port ${port} failed: ${result.failures.join("; ")}`);
  return result;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "hr-bench-"));
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, memoryGb: Math.round(totalmem() / 2 ** 30), node: process.version },
  };
  try {
    await mkdir(join(work, "ref"));
    const sink = await startSink();
    const config = {
      hostname: "bench.example.net",
      spool: join(work, "spool"),
      mailboxes: join(work, "mail"),
      listeners: [{ role: "submission", listen: "127.0.0.1:0", tls: "none" }],
      localDomains: ["bench.example.net"],
      limits: { commandRate: 0, clientsPerAddress: 1000, messageSize: 32 * 1024 * 1024 },
      smarthosts: { sink: { host: "127.0.0.1", port: sink.port, tls: "none" } },
      routes: [{ match: "*", route: "smarthost:sink" }],
    };
    await writeFile(join(work, "agent.yaml"), stringify(config));
    const agent = await spawnServer("agent", [...AGENT_NODE_OPTIONS, "dist/agent/cli.js", "agent", "--config", join(work, "agent.yaml")], /listening on 127\.0\.0\.1:(\d+)/, join(work, "agent.log"));
    const reference = await spawnServer("reference", ["--import", "tsx", "bench/reference-smtp-server.ts", join(work, "ref")], /listening (\d+)/);

    const table: string[][] = [];
    const workloads = [
      { label: "4 KiB, 10 sessions, 1 msg/connection", key: "intake", l: 4096, reuse: false },
      { label: "4 KiB, 10 sessions, reused connections", key: "intakeReuse", l: 4096, reuse: true },
      { label: "100 KiB, 10 sessions, 1 msg/connection", key: "intake100k", l: 102400, reuse: false },
    ];
    let agentPeak = 0;
    for (const w of workloads) {
      const m = w.l > 10000 ? Math.ceil(messages / 3) : messages;
      const rates = { agent: [] as number[], agentE2e: [] as number[], reference: [] as number[], ceiling: [] as number[] };
      for (let i = 0; i < repeats; i++) {
        // Interleaved, so drift on a shared machine hits every system alike.
        const before = sink.count();
        const t0 = performance.now();
        const { result, peakMb } = await peakRss(agent.child.pid!, async () => {
          const r = await load(agent.port, m, 10, w.l, w.reuse);
          await sink.waitFor(before + m, 600_000);
          return r;
        });
        const startup = result.wall - result.seconds;
        rates.agent.push(result.rate);
        rates.agentE2e.push(m / ((performance.now() - t0) / 1000 - startup));
        agentPeak = Math.max(agentPeak, peakMb);
        rates.reference.push((await load(reference.port, m, 10, w.l, w.reuse)).rate);
        rates.ceiling.push((await load(sink.port, m, 10, w.l, w.reuse)).rate);
      }
      const a = median(rates.agent);
      const e = median(rates.agentE2e);
      const r = median(rates.reference);
      const c = median(rates.ceiling);
      results[w.key] = { messages: m, ...rates, agentMedian: a, agentE2eMedian: e, referenceMedian: r, ceilingMedian: c, intakeRatio: a / r };
      table.push([w.label, a.toFixed(0), e.toFixed(0), r.toFixed(0), (a / r).toFixed(2), c.toFixed(0)]);
    }

    // One 25 MB message into a fresh agent (the one above carries its peak from the load runs).
    await agent.stop();
    const fresh = await spawnServer("agent-25mb", [...AGENT_NODE_OPTIONS, "dist/agent/cli.js", "agent", "--config", join(work, "agent.yaml")], /listening on 127\.0\.0\.1:(\d+)/);
    const before = sink.count();
    const big = await peakRss(fresh.child.pid!, async () => {
      const r = await load(fresh.port, 1, 1, 25 * 1024 * 1024, false);
      await sink.waitFor(before + 1, 120_000);
      return r;
    });
    await fresh.stop();
    results.bigMessage = { bytes: 25 * 1024 * 1024, rssStartMb: big.startMb, rssPeakMb: big.peakMb, growthMb: big.peakMb - big.startMb };
    results.agentPeakRssMb = agentPeak;

    await reference.stop();
    await sink.close();

    const cloud = await benchCloud({ quick: args.quick });
    results.cloud = cloud.results;
    const classifier = await benchClassifier();
    results.classifier = classifier.results;
    const chaos = args["no-chaos"] ? null : await benchChaos({ quick: args.quick });
    if (chaos) results.chaos = chaos.results;

    const out = [
      `homerelay bench — ${results.date as string}, ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}, medians of ${repeats}`,
      "",
      "| workload | agent accept msg/s | agent end-to-end msg/s | bare smtp-server+fsync accept msg/s | accept ratio | load → sink ceiling msg/s |",
      "|---|---:|---:|---:|---:|---:|",
      ...table.map((row) => `| ${row.join(" | ")} |`),
      "",
      `agent peak RSS during intake: ${agentPeak.toFixed(0)} MB`,
      `25 MB message: RSS ${big.startMb.toFixed(0)} → ${big.peakMb.toFixed(0)} MB (growth ${(big.peakMb - big.startMb).toFixed(1)} MB, goal < 10 MB)`,
      "",
      `| cloud, medians of ${String(cloud.results.rounds)} | value |`,
      "|---|---:|",
      ...cloud.table.map((row) => `| ${row.join(" | ")} |`),
      "",
      "| rejection classifier | value |",
      "|---|---:|",
      ...classifier.table.map((row) => `| ${row.join(" | ")} |`),
      ...(chaos
        ? ["", "| reliability | size | lost / result | duplicates | time and kills |", "|---|---|---|---|---|", ...chaos.table.map((row) => `| ${row.join(" | ")} |`)]
        : []),
    ].join("\n");
    process.stdout.write(out + "\n");
    await mkdir(join(ROOT, "bench/results"), { recursive: true });
    const file = join(ROOT, "bench/results", `${(results.date as string).replace(/[:.]/g, "-")}.json`);
    await writeFile(file, JSON.stringify(results, null, 2) + "\n");
    process.stdout.write(`\nwritten to ${file}\n`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
