// smtpd limits with their reply codes: size, recipients, line length, hop count, clients per address,
// command rate, idle and DATA timeouts; refused messages leave nothing behind. HELO names are never checked.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { SmtpDialog, type SmtpReply } from "../support/smtp-dialog.js";

const RCPT = "postmaster@home.example.net";

/** Poll `probe` until it returns true, for at most `ms`. */
async function eventually(what: string, probe: () => Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await delay(10);
  }
}

const listing = (dir: string) => readdir(dir).catch(() => [] as string[]);

/** Files anywhere in the queue or the Maildirs that contain `marker`. */
async function copiesOf(agent: AgentProcess, marker: string): Promise<string[]> {
  const dirs = ["incoming", "active", "deferred", "hold", "corrupt"].map((s) => join(agent.spool, s));
  for (const mailbox of await listing(agent.mailboxes)) dirs.push(join(agent.mailboxes, mailbox, "new"), join(agent.mailboxes, mailbox, "tmp"));
  const found: string[] = [];
  for (const dir of dirs) {
    for (const name of await listing(dir)) {
      if ((await readFile(join(dir, name), "latin1").catch(() => "")).includes(marker)) found.push(join(dir, name));
    }
  }
  return found;
}

/** A session on `port` that has said EHLO. */
async function session(port: number, helo = "laptop.example.org"): Promise<SmtpDialog> {
  const { dialog, greeting } = await SmtpDialog.open(port);
  assert.equal(greeting.code, 220, greeting.text);
  const ehlo = await dialog.command(`EHLO ${helo}`);
  assert.equal(ehlo.code, 250, ehlo.text);
  return dialog;
}

/** MAIL and RCPT for one local recipient, both expected to be accepted. */
async function envelope(dialog: SmtpDialog, from = "alice@home.example.net"): Promise<void> {
  assert.equal((await dialog.command(`MAIL FROM:<${from}>`)).code, 250);
  assert.equal((await dialog.command(`RCPT TO:<${RCPT}>`)).code, 250);
}

/**
 * Send a message in two writes; between them, wait until its queue file is being written in
 * incoming/, so that a refusal afterwards shows the partial file is removed.
 */
async function sendInTwoParts(agent: AgentProcess, dialog: SmtpDialog, first: string, rest: string): Promise<SmtpReply> {
  const incoming = join(agent.spool, "incoming");
  assert.deepEqual(await listing(incoming), []);
  assert.equal((await dialog.command("DATA")).code, 354);
  dialog.write(first);
  await eventually("the message has a queue file in incoming/", async () => (await listing(incoming)).length === 1);
  dialog.write(rest + ".\r\n");
  return dialog.read(30_000);
}

/** A message of lines of `width` characters (without CRLF), about `bytes` long, tagged with `marker`. */
function message(marker: string, bytes: number, width = 60): string {
  const head = `From: alice@home.example.net\r\nTo: ${RCPT}\r\nSubject: ${marker}\r\n\r\n`;
  const line = "x".repeat(width) + "\r\n";
  return head + line.repeat(Math.max(0, Math.ceil((bytes - head.length) / line.length)));
}

/** Assert a refusal left no partial file in incoming/ and no copy of the message anywhere. */
async function assertNothingKept(agent: AgentProcess, marker: string): Promise<void> {
  assert.deepEqual(await listing(join(agent.spool, "incoming")), [], "partial queue file left in incoming/");
  assert.deepEqual(await copiesOf(agent, marker), [], "a refused message was kept");
}

