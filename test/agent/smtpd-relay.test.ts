// End-to-end relay control and local recipient checks of the agent's SMTP intake: RFC 2505 relay tricks on mx
// and untrusted submission listeners, trusted relaying, unknown users at RCPT, and byte-exact alias delivery to Maildirs.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { smtplibSend } from "../support/python-smtplib.js";
import { SmtpDialog } from "../support/smtp-dialog.js";

const HOSTNAME = "home.example.net";
const ALIASES = "postmaster: root\nteam: alice, bob\n";

/** The reply to each RCPT TO of one transaction from a remote sender, keyed by the address as sent. */
async function rcptReplies(port: number, recipients: string[]): Promise<Record<string, string>> {
  const { dialog, greeting } = await SmtpDialog.open(port);
  try {
    assert.equal(greeting.code, 220, greeting.text);
    assert.equal((await dialog.command("EHLO client.example")).code, 250);
    const mail = await dialog.command("MAIL FROM:<someone@remote.example>");
    assert.equal(mail.text, "250 2.1.0 Accepted");
    const replies: Record<string, string> = {};
    for (const rcpt of recipients) replies[rcpt] = (await dialog.command(`RCPT TO:<${rcpt}>`)).text;
    return replies;
  } finally {
    await dialog.quit();
  }
}

