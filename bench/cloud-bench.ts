/**
 * cloud-bench — the cloud half's figures for `npm run bench`, each next to its reference from the
 * same run: signed submissions per second through the Node entry vs a bare Hono handler and the
 * floor of any signed API (body digest + one node:crypto verify), interleaved and all loaded by the
 * same generator process (bench/http-load.ts); Ed25519 verifies per second with node:crypto and
 * tweetnacl; and the cold import time of the Lambda bundle.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { access, mkdtemp, open, readFile, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { build } from "esbuild";
import { BUNDLE_FILE, esbuildOptions } from "../infra/lib/lambda-bundle.js";
import { nodeCryptoEd25519, publicKeyFromSeed, tweetnaclEd25519, type Ed25519 } from "../shared/protocol/ed25519.js";
import { BODY_BYTES, type LoadCommand, type LoadResult } from "./http-load.js";

const ROOT = resolve(import.meta.dirname, "..");
const AUTHORITY = "relay.bench.example";
const KEY_ID = "bench-1";
/** Connections the generator keeps busy, one request in flight on each. */
const CONCURRENCY = 16;
const SERVERS = ["app", "bare", "floor"] as const;
type ServerName = (typeof SERVERS)[number];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A bench server (bench/cloud-servers.ts) in its own process; its standard error goes to a file in the work directory. */
interface BenchServer {
  port: number;
  stop(): Promise<void>;
}

/** Stop a child with SIGTERM (SIGKILL after 10 s) and wait for it to exit. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

async function startServer(name: ServerName, argv: string[], work: string, children: ChildProcess[]): Promise<BenchServer> {
  const log = join(work, `${name}.log`);
  const out = await open(log, "w");
  // HR_PROF=DIR writes a CPU profile of the app server there (node --cpu-prof), for finding where its time goes.
  const profile = process.env.HR_PROF && name === "app" ? ["--cpu-prof", `--cpu-prof-dir=${process.env.HR_PROF}`] : [];
  const child = spawn(process.execPath, [...profile, "--import", "tsx", "bench/cloud-servers.ts", ...argv], { cwd: ROOT, stdio: ["ignore", "pipe", out.fd] });
  children.push(child);
  await out.close();
  let text = "";
  const port = await new Promise<number>((res, rej) => {
    child.stdout!.on("data", (d: Buffer) => {
      text += d.toString();
      const m = /listening (\d+)/.exec(text);
      if (m) res(Number(m[1]));
    });
    child.once("exit", (code) => void readFile(log, "utf8").then((stderr) => rej(new Error(`bench server ${name} exited (${code}): ${stderr.slice(-2000)}`))));
  });
  return { port, stop: () => stopChild(child) };
}

/** The load generator process, one command at a time over IPC. */
class LoadGenerator {
  private constructor(private readonly child: ChildProcess) {}