describe("message content limits", () => {
  let agent: AgentProcess;
  let submission: number;
  let mx: number;
  before(async () => {
    agent = await startAgent({
      listeners: [
        { role: "submission", listen: "127.0.0.1:0" },
        { role: "mx", listen: "127.0.0.1:0" },
      ],
      limits: { messageSize: 2000, recipients: 3, lineLength: 100, hopCount: 5 },
      users: Object.fromEntries(["alice", "bob", "carol", "dave"].map((name) => [name, { cramMd5Secret: `${name}-secret` }])),
    });
    [submission, mx] = agent.ports as [number, number];
  });
  after(() => agent.cleanup());

  test("MAIL FROM with SIZE= over messageSize is refused by smtp-server with 552 5.3.4", async () => {
    const dialog = await session(submission);
    const over = await dialog.command("MAIL FROM:<alice@home.example.net> SIZE=2001");
    assert.equal(over.code, 552);
    assert.equal(over.lines[0], "5.3.4 Error: message exceeds fixed maximum message size 2000");
    const at = await dialog.command("MAIL FROM:<alice@home.example.net> SIZE=2000");
    assert.equal(at.code, 250, at.text);
    await dialog.quit();
  });

  test("DATA larger than messageSize is refused with 552 5.3.4 and not kept", async () => {
    const marker = `size-${randomUUID()}`;
    const dialog = await session(submission);
    await envelope(dialog);
    const text = message(marker, 3000);
    const reply = await sendInTwoParts(agent, dialog, text.slice(0, 500), text.slice(500));
    assert.equal(reply.code, 552, reply.text);
    assert.equal(reply.lines[0], "5.3.4 Message size exceeds fixed limit");
    await assertNothingKept(agent, marker);
    await dialog.quit();
  });

  test("a message under messageSize is accepted", async () => {
    const marker = `small-${randomUUID()}`;
    const dialog = await session(submission);
    await envelope(dialog);
    const reply = await dialog.data(message(marker, 1500));
    assert.equal(reply.code, 250, reply.text);
    await dialog.quit();
  });

  test("RCPT beyond limits.recipients gets 452 4.5.3 and the message goes to the first ones only", async () => {
    const marker = `rcpt-${randomUUID()}`;
    const dialog = await session(submission);
    assert.equal((await dialog.command("MAIL FROM:<alice@home.example.net>")).code, 250);
    for (const rcpt of ["alice", "bob", "carol"]) assert.equal((await dialog.command(`RCPT TO:<${rcpt}@home.example.net>`)).code, 250);
    const fourth = await dialog.command("RCPT TO:<dave@home.example.net>");
    assert.equal(fourth.code, 452);
    assert.equal(fourth.lines[0], "4.5.3 Error: too many recipients");
    const reply = await dialog.data(message(marker, 200));
    assert.equal(reply.code, 250, reply.text);
    const id = /queued as (\S+)/.exec(reply.text)![1]!;
    await agent.waitForLog(new RegExp(`${id}: from=<alice@home\\.example\\.net>, size=\\d+, nrcpt=3 \\(queue active\\)`));
    await dialog.quit();
  });

  test("a line of exactly limits.lineLength is accepted", async () => {
    const dialog = await session(submission);
    await envelope(dialog);
    const reply = await dialog.data(message(`line-ok-${randomUUID()}`, 300, 100));
    assert.equal(reply.code, 250, reply.text);
    await dialog.quit();
  });

  test("a line one octet over limits.lineLength is refused with 552 5.6.0 and not kept", async () => {
    const marker = `line-${randomUUID()}`;
    const dialog = await session(submission);
    await envelope(dialog);
    const reply = await sendInTwoParts(agent, dialog, message(marker, 300), `${"y".repeat(101)}\r\nlast line\r\n`);
    assert.equal(reply.code, 552, reply.text);
    assert.match(reply.lines[0]!, /^5\.6\.0 Message line too long/);
    await assertNothingKept(agent, marker);
    await dialog.quit();
  });

  const hops = (n: number) => Array.from({ length: n }, (_, i) => `Received: from hop${i}.example by hop${i + 1}.example; Mon, 1 Jan 2024 11:00:0${i} +0000\r\n`).join("");

  test("one Received: header less than limits.hopCount is accepted", async () => {
    const dialog = await session(mx, "mx.remote.example");
    await envelope(dialog, "friend@remote.example");
    const reply = await dialog.data(hops(4) + message(`hops-ok-${randomUUID()}`, 200));
    assert.equal(reply.code, 250, reply.text);
    await dialog.quit();
  });

  test("limits.hopCount Received: headers (more than hopCount with ours) is a loop: 554 5.4.6, not kept", async () => {
    const marker = `loop-${randomUUID()}`;
    const dialog = await session(mx, "mx.remote.example");
    await envelope(dialog, "friend@remote.example");
    const reply = await sendInTwoParts(agent, dialog, hops(5), message(marker, 200));
    assert.equal(reply.code, 554, reply.text);
    assert.match(reply.lines[0]!, /^5\.4\.6 Too many hops/);
    await assertNothingKept(agent, marker);
    await dialog.quit();
  });

  test("a HELO name that does not match the client address is never a reason to refuse", async () => {
    for (const helo of ["mail.google.com", "[192.0.2.1]", "localhost", "not-a-hostname_at_all"]) {
      const marker = `helo-${randomUUID()}`;
      const dialog = await session(mx, helo);
      await envelope(dialog, "friend@remote.example");
      const reply = await dialog.data(message(marker, 200));
      assert.equal(reply.code, 250, `HELO ${helo}: ${reply.text}`);
      const id = /queued as (\S+)/.exec(reply.text)![1]!;
      await agent.waitForLog(new RegExp(`${id}: to=<${RCPT}>, relay=local, .*status=sent`));
      const maildir = join(agent.mailboxes, "postmaster", "new");
      const [copy] = (await copiesOf(agent, marker)).filter((path) => path.startsWith(maildir));
      assert.ok(copy, `HELO ${helo}: message not delivered to ${maildir}`);
      const received = (await readFile(copy, "latin1")).split(/\r?\n/).find((l) => l.startsWith("Received: from "));
      assert.equal(received, `Received: from ${helo} (unknown [127.0.0.1])`);
      await dialog.quit();
    }
  });
});