/** The queue id from a `250 2.0.0 Ok: queued as ID` reply. */
function queueIdOf(reply: string): string {
  const m = /^250 2\.0\.0 Ok: queued as (\S+)$/.exec(reply);
  assert.ok(m, `expected a queued reply, got ${JSON.stringify(reply)}`);
  return m[1]!;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Our Received: header as stored in a Maildir (LF line ends), with the trailing LF. */
function receivedPattern(o: { proto: string; tls: boolean; id: string; rcpt: string }): RegExp {
  return new RegExp(
    "^Received: from client\\.example \\(unknown \\[127\\.0\\.0\\.1\\]\\)\\n" +
      (o.tls ? "\\t\\(using TLSv1\\.[23] with cipher [A-Z0-9_-]+\\)\\n" : "") +
      `\\tby ${escapeRegExp(HOSTNAME)} \\(homerelay\\) with ${o.proto} id ${escapeRegExp(o.id)}\\n` +
      `\\tfor <${escapeRegExp(o.rcpt)}>; (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \\d{1,2} [A-Z][a-z]{2} \\d{4} \\d{2}:\\d{2}:\\d{2} \\+0000\\n`,
  );
}

/**
 * The one message in `mailbox`'s Maildir must be exactly: Return-Path: and Delivered-To:, our
 * Received: header, then `original` with LF line ends.
 */
async function assertMaildirHolds(agent: AgentProcess, mailbox: string, o: { sender: string; deliveredTo: string; received: RegExp; original: Buffer }) {
  const dir = join(agent.mailboxes, mailbox, "new");
  const files = await readdir(dir);
  assert.equal(files.length, 1, `${dir}: ${files.join(", ")}`);
  const stored = (await readFile(join(dir, files[0]!))).toString("latin1");
  const prepend = `Return-Path: <${o.sender}>\nDelivered-To: ${o.deliveredTo}\n`;
  const received = o.received.exec(stored.slice(prepend.length));
  assert.ok(received, `no Received: header of ours after the delivery headers in:\n${stored}`);
  assert.equal(stored, prepend + received[0] + o.original.toString("latin1").replaceAll("\r\n", "\n"));
}

/** Message `id` is gone from the queue (delivered and removed). */
async function assertNotQueued(agent: AgentProcess, id: string) {
  for (const state of ["incoming", "active", "deferred"]) {
    assert.ok(!(await readdir(join(agent.spool, state))).includes(id), `${id} still in ${state}/`);
  }
}

/** Poll until `path` exists, for at most `ms`. */
async function waitForFile(path: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      await stat(path);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

// Two agents. `strangers` trusts only 192.0.2.0/24, so a loopback client is a stranger on both of its
// listeners, and it has neither aliases nor accounts. `home` keeps the default trustedNetworks (loopback
// trusted), with aliases and an account: its mx listener must still trust nobody by address.
let strangersDir: string;
let homeDir: string;
let strangers: AgentProcess;
let home: AgentProcess;
const listeners = [
  { role: "mx", listen: "127.0.0.1:0" },
  { role: "submission", listen: "127.0.0.1:0", requireAuth: false },
];

before(async () => {
  strangersDir = await mkdtemp(join(tmpdir(), "hr-relay-strangers-"));
  homeDir = await mkdtemp(join(tmpdir(), "hr-relay-home-"));
  strangers = await startAgent({ hostname: HOSTNAME, trustedNetworks: ["192.0.2.0/24"], listeners }, { dir: strangersDir });
  home = await startAgent(
    { hostname: HOSTNAME, listeners, aliases: join(homeDir, "aliases"), users: { carol: { cramMd5Secret: "tanstaafl" } } },
    { dir: homeDir, files: { aliases: ALIASES } },
  );
});

after(async () => {
  await strangers?.cleanup();
  await home?.cleanup();
  await rm(strangersDir, { recursive: true, force: true });
  await rm(homeDir, { recursive: true, force: true });
});

/** RFC 2505 relay tricks and what a client without relay permission must get for each. */
const RELAY_TRICKS: Record<string, string> = {
  "user%remote.example@home.example.net": "554 5.7.1 <user%remote.example@home.example.net>: Relay access denied",
  "remote.example!user@home.example.net": "554 5.7.1 <remote.example!user@home.example.net>: Relay access denied",
  // smtp-server strips the source route, as RFC 5321 asks; what is left is a remote address.
  "@home.example.net:user@remote.example": "554 5.7.1 <user@remote.example>: Relay access denied",
  '"user@remote.example"@home.example.net': "501 5.1.3 Error: Bad recipient address syntax",
  '"user%remote.example"@home.example.net': '554 5.7.1 <"user%remote.example"@home.example.net>: Relay access denied',
  "user@[127.0.0.1]": "554 5.7.1 <user@[127.0.0.1]>: Relay access denied",
  "user@[IPv6:::1]": "554 5.7.1 <user@[IPv6:::1]>: Relay access denied",
  "user@home.example.net.": "501 5.1.3 Error: Bad recipient address syntax",
  "user@remote.example": "554 5.7.1 <user@remote.example>: Relay access denied",
  "user@REMOTE.Example": "554 5.7.1 <user@REMOTE.Example>: Relay access denied",
  "postmaster@HOME.Example.NET": "250 2.1.5 Accepted",
};

describe("relay control", () => {
  test("an mx listener refuses every relay trick and accepts postmaster in any case of the domain", async () => {
    assert.deepEqual(await rcptReplies(strangers.ports[0]!, Object.keys(RELAY_TRICKS)), RELAY_TRICKS);
  });

  test("a submission client outside trustedNetworks, without AUTH, is refused the same", async () => {
    assert.deepEqual(await rcptReplies(strangers.ports[1]!, Object.keys(RELAY_TRICKS)), RELAY_TRICKS);
  });

  test("an mx listener trusts nobody by address, even a client inside trustedNetworks", async () => {
    assert.deepEqual(await rcptReplies(home.ports[0]!, Object.keys(RELAY_TRICKS)), RELAY_TRICKS);
  });

  test("a trusted submission client may relay to a remote domain; the message waits in deferred/", async () => {
    const { dialog } = await SmtpDialog.open(home.ports[1]!);
    try {
      await dialog.command("EHLO client.example");
      assert.equal((await dialog.command("MAIL FROM:<alice@home.example.net>")).text, "250 2.1.0 Accepted");
      assert.equal((await dialog.command("RCPT TO:<user@remote.example>")).text, "250 2.1.5 Accepted");
      const id = queueIdOf((await dialog.data("Subject: relayed\r\n\r\nfor a remote domain\r\n")).text);
      await home.waitForLog(new RegExp(`${id}: to=<user@remote\\.example>, relay=none, .*status=deferred`));
      await waitForFile(join(home.spool, "deferred", id));
    } finally {
      await dialog.quit();
    }
  });
});

describe("local recipient table", () => {
  test("postmaster exists without aliases or accounts; other local users are unknown at RCPT", async () => {
    assert.deepEqual(await rcptReplies(strangers.ports[0]!, ["postmaster@home.example.net", "PostMaster@localhost", "alice@home.example.net", "root@localhost"]), {
      "postmaster@home.example.net": "250 2.1.5 Accepted",
      "PostMaster@localhost": "250 2.1.5 Accepted",
      "alice@home.example.net": "550 5.1.1 <alice@home.example.net>: Recipient address rejected: User unknown in local recipient table",
      "root@localhost": "550 5.1.1 <root@localhost>: Recipient address rejected: User unknown in local recipient table",
    });
  });

  test("alias keys, alias members, accounts and address extensions are local recipients, in any case", async () => {
    const accepted = [
      "postmaster@home.example.net",
      "team@home.example.net",
      "TEAM@HOME.EXAMPLE.NET",
      "root@home.example.net",
      "alice@home.example.net",
      "bob@localhost",
      "carol@home.example.net",
      "alice+tag@home.example.net",
      "Alice+Tag@Home.Example.Net",
      "team+list@home.example.net",
    ];
    const unknown = ["nobody@home.example.net", "nobody+alice@home.example.net", "alice-tag@home.example.net", "dave@localhost"];
    const expected = Object.fromEntries([
      ...accepted.map((a) => [a, "250 2.1.5 Accepted"]),
      ...unknown.map((a) => [a, `550 5.1.1 <${a}>: Recipient address rejected: User unknown in local recipient table`]),
    ]);
    assert.deepEqual(await rcptReplies(home.ports[0]!, [...accepted, ...unknown]), expected);
  });

  test("a trusted submission client is refused unknown local users too", async () => {
    assert.deepEqual(await rcptReplies(home.ports[1]!, ["nobody@home.example.net"]), {
      "nobody@home.example.net": "550 5.1.1 <nobody@home.example.net>: Recipient address rejected: User unknown in local recipient table",
    });
  });

  test("bare RCPT TO:<postmaster> is accepted and delivered to the postmaster alias", async () => {
    const { dialog } = await SmtpDialog.open(home.ports[0]!);
    try {
      await dialog.command("EHLO client.example");
      await dialog.command("MAIL FROM:<someone@remote.example>");
      assert.equal((await dialog.command("RCPT TO:<postmaster>")).text, "250 2.1.5 Accepted");
      const id = queueIdOf((await dialog.data("Subject: to the bare postmaster\r\n\r\nhello\r\n")).text);
      await home.waitForLog(new RegExp(`${id}: removed`));
    } finally {
      await dialog.quit();
    }
    const files = await readdir(join(home.mailboxes, "root", "new"));
    assert.equal(files.length, 1);
    assert.match(await readFile(join(home.mailboxes, "root", "new", files[0]!), "utf8"), /^Subject: to the bare postmaster$/m);
  });
});

describe("delivery into Maildirs", () => {
  test("a message sent by nodemailer over verified STARTTLS to an alias lands in each member's Maildir byte for byte", async () => {
    const composer = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: "windows" });
    const composed = await composer.sendMail({
      from: "Carol <carol@home.example.net>",
      to: "The team <team@home.example.net>",
      subject: "Grüße from nodemailer",
      text: `.a line that starts with a dot\n\n${"long line ".repeat(30)}\nbye\n`,
      html: "<p>Grüße</p>",
      attachments: [{ filename: "notes.txt", content: "attached\r\n.\r\n" }],
    });
    const original = composed.message as Buffer;

    const cert = await readFile(join(home.spool, "private", "smtpd.crt"), "utf8");
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port: home.ports[1]!,
      name: "client.example",
      requireTLS: true,
      tls: { ca: cert, servername: HOSTNAME },
    });
    try {
      const sent = await transport.sendMail({ envelope: { from: "carol@home.example.net", to: ["team@home.example.net"] }, raw: original });
      const id = queueIdOf(sent.response);
      await home.waitForLog(new RegExp(`${id}: removed`));
      const received = receivedPattern({ proto: "ESMTPS", tls: true, id, rcpt: "team@home.example.net" });
      for (const mailbox of ["alice", "bob"]) {
        await assertMaildirHolds(home, mailbox, { sender: "carol@home.example.net", deliveredTo: "team@home.example.net", received, original });
      }
      await assertNotQueued(home, id);
    } finally {
      transport.close();
    }
  });

  test("a message sent by Python's smtplib to an extension address lands in the account's Maildir byte for byte", async () => {
    // No Message-ID: on purpose; an mx listener adds nothing but its Received: header.
    const original = Buffer.from(
      [
        "From: Bob <bob@remote.example>",
        "To: carol+lists@home.example.net",
        "Subject: smtplib to an extension address",
        "Date: Thu, 26 Nov 2026 05:40:00 +0000",
        "",
        ".leading dot",
        "..two leading dots",
        "",
        "last line",
        "",
      ].join("\r\n"),
    );
    const replies = await smtplibSend({ port: home.ports[0]!, sender: "bob@remote.example", recipient: "carol+lists@home.example.net", message: original });
    assert.equal(replies[0], "250 2.1.0 Accepted");
    assert.equal(replies[1], "250 2.1.5 Accepted");
    const id = queueIdOf(replies[2]!);
    await home.waitForLog(new RegExp(`${id}: removed`));
    await assertMaildirHolds(home, "carol", {
      sender: "bob@remote.example",
      deliveredTo: "carol+lists@home.example.net",
      received: receivedPattern({ proto: "ESMTP", tls: false, id, rcpt: "carol+lists@home.example.net" }),
      original,
    });
    await assertNotQueued(home, id);
  });
});
