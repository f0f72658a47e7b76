// Configuration: where the file is found, `agent --check-config` and its file:line:column errors (exit 78),
// parseConfigText on its own, and the embedded defaults that run an agent with nothing configured.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { z } from "zod";
import { configPath, loadAgentConfig } from "../../agent/config.js";
import { ConfigError, EX_CONFIG, formatProblem, parseConfigText, type ConfigProblem } from "../../shared/config-file.js";
import { CLI, startAgent, type AgentProcess } from "../support/agent-process.js";
import { SmtpDialog } from "../support/smtp-dialog.js";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `homerelay agent ARGS` in `cwd` with exactly `env` (no HOMERELAY_CONFIG from the test's own environment). */
function homerelay(args: string[], cwd: string, env: Record<string, string> = {}): Promise<Run> {
  const { HOMERELAY_CONFIG: _ignored, ...inherited } = process.env;
  const child = spawn(process.execPath, [CLI, "agent", ...args], { cwd, env: { ...inherited, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolveRun) => child.once("close", (code) => resolveRun({ code, stdout, stderr })));
}

/** The error lines of a refused configuration (after the "configuration error:" heading). */
function errorLines(run: Run): string[] {
  assert.equal(run.code, EX_CONFIG, `exit status; stderr:\n${run.stderr}`);
  const lines = run.stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines[0], "homerelay: fatal: configuration error:");
  return lines.slice(1);
}

const GOOD = ["hostname: home.example.net", "listeners:", "  - role: submission", "    listen: 127.0.0.1:2525", ""].join("\n");

describe("agent --check-config", () => {
  let dir: string;
  let n = 0;
  /** Write `text` to a new file in the temp dir and return its absolute path. */
  const file = async (text: string, name = `config-${++n}.yaml`) => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };
  const check = (path: string) => homerelay(["--check-config", "--config", path], dir);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hr-config-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("a good file prints configuration OK and exits 0", async () => {
    const path = await file(GOOD);
    const run = await check(path);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `${path}: configuration OK\n`);
    assert.equal(run.stderr, "");
  });

  test("a YAML syntax error is reported at its line and column, exit 78", async () => {
    const path = await file(["hostname: home.example.net", "limits:", "\thopCount: 5", ""].join("\n"));
    const lines = errorLines(await check(path));
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.ok(lines[0]!.startsWith(`${path}:3:1: `), lines[0]);
    assert.match(lines[0]!, /Tabs are not allowed as indentation/);
  });

  test("a duplicated key is a YAML error naming the second occurrence", async () => {
    const path = await file(["hostname: home.example.net", "spool: ./a", "spool: ./b", ""].join("\n"));
    assert.deepEqual(errorLines(await check(path)), [`${path}:3:1: Map keys must be unique`]);
  });

  test("an unknown top-level key is an error at the key", async () => {
    const path = await file(["hostname: home.example.net", "mynetworks: 127.0.0.0/8", ""].join("\n"));
    assert.deepEqual(errorLines(await check(path)), [`${path}:2:1: mynetworks: unknown key`]);
  });

  test("a YAML mapping used as a key is refused at its place: one problem, one line, no warning from the parser", async () => {
    const path = await file(["smarthosts:", " ?  isp:", "    host: x", ""].join("\n"));
    const r = await check(path);
    assert.deepEqual(errorLines(r), [`${path}:2:8: a key must be plain text or a number, not a mapping, a list or binary data`]);
    assert.doesNotMatch(r.stderr, /Warning/);
  });

  test("a key with spaces or dots is quoted in the path of its problem", async () => {
    const path = await file(["smarthosts:", "  my isp.net: 3", ""].join("\n"));
    assert.deepEqual(errorLines(await check(path)), [`${path}:2:15: smarthosts."my isp.net": Invalid key in record`]);
  });

  test("an unknown key inside listeners[1] is an error with the index in its path", async () => {
    const path = await file(
      ["hostname: home.example.net", "listeners:", "  - role: submission", "    listen: 127.0.0.1:2525", "  - role: mx", "    listen: 127.0.0.1:25", "    greting: 100", ""].join("\n"),
    );
    assert.deepEqual(errorLines(await check(path)), [`${path}:7:5: listeners.1.greting: unknown key`]);
  });

  test("a value of the wrong type says what was expected, at the value", async () => {
    const path = await file(["hostname: home.example.net", "limits:", '  messageSize: "25M"', ""].join("\n"));
    const lines = errorLines(await check(path));
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.ok(lines[0]!.startsWith(`${path}:3:16: limits.messageSize: `), lines[0]);
    assert.match(lines[0]!, /expected number/);
  });

  test("a listen address without a port is refused", async () => {
    const path = await file(["listeners:", "  - role: mx", "    listen: 192.0.2.1", ""].join("\n"));
    assert.deepEqual(errorLines(await check(path)), [`${path}:3:13: listeners.0.listen: expected host:port, e.g. 127.0.0.1:2525 or [::1]:25`]);
  });

  test("a network range with a bad prefix length is refused", async () => {
    const path = await file(["trustedNetworks:", "  - 127.0.0.0/8", "  - 192.168.1.0/33", ""].join("\n"));
    assert.deepEqual(errorLines(await check(path)), [`${path}:3:5: trustedNetworks.1: expected an address range such as 192.0.2.0/24 or ::1/128`]);
  });

  test("several errors are reported at once", async () => {
    const path = await file(
      [
        "hostname: home.example.net",
        "relayhost: smtp.isp.example",
        "listeners:",
        "  - role: submission",
        "    listen: localhost",
        "  - role: mx",
        "    listen: 127.0.0.1:25",
        "    tlsMode: none",
        "limits:",
        "  recipients: many",
        "trustedNetworks:",
        "  - 10.0.0.0/40",
        "",
      ].join("\n"),
    );
    const lines = errorLines(await check(path));
    assert.equal(lines.length, 5, lines.join("\n"));
    const expected = [
      `${path}:2:1: relayhost: unknown key`,
      `${path}:5:13: listeners.0.listen: expected host:port`,
      `${path}:8:5: listeners.1.tlsMode: unknown key`,
      `${path}:10:15: limits.recipients: `,
      `${path}:12:5: trustedNetworks.0: expected an address range`,
    ];
    for (const prefix of expected) assert.ok(lines.some((l) => l.startsWith(prefix)), `missing ${prefix} in\n${lines.join("\n")}`);
  });

  test("an mx listener that requires AUTH is refused with the place of requireAuth", async () => {
    const path = await file(["hostname: home.example.net", "listeners:", "  - role: mx", "    listen: 127.0.0.1:25", "    requireAuth: true", ""].join("\n"));
    const lines = errorLines(await check(path));
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0]!, new RegExp(`^${regexpEscape(path)}:5:\\d+: listeners\\.0\\.requireAuth: .*cannot require AUTH`));
  });

  test("a --config file that does not exist is a configuration error", async () => {
    const path = join(dir, "missing.yaml");
    const lines = errorLines(await check(path));
    assert.equal(lines.length, 1);
    assert.ok(lines[0]!.startsWith(`${path}:`), lines[0]);
    assert.match(lines[0]!, /cannot read configuration \(ENOENT\)/);
  });

  test("the agent itself refuses to start on a bad file: exit 78, nothing started", async () => {
    const path = await file(["hostname: home.example.net", "spool: " + join(dir, "spool-never"), "listeners:", "  - role: mx", "    listen: 127.0.0.1:0", "bogus: 1", ""].join("\n"));
    const run = await homerelay(["--config", path], dir);
    assert.deepEqual(errorLines(run), [`${path}:6:1: bogus: unknown key`]);
    assert.doesNotMatch(run.stderr, /daemon started|listening on/);
    assert.equal(existsSync(join(dir, "spool-never")), false);
  });
});