describe("limits.clientsPerAddress", () => {
  let agent: AgentProcess;
  before(async () => {
    agent = await startAgent({ limits: { clientsPerAddress: 2 } });
  });
  after(() => agent.cleanup());

  test("a third concurrent connection from one address gets 421 4.7.0; a slot frees when a client leaves", async () => {
    const port = agent.ports[0]!;
    const first = await session(port);
    const second = await session(port);
    const mark = agent.log().length;
    const { dialog: third, greeting } = await SmtpDialog.open(port);
    assert.equal(greeting.code, 421);
    assert.equal(greeting.lines[0], "4.7.0 home.example.net Error: too many connections from 127.0.0.1");
    await assert.rejects(third.read(), /connection closed/);
    assert.equal((await second.command("NOOP")).code, 250, "the clients within the limit keep their sessions");

    await first.quit();
    await agent.waitForLog(/disconnect from [\s\S]*disconnect from /, 10_000, mark);
    const fourth = await session(port);
    await fourth.quit();
    await second.quit();
  });
});

describe("limits.commandRate", () => {
  let agent: AgentProcess;
  before(async () => {
    agent = await startAgent({ limits: { commandRate: 5 } });
  });
  after(() => agent.cleanup());

  test("the command after the fifth in a minute gets 421 4.7.0 and the connection is closed", async () => {
    const dialog = await session(agent.ports[0]!);
    for (let i = 2; i <= 5; i++) assert.equal((await dialog.command("NOOP")).code, 250, `command ${i}`);
    const sixth = await dialog.command("NOOP");
    assert.equal(sixth.code, 421);
    assert.equal(sixth.lines[0], "4.7.0 home.example.net Error: too many commands, slow down");
    await assert.rejects(dialog.read(), /connection closed/);
    await agent.waitForLog(/Command rate limit exceeded: 6 from unknown\[127\.0\.0\.1\] for service submission/);
  });

  test("the count is per connection: a new one starts afresh", async () => {
    const dialog = await session(agent.ports[0]!);
    assert.equal((await dialog.command("NOOP")).code, 250);
    await dialog.quit();
  });
});

describe("timeouts", () => {
  let agent: AgentProcess;
  before(async () => {
    agent = await startAgent({ limits: { idleTimeout: 1, dataTimeout: 1 } });
  });
  after(() => agent.cleanup());

  test("a client idle for limits.idleTimeout gets 421 4.4.2 and is disconnected", async () => {
    const { dialog } = await SmtpDialog.open(agent.ports[0]!);
    // Timed from before the last command, so a busy test process can only make the wait look longer.
    const started = performance.now();
    assert.equal((await dialog.command("EHLO laptop.example.org")).code, 250);
    const reply = await dialog.read(10_000);
    const waited = performance.now() - started;
    assert.equal(reply.code, 421, reply.text);
    assert.match(reply.lines[0]!, /^4\.4\.2 /);
    await assert.rejects(dialog.read(), /connection closed/);
    assert.ok(waited >= 950, `closed after ${waited.toFixed(0)} ms of idleness`);
  });

  test("DATA that is still coming after limits.dataTimeout gets 421 4.4.2 and is not kept", async () => {
    const marker = `slow-${randomUUID()}`;
    const dialog = await session(agent.ports[0]!);
    await envelope(dialog);
    const started = performance.now();
    assert.equal((await dialog.command("DATA")).code, 354);
    dialog.write(message(marker, 200));
    // A slow but never idle client: a line every 200 ms keeps the idle timeout away.
    const trickle = setInterval(() => dialog.write("still sending\r\n"), 200);
    let reply: SmtpReply;
    try {
      reply = await dialog.read(10_000);
    } finally {
      clearInterval(trickle);
    }
    const waited = performance.now() - started;
    assert.equal(reply.code, 421, reply.text);
    assert.equal(reply.lines[0], "4.4.2 home.example.net Error: timeout exceeded");
    assert.ok(waited >= 950, `refused after ${waited.toFixed(0)} ms`);
    await assert.rejects(dialog.read(), /connection closed/);
    await eventually("the partial queue file is removed", async () => (await listing(join(agent.spool, "incoming"))).length === 0);
    await assertNothingKept(agent, marker);
  });
});
