// `runCloudServe` (homerelay cloud serve) as a child process: SIGTERM stops accepting, lets the request in flight
// finish and exits 0 with the store closed; SIGHUP applies added and revoked keys from the edited file (a file
// that does not load changes nothing); a bad configuration or a DynamoDB store exits 78 before listening.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { makeKey, send, signed, submission } from "../support/cloud-client.js";
import { SmtpUpstream } from "../support/smtp-upstream.js";

const SERVE = pathToFileURL(resolve(import.meta.dirname, "../../cloud/serve.ts")).href;
const key = makeKey("home-1");

let upstream: SmtpUpstream;
let dir: string;
before(async () => {
  upstream = await SmtpUpstream.start({ user: "u", pass: "p" });
  dir = await mkdtemp(join(tmpdir(), "hr-cloud-serve-"));
});
after(async () => {
  await upstream.close();
  await rm(dir, { recursive: true, force: true });
});

/** Run `runCloudServe` on `config` (JSON, written to `file`) in a child process; stderr is collected. */
async function startServe(config: Record<string, unknown>): Promise<{ child: ChildProcess; file: string; stderr: () => string; exit: Promise<number | null> }> {
  const file = join(dir, `cloud-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, JSON.stringify(config));
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", `(await import(${JSON.stringify(SERVE)})).runCloudServe({ config: ${JSON.stringify(file)} })`], {
    cwd: resolve(import.meta.dirname, "../.."),
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  const exit = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
  after(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  return { child, file, stderr: () => stderr, exit };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function connectRefused(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      done(false);
    });
    socket.once("error", () => done(true));
  });
}

const config = (store: unknown) => ({
  listen: "127.0.0.1:0",
  authority: ["relay.example.net"],
  keys: [{ id: key.id, publicKey: key.publicKey, senders: ["*@example.net"] }],
  onward: { transport: "smtp", host: "127.0.0.1", port: upstream.port, tls: "starttls", verify: false, auth: { user: "u", password: "p" } },
  store,
  log: { format: "text" },
});

test("SIGTERM: no new connections, the request in flight is answered, exit 0", async () => {
  const serve = await startServe(config(join(dir, "store")));
  await until(() => /listening on 127\.0\.0\.1:\d+/.test(serve.stderr()), "the listening line");
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(serve.stderr())![1]);

  const gate = upstream.hold();
  const s = { body: Buffer.from("From: alice@example.net\r\n\r\nhello\r\n"), envelopeFrom: "<alice@example.net>", envelopeTo: "<bob@example.org>" };
  const inFlight = send(port, await signed(submission("relay.example.net", s), key));
  await until(() => upstream.held === 1, "the relay to reach the end of DATA");
  serve.child.kill("SIGTERM");
  await until(() => serve.stderr().includes("terminating on signal SIGTERM"), "the terminating line");
  assert.equal(await connectRefused(port), true, "still accepting connections after SIGTERM");
  gate.release();
  const answer = await inFlight;
  assert.equal(answer.status, 200, answer.text);
  assert.equal(await serve.exit, 0);
  assert.equal(upstream.messages.length, 1);
});

test("SIGHUP: a key added and a key revoked in the file apply to the next requests; a file that does not load changes nothing", async () => {
  const second = makeKey("home-2");
  const serve = await startServe(config(join(dir, "store-reload")));
  await until(() => /listening on 127\.0\.0\.1:\d+/.test(serve.stderr()), "the listening line");
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(serve.stderr())![1]);
  const s = { body: Buffer.from("From: alice@example.net\r\n\r\nhello\r\n"), envelopeFrom: "<alice@example.net>", envelopeTo: "<bob@example.org>" };
  const status = async (k: typeof key) => (await send(port, await signed(submission("relay.example.net", s), k))).status;
  assert.equal(await status(key), 200);
  assert.equal(await status(second), 401);

  // home-2 in, home-1 out; the listen address changes too, which waits for a restart.
  const rotated = { ...config(join(dir, "store-reload")), listen: "127.0.0.1:1", keys: [{ id: second.id, publicKey: second.publicKey, senders: ["*@example.net"] }] };
  await writeFile(serve.file, JSON.stringify(rotated));
  serve.child.kill("SIGHUP");
  await until(() => serve.stderr().includes("reload: keys home-2; authority relay.example.net"), "the reload line");
  assert.match(serve.stderr(), /warning: reload: changes to listen take effect at the next restart/);
  assert.equal(await status(second), 200);
  assert.equal(await status(key), 401, "a revoked key is refused at once");

  await writeFile(serve.file, "keys: [");
  serve.child.kill("SIGHUP");
  await until(() => serve.stderr().includes("reload failed, keeping the running configuration: "), "the failed reload line");
  assert.equal(await status(second), 200);
  serve.child.kill("SIGTERM");
  assert.equal(await serve.exit, 0);
});

test("a configuration error exits 78 with file:line:column", async () => {
  const serve = await startServe({ ...config(join(dir, "store")), keys: [] });
  assert.equal(await serve.exit, 78);
  assert.match(serve.stderr(), /configuration error:\n.*cloud-\w+\.yaml:1:\d+: keys: /);
});

test("a DynamoDB store exits 78: cloud serve keeps its store in a directory", async () => {
  const serve = await startServe(config({ dynamodb: { table: "homerelay" } }));
  assert.equal(await serve.exit, 78);
  assert.match(serve.stderr(), /store: cloud serve keeps its store in a directory; DynamoDB is for the Lambda entry/);
});
