// Random configuration files (fast-check): a working configuration changed at any depth and damaged as
// text. Loading one either works or fails with ConfigError lines `file:line:column: path: message` — never
// another exception; `homerelay agent --check-config` exits 0 or 78 with those lines, never a stack trace.
// Pinned: what the fuzzing found. HR_FUZZ_RUNS sets the number of files loaded in process.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import fc from "fast-check";
import { stringify } from "yaml";
import { loadAgentConfig } from "../../agent/config.js";
import { ConfigError } from "../../shared/config-file.js";
import { CLI } from "../support/agent-process.js";
import { WORKING_CONFIG, aliasBomb, configText } from "../support/config-fuzz.js";

const RUNS = Number(process.env.HR_FUZZ_RUNS ?? 5000);
const SEED = process.env.HR_FUZZ_SEED === undefined ? undefined : Number(process.env.HR_FUZZ_SEED);
const CLOUD_CLI = resolve(import.meta.dirname, "../../dist/cloud/cli.js");
const run = promisify(execFile);

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hr-config-fuzz-"));
});
after(() => rm(dir, { recursive: true, force: true }));

/** Run a CLI with `args`; the exit status and both outputs, whatever the status. */
async function cli(path: string, args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [path, ...args], { timeout: 20_000 });
    return { status: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

/** Exit 0 with "configuration OK", or 78 with only `file:line:column: …` lines after the heading; no stack trace. */
function assertCheckConfigAnswer(r: { status: number; stdout: string; stderr: string }, file: string, program = "homerelay"): void {
  assert.doesNotMatch(r.stderr, /^\s+at /m, `a stack trace:\n${r.stderr}`);
  if (r.status === 0) {
    assert.equal(r.stdout, `${file}: configuration OK\n`);
    return;
  }
  assert.equal(r.status, 78, `exit ${r.status}:\n${r.stderr}`);
  const [heading, ...problems] = r.stderr.trimEnd().split("\n");
  assert.equal(heading, `${program}: fatal: configuration error:`);
  assert.ok(problems.length > 0);
  for (const line of problems) assert.ok(line.startsWith(`${file}:`) && /^[^:]+:\d+:\d+: /.test(line), `not a file:line:column problem: ${line}`);
}

describe("random configuration files", () => {
  test(`${RUNS} files loaded in process: a configuration or ConfigError lines with file:line:column, nothing else`, async (t) => {
    const file = join(dir, "random.yaml");
    // A library's process warning would reach the administrator's terminal beside the problem lines.
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on("warning", onWarning);
    t.after(() => process.off("warning", onWarning));
    await fc.assert(
      fc.asyncProperty(configText, async (text) => {
        await writeFile(file, text);
        try {
          loadAgentConfig(file);
        } catch (err) {
          assert.ok(err instanceof ConfigError, `not a ConfigError: ${(err as Error).stack}`);
          for (const line of err.message.split("\n")) assert.match(line, /^[^:]+:\d+:\d+: /, `not a file:line:column problem: ${line}`);
          assert.ok(err.message.split("\n").every((l) => l.startsWith(`${file}:`)));
        }
        // Warnings are emitted on the next tick.
        await new Promise((r) => setImmediate(r));
        assert.deepEqual(warnings.splice(0), [], "a process warning");
      }),
      { numRuns: RUNS, includeErrorInReport: true, ...(SEED !== undefined ? { seed: SEED } : {}) },
    );
  });

  test("6 of them through `homerelay agent --check-config`: exit 0 or 78 with file:line:column, never a stack trace", async () => {
    const texts = fc.sample(configText, { numRuns: 6, ...(SEED !== undefined ? { seed: SEED } : {}) });
    const files = await Promise.all(
      texts.map(async (text, i) => {
        const file = join(dir, `sample-${i}.yaml`);
        await writeFile(file, text);
        return file;
      }),
    );
    for (let i = 0; i < files.length; i += 2) {
      await Promise.all(files.slice(i, i + 2).map(async (file) => assertCheckConfigAnswer(await cli(CLI, ["agent", "--check-config", "--config", file]), file)));
    }
  });
});

describe("found by the fuzzing, pinned", () => {
  test("an alias bomb (billion laughs) is a configuration error at its place, exit 78, for both halves", async () => {
    const file = join(dir, "bomb.yaml");
    await writeFile(file, aliasBomb());
    assertCheckConfigAnswer(await cli(CLI, ["agent", "--check-config", "--config", file]), file);
    assertCheckConfigAnswer(await cli(CLOUD_CLI, ["check-config", "--config", file]), file, "homerelay-cloud");
  });

  test("localDomains: [] is refused by --check-config (the agent cannot start without a local domain)", async () => {
    const file = join(dir, "no-local-domains.yaml");
    await writeFile(file, stringify({ ...WORKING_CONFIG, localDomains: [] }));
    const r = await cli(CLI, ["agent", "--check-config", "--config", file]);
    assertCheckConfigAnswer(r, file);
    assert.equal(r.status, 78);
    assert.match(r.stderr, /: localDomains: /);
  });

  test("a number of seconds no timer can hold (queue.scanInterval: 1e12) is refused by --check-config", async () => {
    const file = join(dir, "endless-interval.yaml");
    await writeFile(file, stringify({ ...WORKING_CONFIG, queue: { ...WORKING_CONFIG.queue, scanInterval: 1e12 } }));
    const r = await cli(CLI, ["agent", "--check-config", "--config", file]);
    assertCheckConfigAnswer(r, file);
    // Node turns a delay beyond 2^31-1 ms into 1 ms: the agent would scan its deferred queue a thousand times a second.
    assert.equal(r.status, 78);
    assert.match(r.stderr, /: queue\.scanInterval: /);
  });
});
