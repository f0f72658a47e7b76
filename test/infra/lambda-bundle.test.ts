// The Lambda bundle, built with the settings the stack uses (infra/lib/lambda-bundle.ts): under
// 1 MB, the AWS SDK left to the runtime, and a working handler in a fresh `node` that finds the SDK
// the way Lambda's runtime provides it. The cold import time is reported, not asserted (timing
// belongs to benchmarks): fresh processes, best and median of five.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { build, type Metafile } from "esbuild";
import { BUNDLE_FILE, esbuildOptions, REPOSITORY_ROOT } from "../../infra/lib/lambda-bundle.js";

const run = promisify(execFile);
const MAX_BYTES = 1024 * 1024;
const RUNS = 5;

/** A fresh process imports the bundle, then answers GET /v1/info as a Function URL event; it prints its timings as JSON. */
const COLD_START = `
const started = performance.now();
const { handler } = await import(process.env.BUNDLE_URL);
const imported = performance.now();
const now = new Date();
const host = "q7xk3mhbtyd5ewl2vr4oacnsuif6gjzp.lambda-url.eu-west-1.on.aws";
const answer = await handler({
  version: "2.0", routeKey: "$default", rawPath: "/v1/info", rawQueryString: "", isBase64Encoded: false,
  headers: { host, "x-forwarded-proto": "https", "user-agent": "homerelay/0.1.0" },
  requestContext: { accountId: "anonymous", apiId: "q7xk3mhbtyd5ewl2vr4oacnsuif6gjzp", domainName: host, routeKey: "$default", stage: "$default",
    http: { method: "GET", path: "/v1/info", protocol: "HTTP/1.1", sourceIp: "198.51.100.23", userAgent: "homerelay/0.1.0" },
    requestId: "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", time: now.toUTCString(), timeEpoch: now.getTime() },
});
process.stdout.write(JSON.stringify({ importMs: imported - started, firstAnswerMs: performance.now() - imported, status: answer.statusCode, body: answer.body }));
`;

/** The cloud configuration the function would get, with a table name and region but no AWS behind them. */
const CONFIG = JSON.stringify({
  authority: ["q7xk3mhbtyd5ewl2vr4oacnsuif6gjzp.lambda-url.eu-west-1.on.aws"],
  keys: [{ id: "home-1", publicKey: "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", senders: ["*@example.net"] }],
  onward: { transport: "ses", region: "eu-west-1" },
  store: { dynamodb: { table: "homerelay-store" } },
});

/** The largest packages (or repository directories) in the bundle, for a message. */
function composition(metafile: Metafile): string {
  const bytes = new Map<string, number>();
  for (const output of Object.values(metafile.outputs)) {
    for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
      const parts = input.split("/");
      const at = parts.lastIndexOf("node_modules");
      const name = at === -1 ? parts.slice(0, 2).join("/") : parts.slice(at + 1, at + (parts[at + 1]!.startsWith("@") ? 3 : 2)).join("/");
      bytes.set(name, (bytes.get(name) ?? 0) + bytesInOutput);
    }
  }
  return [...bytes].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([name, n]) => `${name} ${(n / 1024).toFixed(0)} KiB`).join(", ");
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe("Lambda bundle", () => {
  let dir: string;
  let file: string;
  let metafile: Metafile;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hr-lambda-bundle-"));
    file = join(dir, BUNDLE_FILE);
    ({ metafile } = await build(esbuildOptions(file)));
    // Lambda's runtime puts its AWS SDK on the module path; here the repository's node_modules stands in.
    await symlink(join(REPOSITORY_ROOT, "node_modules"), join(dir, "node_modules"), "dir");
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("the bundle is one file under 1 MB", async (t) => {
    const { size } = await stat(file);
    t.diagnostic(`bundle ${BUNDLE_FILE}: ${size} bytes (${(size / 1024).toFixed(0)} KiB); largest parts: ${composition(metafile)}`);
    assert.deepEqual(Object.keys(metafile.outputs).map((o) => o.split("/").pop()), [BUNDLE_FILE]);
    assert.ok(size < MAX_BYTES, `the bundle is ${size} bytes, over ${MAX_BYTES}; largest parts: ${composition(metafile)}`);
  });

  test("the AWS SDK v3 is left to the runtime: imported, not bundled", () => {
    const bundled = Object.keys(metafile.inputs).filter((input) => input.includes("node_modules/@aws-sdk/"));
    assert.deepEqual(bundled, []);
    const external = Object.values(metafile.outputs).flatMap((o) => o.imports.filter((i) => i.external).map((i) => i.path));
    assert.ok(external.includes("@aws-sdk/client-ses"), `external imports: ${external.join(", ")}`);
    assert.ok(external.includes("@aws-sdk/client-dynamodb"), `external imports: ${external.join(", ")}`);
  });

  test("a fresh node imports the bundle and its handler answers GET /v1/info; the cold import time is reported", async (t) => {
    const env = {
      ...process.env,
      BUNDLE_URL: pathToFileURL(file).href,
      HOMERELAY_CLOUD_CONFIG: CONFIG,
      AWS_REGION: "eu-west-1",
      // Nothing here reaches AWS; the SDK's credential chain must not look for an instance role either.
      AWS_ACCESS_KEY_ID: "AKIDHOMERELAYTEST",
      AWS_SECRET_ACCESS_KEY: "homerelay-test-secret",
      AWS_EC2_METADATA_DISABLED: "true",
    };
    const runs: { importMs: number; firstAnswerMs: number }[] = [];
    for (let i = 0; i < RUNS; i++) {
      const { stdout } = await run(process.execPath, ["--input-type=module", "-e", COLD_START], { cwd: dir, env });
      const result = JSON.parse(stdout) as { importMs: number; firstAnswerMs: number; status: number; body: string };
      assert.equal(result.status, 200, result.body);
      assert.equal((JSON.parse(result.body) as { protocol: number }).protocol, 1);
      runs.push(result);
    }
    const imports = runs.map((r) => r.importMs);
    const answers = runs.map((r) => r.firstAnswerMs);
    t.diagnostic(
      `cold import of the bundle (node ${process.version}, ${RUNS} fresh processes): best ${Math.min(...imports).toFixed(0)} ms, median ${median(imports).toFixed(0)} ms; ` +
        `then the first answer (app built, GET /v1/info): best ${Math.min(...answers).toFixed(0)} ms, median ${median(answers).toFixed(0)} ms`,
    );
  });
});