describe("where the configuration is found", () => {
  let dir: string;
  let explicit: string;
  let fromEnv: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hr-config-find-"));
    explicit = join(dir, "explicit.yaml");
    fromEnv = join(dir, "from-env.yaml");
    await writeFile(explicit, GOOD);
    await writeFile(fromEnv, GOOD);
    await mkdir(join(dir, "empty"));
    await mkdir(join(dir, "good"));
    await writeFile(join(dir, "good", "homerelay.yaml"), GOOD);
    await mkdir(join(dir, "bad"));
    await writeFile(join(dir, "bad", "homerelay.yaml"), "bogus: 1\n");
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("--config comes before $HOMERELAY_CONFIG and ./homerelay.yaml", async () => {
    const run = await homerelay(["--check-config", "--config", explicit], join(dir, "bad"), { HOMERELAY_CONFIG: join(dir, "missing.yaml") });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `${explicit}: configuration OK\n`);
  });

  test("$HOMERELAY_CONFIG comes before ./homerelay.yaml, which is then not read", async () => {
    const run = await homerelay(["--check-config"], join(dir, "bad"), { HOMERELAY_CONFIG: fromEnv });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `${fromEnv}: configuration OK\n`);
  });

  test("without either, ./homerelay.yaml of the current directory is read", async () => {
    const good = await homerelay(["--check-config"], join(dir, "good"));
    assert.equal(good.code, 0, good.stderr);
    assert.equal(good.stdout, "homerelay.yaml: configuration OK\n");
    const bad = await homerelay(["--check-config"], join(dir, "bad"));
    assert.deepEqual(errorLines(bad), ["homerelay.yaml:1:1: bogus: unknown key"]);
  });

  test("with no file anywhere, the embedded defaults are used", async () => {
    const run = await homerelay(["--check-config"], join(dir, "empty"));
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "embedded defaults: configuration OK\n");
  });

  test("configPath gives the same order", () => {
    assert.equal(configPath("a.yaml", { HOMERELAY_CONFIG: "b.yaml" }), "a.yaml");
    assert.equal(configPath(undefined, { HOMERELAY_CONFIG: "b.yaml" }), "b.yaml");
  });
});