  static start(children: ChildProcess[]): LoadGenerator {
    const child = spawn(process.execPath, ["--import", "tsx", "bench/http-load.ts"], { cwd: ROOT, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    children.push(child);
    return new LoadGenerator(child);
  }

  ask<T>(command: LoadCommand): Promise<T> {
    return new Promise((res, rej) => {
      const onExit = (code: number | null) => rej(new Error(`the load generator exited (${code}) during ${command.type}`));
      this.child.once("exit", onExit);
      this.child.once("message", (answer: { type: string; message?: string }) => {
        this.child.off("exit", onExit);
        if (answer.type === "error") rej(new Error(`load generator: ${answer.message}`));
        else res(answer as T);
      });
      this.child.send(command);
    });
  }
}

/** Ed25519 verifies per second through the shared interface, in this process, for `seconds`. */
async function verifyRate(ed25519: Ed25519, seconds: number): Promise<number> {
  const seed = new Uint8Array(randomBytes(32));
  const publicKey = publicKeyFromSeed(seed);
  // About the size of a message submission's signature base.
  const message = new Uint8Array(randomBytes(600));
  const signature = await ed25519.sign(message, seed);
  const started = performance.now();
  const end = started + seconds * 1000;
  let n = 0;
  let now = started;
  while (now < end) {
    if (!(await ed25519.verify(message, signature, publicKey))) throw new Error(`${ed25519.name} does not verify its own signature`);
    n++;
    now = performance.now();
  }
  return n / ((now - started) / 1000);
}

/** Wall time of a fresh `node -e SCRIPT` in the repository, ms. */
async function nodeRunMs(script: string): Promise<number> {
  const started = performance.now();
  const child = spawn(process.execPath, ["-e", script], { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((r) => child.once("exit", r));
  const ms = performance.now() - started;
  if (code !== 0) throw new Error(`node -e ${JSON.stringify(script)} exited (${code}): ${stderr}`);
  return ms;
}

/**
 * The cold import of the Lambda bundle as the stack builds it (infra/lib/lambda-bundle.ts, into
 * `work`, the AWS SDK left to node_modules as to Lambda's runtime): a fresh process importing it,
 * minus a fresh process importing nothing, medians of `runs` interleaved; and the bundle's size.
 */
async function coldImport(runs: number, work: string): Promise<{ importMs: number[]; baselineMs: number[]; medianMs: number; bundleBytes: number }> {
  const file = join(work, BUNDLE_FILE);
  await build(esbuildOptions(file));
  await symlink(join(ROOT, "node_modules"), join(work, "node_modules"), "dir");
  const script = `await import(${JSON.stringify(pathToFileURL(file).href)})`;
  // One untimed run of each, so that every timed run finds the files in the page cache alike.
  await nodeRunMs("");
  await nodeRunMs(script);
  const importMs: number[] = [];
  const baselineMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    baselineMs.push(await nodeRunMs(""));
    importMs.push(await nodeRunMs(script));
  }
  return { importMs, baselineMs, medianMs: median(importMs) - median(baselineMs), bundleBytes: (await stat(file)).size };
}

/** The cloud figures: rows for a second table (figure, value) and the JSON results. */
export async function benchCloud(options: { seconds?: number; quick?: boolean }): Promise<{ table: string[][]; results: Record<string, unknown> }> {
  const quick = options.quick ?? false;
  const seconds = options.seconds ?? (quick ? 1.5 : 4);
  const rounds = quick ? 1 : 3;
  // The app takes some 5000 requests (3 s) to reach its steady rate, the floor about as long.
  const warmup = quick ? 1.5 : 3;
  const verifySeconds = quick ? 0.5 : 1;
  await access(join(ROOT, "dist/cloud/app.js")).catch(() => {
    throw new Error("dist/cloud/app.js is missing: run npm run build first");
  });

  const work = await mkdtemp(join(tmpdir(), "hr-cloud-bench-"));
  const children: ChildProcess[] = [];
  try {
    // In-process and start-up figures first, while no server competes for the CPUs.
    const verifies = { nodeCrypto: await verifyRate(await nodeCryptoEd25519(), verifySeconds), tweetnacl: await verifyRate(tweetnaclEd25519, verifySeconds) };
    const lambda = await coldImport(5, await mkdtemp(join(work, "lambda-")));

    const seed = randomBytes(32);
    const config = {
      listen: "127.0.0.1:0",
      authority: [AUTHORITY],
      // The per-key rate limit out of the way: the bench measures throughput, not throttling.
      keys: [{ id: KEY_ID, publicKey: Buffer.from(publicKeyFromSeed(new Uint8Array(seed))).toString("base64"), senders: ["*@example.net"], ratePerMinute: 1_000_000_000 }],
      // Required by the schema; the bench server relays to its instrument instead.
      onward: { transport: "ses", region: "eu-west-1" },
      store: join(work, "store"),
      log: { format: "json", level: "info" },
    };
    const servers: Record<ServerName, BenchServer> = {
      app: await startServer("app", ["app", JSON.stringify(config)], work, children),
      bare: await startServer("bare", ["bare"], work, children),
      floor: await startServer("floor", ["floor"], work, children),
    };
    const generator = LoadGenerator.start(children);
    await generator.ask({ type: "init", seed: seed.toString("hex"), keyid: KEY_ID, authority: AUTHORITY });

    // Requests a second of the app takes: a first guess, then the last run's rate (twice that is
    // signed before each run, while nothing is timed); should they run out anyway, the run is
    // shorter and its rate still holds.
    let appRate = 3000;
    let exhaustedRuns = 0;
    const measure = async (name: ServerName, s: number): Promise<number> => {
      const fresh = name === "app";
      if (fresh) await generator.ask({ type: "prepare", count: Math.ceil(appRate * s * 2) + 100 });
      const r = await generator.ask<LoadResult>({ type: "run", port: servers[name].port, seconds: s, concurrency: CONCURRENCY, fresh });
      if (r.firstFailure !== null) throw new Error(`cloud bench: ${name} answered ${JSON.stringify(r.statuses)}; the first failure: ${r.firstFailure}`);
      if (r.exhausted) exhaustedRuns++;
      if (fresh) appRate = r.rate;
      return r.rate;
    };
    // Warm-up (the JIT's tiers), not counted.
    for (const name of SERVERS) await measure(name, warmup);
    const rates: Record<ServerName, number[]> = { app: [], bare: [], floor: [] };
    for (let round = 0; round < rounds; round++) {
      // Interleaved, in another order each round, so that drift on a shared machine hits all alike.
      for (let i = 0; i < SERVERS.length; i++) {
        const name = SERVERS[(round + i) % SERVERS.length]!;
        rates[name].push(await measure(name, seconds));
      }
    }
    await Promise.all(children.map(stopChild));

    const app = median(rates.app);
    const bare = median(rates.bare);
    const floor = median(rates.floor);
    const results = {
      bodyBytes: BODY_BYTES,
      concurrency: CONCURRENCY,
      seconds,
      rounds,
      rates,
      appMedian: app,
      bareMedian: bare,
      floorMedian: floor,
      appToFloor: app / floor,
      appToBare: app / bare,
      exhaustedRuns,
      ed25519VerifiesPerSecond: verifies,
      lambdaColdImport: { ...lambda, note: "the esbuild bundle the stack deploys, minus a bare node start" },
    };
    const perSecond = (n: number) => `${n.toFixed(0)}/s`;
    const table = [
      [`signed POST /v1/messages, Node entry (file store, instant onward), 4 KiB, ${CONCURRENCY} connections`, perSecond(app)],
      ["bare Hono: read the body, 200", perSecond(bare)],
      ["floor: bare Hono + SHA-256 of the body + one node:crypto verify", perSecond(floor)],
      ["Node entry ÷ floor (goal ≥ 0.8)", (app / floor).toFixed(2)],
      ["Node entry ÷ bare Hono", (app / bare).toFixed(2)],
      ["Ed25519 verify, node:crypto, in process", perSecond(verifies.nodeCrypto)],
      ["Ed25519 verify, tweetnacl, in process", perSecond(verifies.tweetnacl)],
      [`cold import of the Lambda bundle (${(lambda.bundleBytes / 1024).toFixed(0)} KiB; minus a bare node start; goal < 300 ms)`, `${lambda.medianMs.toFixed(0)} ms`],
    ];
    return { table, results };
  } finally {
    await Promise.all(children.map(stopChild));
    await rm(work, { recursive: true, force: true });
  }
}
