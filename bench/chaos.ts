/**
 * chaos — the long reliability run: kill -9 fifty times on the SMTP path (agent → smarthost) and fifty
 * times on the cloud path (agent and `homerelay-cloud serve`), then the SMTP, HTTP and configuration
 * fuzzers at 10⁵ cases each (test/reliability/*-fuzz.test.ts, run with HR_FUZZ_RUNS). `benchChaos`
 * gives npm run bench its table and JSON; on its own it prints them and writes
 * bench/results/chaos-<date>.json:
 *   node --import tsx bench/chaos.ts [--kills 50] [--fuzz-runs 100000] [--seed N] [--quick]
 */
import { spawn } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { chaosViaCloud, chaosViaSmarthost } from "../test/support/chaos-routes.js";
import { describeFigures, smtpSubmission, type ChaosFigures } from "../test/support/kill-chaos.js";

const ROOT = resolve(import.meta.dirname, "..");

/** What to run. */
export interface ChaosBenchOptions {
  quick: boolean;
  /** Kills per path (default 50; quick 10). */
  kills?: number;
  /** Cases per fuzzer (default 10⁵; quick 2000). */
  fuzzRuns?: number;
  seed?: number;
}

/** One fuzzer's property run as a test file, with its pass/fail and time. */
interface FuzzRun {
  file: string;
  runs: number;
  passed: boolean;
  seconds: number;
  /** The end of the output when it failed: fast-check's seed, path and counterexample. */
  failure?: string;
}

/** The random properties of each fuzzer (their pinned findings are left to the test suite). */
const FUZZERS: [file: string, pattern: string][] = [
  ["test/reliability/smtp-fuzz.test.ts", "random streams"],
  ["test/reliability/http-fuzz.test.ts", "changed submissions|streams of raw bytes"],
  ["test/reliability/config-fuzz.test.ts", "files loaded in process"],
];

function fuzz(file: string, pattern: string, runs: number): Promise<FuzzRun> {
  const started = performance.now();
  return new Promise((res) => {
    const child = spawn(process.execPath, ["--import", "tsx", "--test", `--test-name-pattern=${pattern}`, file], {
      cwd: ROOT,
      env: { ...process.env, HR_FUZZ_RUNS: String(runs) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
    child.stderr!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
    child.once("exit", (code) => {
      const passed = code === 0;
      res({ file, runs, passed, seconds: (performance.now() - started) / 1000, ...(passed ? {} : { failure: out.slice(-4000) }) });
    });
  });
}

function chaosRow(path: string, f: ChaosFigures): string[] {
  const moments = new Map<string, number>();
  for (const k of f.kills) moments.set(`${k.victim}/${k.moment}`, (moments.get(`${k.victim}/${k.moment}`) ?? 0) + 1);
  return [
    `kill -9, ${path} (seed ${f.seed})`,
    `${f.messages} messages, ${f.kills.length} kills`,
    `lost ${f.lost.length}`,
    `duplicates ${f.duplicates} (bound ${f.duplicateBound})`,
    `${f.seconds.toFixed(0)} s; ${[...moments].map(([m, n]) => `${m} ${n}`).join(", ")}`,
  ];
}

/** Run the long chaos and fuzzing; the figures as JSON and as table rows. */
export async function benchChaos(o: ChaosBenchOptions): Promise<{ results: Record<string, unknown>; table: string[][] }> {
  const kills = o.kills ?? (o.quick ? 10 : 50);
  const fuzzRuns = o.fuzzRuns ?? (o.quick ? 2000 : 100_000);
  const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
  const plan = { seed, kills, clients: 4, deferRate: 0.1, submission: smtpSubmission };
  process.stderr.write(`chaos: seed ${seed}, ${kills} kills per path, ${fuzzRuns} cases per fuzzer\n`);
  const smtp = await chaosViaSmarthost({ ...plan, messages: kills * 15, drainMs: 120_000 });
  for (const line of describeFigures(smtp.figures)) process.stderr.write(`chaos (smarthost): ${line}\n`);
  const cloud = await chaosViaCloud({ ...plan, messages: kills * 10, drainMs: 180_000 });
  for (const line of describeFigures(cloud.figures)) process.stderr.write(`chaos (cloud): ${line}\n`);
  const fuzzers: FuzzRun[] = [];
  for (const [file, pattern] of FUZZERS) {
    const run = await fuzz(file, pattern, fuzzRuns);
    process.stderr.write(`fuzz: ${file} × ${fuzzRuns}: ${run.passed ? "passed" : "FAILED"} in ${run.seconds.toFixed(0)} s\n${run.failure ?? ""}`);
    fuzzers.push(run);
  }
  const table = [
    chaosRow("agent → smarthost", smtp.figures),
    chaosRow("agent → cloud → upstream", cloud.figures),
    ...fuzzers.map((f) => [`fuzz ${f.file.replace(/^test\/reliability\//, "")}`, `${f.runs} cases`, f.passed ? "passed" : "FAILED", "", `${f.seconds.toFixed(0)} s`]),
  ];
  return { results: { seed, kills, fuzzRuns, smarthost: smtp.figures, cloud: cloud.figures, fuzzers }, table };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { values } = parseArgs({ options: { kills: { type: "string" }, "fuzz-runs": { type: "string" }, seed: { type: "string" }, quick: { type: "boolean", default: false } } });
  const { results, table } = await benchChaos({
    quick: values.quick,
    ...(values.kills ? { kills: Number(values.kills) } : {}),
    ...(values["fuzz-runs"] ? { fuzzRuns: Number(values["fuzz-runs"]) } : {}),
    ...(values.seed ? { seed: Number(values.seed) } : {}),
  });
  const date = new Date().toISOString();
  process.stdout.write(["| reliability | size | lost / result | duplicates | time and kills |", "|---|---|---|---|---|", ...table.map((r) => `| ${r.join(" | ")} |`)].join("\n") + "\n");
  await mkdir(join(ROOT, "bench/results"), { recursive: true });
  await writeFile(join(ROOT, "bench/results", `chaos-${date.replace(/[:.]/g, "-")}.json`), JSON.stringify({ date, ...results }, null, 2));
  const broken = (f: ChaosFigures) => f.lost.length > 0 || f.leftInQueue.length > 0 || f.duplicates > f.duplicateBound;
  const failed = broken(results.smarthost as ChaosFigures) || broken(results.cloud as ChaosFigures) || (results.fuzzers as FuzzRun[]).some((f) => !f.passed);
  process.exit(failed ? 1 : 0);
}