describe("parseConfigText", () => {
  const schema = z
    .object({
      name: z.string(),
      port: z.number().int().default(25),
      nested: z.object({ on: z.boolean() }).strict().optional(),
      list: z.array(z.object({ x: z.number() }).strict()).default([]),
    })
    .strict();

  /** The problems `text` is refused with. */
  function problems(text: string): ConfigProblem[] {
    try {
      parseConfigText(text, "test.yaml", schema);
    } catch (err) {
      assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
      assert.equal(err.message, err.problems.map(formatProblem).join("\n"));
      return err.problems;
    }
    assert.fail("expected parseConfigText to throw");
  }

  test("returns the validated value with defaults filled in", () => {
    assert.deepEqual(parseConfigText("name: relay\nlist:\n  - x: 1\n", "test.yaml", schema), { name: "relay", port: 25, list: [{ x: 1 }] });
  });

  test("an empty text is an empty mapping, so required keys are reported", () => {
    assert.deepEqual(problems(""), [{ file: "test.yaml", line: 1, column: 1, path: "name", message: "Invalid input: expected string, received undefined" }]);
  });

  test("an unknown key points at the key, a bad value at the value, with the array index in the path", () => {
    assert.deepEqual(
      problems("name: relay\nlist:\n  - x: 1\n  - x: two\n    y: 3\nextra: true\n"),
      [
        { file: "test.yaml", line: 4, column: 8, path: "list.1.x", message: "Invalid input: expected number, received string" },
        { file: "test.yaml", line: 5, column: 5, path: "list.1.y", message: "unknown key" },
        { file: "test.yaml", line: 6, column: 1, path: "extra", message: "unknown key" },
      ].sort(byPlace),
    );
  });

  test("a missing nested key points at its parent mapping", () => {
    assert.deepEqual(problems("name: relay\nnested:\n  other: 1\n").sort(byPlace), [
      { file: "test.yaml", line: 3, column: 3, path: "nested.on", message: "Invalid input: expected boolean, received undefined" },
      { file: "test.yaml", line: 3, column: 3, path: "nested.other", message: "unknown key" },
    ]);
  });

  test("YAML syntax errors are all reported, with no key path", () => {
    const found = problems("name: relay\nport: [25\nlist: {x: 1\n");
    assert.ok(found.length >= 1);
    for (const p of found) {
      assert.equal(p.file, "test.yaml");
      assert.equal(p.path, "");
      assert.ok(p.line >= 2, `line ${p.line}`);
      assert.ok(p.column >= 1, `column ${p.column}`);
    }
  });

  test("formatProblem leaves out an empty path", () => {
    assert.equal(formatProblem({ file: "f.yaml", line: 2, column: 3, path: "", message: "bad" }), "f.yaml:2:3: bad");
    assert.equal(formatProblem({ file: "f.yaml", line: 2, column: 3, path: "a.b", message: "bad" }), "f.yaml:2:3: a.b: bad");
  });
});

