// Signals: SIGTERM stops accepting, lets a message in DATA finish and be queued, then exits 0;
// SIGHUP reloads the configuration, keeping the running one when the new one is bad.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { SmtpDialog } from "../support/smtp-dialog.js";

/**
 * What happens to a new TCP connection to `port`: refused, accepted (closed again at once), or reset
 * (it reached the backlog just as the listening socket closed).
 */
function tryConnect(port: number): Promise<"refused" | "accepted" | "reset"> {
  return new Promise((resolveOutcome, reject) => {
    const socket = connect({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolveOutcome("accepted");
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNREFUSED") resolveOutcome("refused");
      else if (err.code === "ECONNRESET") resolveOutcome("reset");
      else reject(err);
    });
  });
}

/** The exit status of the agent, waiting for the exit if it has not happened yet. */
async function exitStatus(agent: AgentProcess): Promise<number | null> {
  if (agent.child.exitCode !== null) return agent.child.exitCode;
  const [code] = (await once(agent.child, "exit")) as [number | null];
  return code;
}

/** Open a session and get as far as RCPT TO. */
async function transaction(port: number, rcpt: string) {
  const { dialog, greeting } = await SmtpDialog.open(port);
  assert.equal(greeting.code, 220);
  assert.equal((await dialog.command("EHLO laptop.example.org")).code, 250);
  assert.equal((await dialog.command("MAIL FROM:<alice@home.example.net>")).code, 250);
  const reply = await dialog.command(`RCPT TO:<${rcpt}>`);
  return { dialog, reply };
}

describe("SIGTERM", () => {
  let agent: AgentProcess;
  before(async () => {
    agent = await startAgent();
  });
  after(() => agent.cleanup());

  test("stops accepting, finishes the message in DATA, queues it, tells idle clients 421 and exits 0", { timeout: 60_000 }, async () => {
    const port = agent.ports[0]!;
    const { dialog: sending, reply } = await transaction(port, "postmaster@home.example.net");
    assert.equal(reply.code, 250);
    assert.equal((await sending.command("DATA")).code, 354);
    sending.write("From: alice@home.example.net\r\nTo: postmaster@home.example.net\r\nSubject: shutdown\r\n\r\nfirst half, sent before SIGTERM\r\n");
    const { dialog: idle } = await SmtpDialog.open(port);
    assert.equal((await idle.command("EHLO desktop.example.org")).code, 250);

    const mark = agent.log().length;
    agent.child.kill("SIGTERM");
    await agent.waitForLog(/terminating on signal SIGTERM/, 10_000, mark);
    const deadline = Date.now() + 5_000;
    let outcome = await tryConnect(port);
    while (outcome !== "refused" && Date.now() < deadline) outcome = await tryConnect(port);
    assert.equal(outcome, "refused", "new connections are still accepted after SIGTERM");
    assert.equal(agent.child.exitCode, null, "the agent exited with a message still in DATA");

    sending.write("second half, sent after SIGTERM\r\n.\r\n");
    const queued = await sending.read();
    assert.equal(queued.code, 250, queued.text);
    const id = /^2\.0\.0 Ok: queued as (\S+)$/.exec(queued.lines[0]!)?.[1];
    assert.ok(id, queued.text);

    const shutdown = await idle.read();
    assert.equal(shutdown.code, 421);
    assert.match(shutdown.lines[0]!, /^4\.3\.2 home\.example\.net Service shutting down/);
    assert.equal(await exitStatus(agent), 0);

    // Safe on disk: still in the queue, or already delivered if the queue manager got to it before stopping.
    assert.deepEqual(await readdir(join(agent.spool, "incoming")), []);
    const places = [join(agent.spool, "active", id), join(agent.spool, "deferred", id)];
    const maildir = join(agent.mailboxes, "postmaster", "new");
    for (const name of await readdir(maildir).catch(() => [])) places.push(join(maildir, name));
    const copies: string[] = [];
    for (const place of places) {
      const content = await readFile(place, "latin1").catch(() => "");
      if (/first half, sent before SIGTERM\r?\nsecond half, sent after SIGTERM\r?\n/.test(content)) copies.push(place);
    }
    assert.equal(copies.length, 1, `the message (${id}) must be in exactly one place, found ${JSON.stringify(copies)}`);
  });
});

describe("SIGHUP", () => {
  let agent: AgentProcess;
  let config: Record<string, unknown>;
  let port: number;
  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), "hr-agent-"));
    agent = await startAgent(
      { localDomains: ["home.example.net"], users: { alice: { cramMd5Secret: "tanstaafl" } }, aliases: join(dir, "aliases") },
      { dir, files: { aliases: "postmaster: alice\n" } },
    );
    config = parse(await readFile(agent.configFile, "utf8")) as Record<string, unknown>;
    port = agent.ports[0]!;
  });
  after(() => agent.cleanup());

  /** Send SIGHUP and return the log offset it was sent at. */
  const hangup = () => {
    const mark = agent.log().length;
    agent.child.kill("SIGHUP");
    return mark;
  };

  test("a bad configuration is reported with its place, and the running one is kept", async () => {
    await writeFile(agent.configFile, stringify({ ...config, limits: { recipients: "lots" } }));
    const mark = hangup();
    const [line] = await agent.waitForLog(/reload failed.*/, 10_000, mark);
    assert.match(line, new RegExp(`reload failed, keeping the running configuration: .*${agent.configFile.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+: limits\\.recipients: `));

    const { dialog, reply } = await transaction(port, "alice@home.example.net");
    assert.equal(reply.code, 250, "the agent no longer answers on its port after a failed reload");
    const unknown = await dialog.command("RCPT TO:<bob@home.example.net>");
    assert.equal(unknown.code, 550);
    assert.match(unknown.lines[0]!, /^5\.1\.1 /);
    await dialog.quit();
  });

  test("a good changed configuration takes effect: a new account and a new alias become recipients", async () => {
    const before = await transaction(port, "bob@home.example.net");
    assert.equal(before.reply.code, 550, "bob must not exist before the reload");
    assert.equal((await before.dialog.command("RCPT TO:<helpdesk@home.example.net>")).code, 550);
    await before.dialog.quit();

    await writeFile(join(agent.dir, "aliases"), "postmaster: alice\nhelpdesk: alice, bob\n");
    await writeFile(agent.configFile, stringify({ ...config, users: { alice: { cramMd5Secret: "tanstaafl" }, bob: { cramMd5Secret: "s3cret" } } }));
    const mark = hangup();
    await agent.waitForLog(/reload -- version \S+, configuration /, 10_000, mark);
    assert.doesNotMatch(agent.log().slice(mark), /reload failed/);
    // The listeners are opened anew; with port 0 in the configuration they get new ports.
    const ports = [...agent.log().slice(mark).matchAll(/listening on 127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]));
    assert.equal(ports.length, 1, agent.log().slice(mark));
    port = ports[0]!;

    const after = await transaction(port, "bob@home.example.net");
    assert.equal(after.reply.code, 250, after.reply.text);
    const alias = await after.dialog.command("RCPT TO:<helpdesk@home.example.net>");
    assert.equal(alias.code, 250, alias.text);
    const stranger = await after.dialog.command("RCPT TO:<carol@home.example.net>");
    assert.equal(stranger.code, 550);
    await after.dialog.quit();
  });
});