describe("embedded defaults", () => {
  test("spool ./var/spool, mailboxes ./var/mail, one submission listener on 127.0.0.1:2525, self-signed TLS", () => {
    const config = loadAgentConfig(null);
    assert.equal(config.source, "embedded defaults");
    assert.equal(config.spool, resolve("var/spool"));
    assert.equal(config.mailboxes, resolve("var/mail"));
    assert.deepEqual(config.listeners, [{ role: "submission", listen: { host: "127.0.0.1", port: 2525 }, tls: "starttls", greetingDelay: 0, requireAuth: false }]);
    assert.equal(config.tls, undefined);
    assert.deepEqual(config.trustedNetworks, ["127.0.0.0/8", "::1/128"]);
    assert.deepEqual(config.localDomains, [config.hostname, "localhost"]);
  });

  test("greetingDelay defaults to 100 ms on mx and 0 on submission; a configured one is kept", async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "hr-config-delay-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, "homerelay.yaml");
    await writeFile(
      path,
      ["listeners:", "  - {role: mx, listen: '127.0.0.1:25'}", "  - {role: submission, listen: '127.0.0.1:587'}", "  - {role: mx, listen: '127.0.0.1:2525', greetingDelay: 300}", ""].join("\n"),
    );
    assert.deepEqual(
      loadAgentConfig(path).listeners.map((l) => l.greetingDelay),
      [100, 0, 300],
    );
  });

  describe("an agent started with only a port-0 listener configured", () => {
    let agent: AgentProcess;
    before(async () => {
      // No hostname, spool or mailboxes: the agent runs on its defaults in its working directory.
      agent = await startAgent({ hostname: undefined, spool: undefined, mailboxes: undefined });
    });
    after(() => agent.cleanup());

    test("creates ./var/spool and a self-signed certificate for its hostname, and presents it on STARTTLS", async () => {
      const spool = join(agent.dir, "var", "spool");
      for (const state of ["incoming", "active", "deferred"]) assert.ok(existsSync(join(spool, state)), state);
      const onDisk = new X509Certificate(await readFile(join(spool, "private", "smtpd.crt")));
      assert.equal(onDisk.subject, onDisk.issuer, "self-signed");
      const hostname = /^CN=(.+)$/m.exec(onDisk.subject)?.[1];
      assert.ok(hostname, onDisk.subject);
      assert.notEqual(onDisk.checkHost(hostname), undefined);
      const presented = await startTlsCertificate(agent.ports[0]!);
      assert.equal(presented.fingerprint256, onDisk.fingerprint256);
    });

    test("delivers mail for postmaster@localhost into ./var/mail", async () => {
      const { dialog } = await SmtpDialog.open(agent.ports[0]!);
      assert.equal((await dialog.command("EHLO laptop.example.org")).code, 250);
      assert.equal((await dialog.command("MAIL FROM:<alice@laptop.example.org>")).code, 250);
      assert.equal((await dialog.command("RCPT TO:<postmaster@localhost>")).code, 250);
      const reply = await dialog.data("Subject: defaults\r\n\r\nIt works with nothing configured.\r\n");
      assert.equal(reply.code, 250, reply.text);
      await dialog.quit();
      await agent.waitForLog(/to=<postmaster@localhost>, relay=local, .*status=sent/);
      const newDir = join(agent.dir, "var", "mail", "postmaster", "new");
      const files = await readdir(newDir);
      assert.equal(files.length, 1);
      assert.match(await readFile(join(newDir, files[0]!), "utf8"), /It works with nothing configured\./);
    });
  });
});

/** Order problems by line, then column. */
function byPlace(a: ConfigProblem, b: ConfigProblem): number {
  return a.line - b.line || a.column - b.column;
}

/** A string for use inside a RegExp. */
function regexpEscape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The certificate a listener presents after STARTTLS. */
async function startTlsCertificate(port: number): Promise<X509Certificate> {
  const socket = netConnect({ port, host: "127.0.0.1" });
  socket.setEncoding("latin1");
  let buffer = "";
  const until = (pattern: RegExp) =>
    new Promise<void>((resolveRead, reject) => {
      const check = () => {
        if (!pattern.test(buffer)) return;
        socket.off("data", onData);
        buffer = "";
        resolveRead();
      };
      const onData = (d: string) => {
        buffer += d;
        check();
      };
      socket.on("data", onData);
      socket.once("error", reject);
      check();
    });
  await until(/^220 .*\r\n/m);
  socket.write("EHLO laptop.example.org\r\n");
  await until(/^250 .*\r\n/m);
  socket.write("STARTTLS\r\n");
  await until(/^220 .*\r\n/m);
  const secure = tlsConnect({ socket, rejectUnauthorized: false });
  await new Promise<void>((resolveTls, reject) => {
    secure.once("secureConnect", () => resolveTls());
    secure.once("error", reject);
  });
  const cert = secure.getPeerX509Certificate();
  secure.destroy();
  assert.ok(cert, "no certificate presented");
  return cert;
}
