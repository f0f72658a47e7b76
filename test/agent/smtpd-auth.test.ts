// End-to-end TLS and AUTH of the agent's SMTP intake: the generated certificate and spool modes, STARTTLS and
// implicit TLS, AUTH PLAIN/LOGIN/CRAM-MD5, sender ownership, failed-AUTH slowdown, and AUTH-before-TLS refusal.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { connect as tlsConnect } from "node:tls";
import nodemailer from "nodemailer";
import { hashPassword } from "../../agent/smtpd/password.js";
import { HookedSMTPServer } from "../../agent/smtpd/smtp-server-hooks.js";
import { CLI, startAgent, type AgentProcess } from "../support/agent-process.js";
import { smtplibSend } from "../support/python-smtplib.js";
import { SmtpDialog } from "../support/smtp-dialog.js";

const HOSTNAME = "home.example.net";
const ALICE_PASSWORD = "correct horse battery staple";
const BOB_PASSWORD = "Tr0ub4dor&3";
const CAROL_SECRET = "tanstaafl";
const NOT_OWNED = (sender: string, user: string) => `553 5.7.1 <${sender}>: Sender address rejected: not owned by user ${user}`;

/** `homerelay hash-password`, the password on standard input as an administrator would type it. */
function cliHash(password: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, "hash-password"], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`hash-password exited with ${code}`))));
    child.stdin.end(password + "\n");
  });
}

function base64(text: string): string {
  return Buffer.from(text).toString("base64");
}

/** The initial response of AUTH PLAIN. */
function plain(user: string, password: string): string {
  return base64(`\0${user}\0${password}`);
}

/** The queue id from a `250 2.0.0 Ok: queued as ID` reply. */
function queueIdOf(reply: string): string {
  const m = /^250 2\.0\.0 Ok: queued as (\S+)$/.exec(reply);
  assert.ok(m, `expected a queued reply, got ${JSON.stringify(reply)}`);
  return m[1]!;
}

/** The envelope record (first line) of a queue file that waits in deferred/; polls until it is there. */
async function deferredRecord(agent: AgentProcess, id: string): Promise<{ envelope: { sender: string; recipients: { address: string }[] }; saslUser?: string }> {
  const file = join(agent.spool, "deferred", id);
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const text = await readFile(file, "utf8");
      return JSON.parse(text.slice(0, text.indexOf("\n")));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Connect to the implicit TLS listener trusting only `ca`; resolves with the verified socket's facts. */
function implicitTlsPinned(port: number, ca: string): Promise<{ authorized: boolean; fingerprint256: string; greeting: string }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ port, host: "127.0.0.1", ca, servername: HOSTNAME });
    socket.once("error", reject);
    socket.once("secureConnect", () => {
      const authorized = socket.authorized;
      const fingerprint256 = socket.getPeerCertificate().fingerprint256;
      socket.setEncoding("latin1");
      socket.once("data", (greeting: string) => {
        socket.destroy();
        resolve({ authorized, fingerprint256, greeting });
      });
    });
  });
}

let dir: string;
let agent: AgentProcess;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hr-auth-"));
  agent = await startAgent(
    {
      hostname: HOSTNAME,
      localDomains: ["home.example.net", "home.example.org"],
      // Loopback is not trusted: relaying needs AUTH.
      trustedNetworks: ["192.0.2.0/24"],
      listeners: [
        { role: "submission", listen: "127.0.0.1:0", tls: "starttls", requireAuth: false },
        { role: "submission", listen: "127.0.0.1:0", tls: "implicit", requireAuth: true },
        { role: "mx", listen: "127.0.0.1:0" },
      ],
      users: {
        alice: { password: await cliHash(ALICE_PASSWORD) },
        bob: { password: await hashPassword(BOB_PASSWORD), senders: ["bob@home.example.net", "*@bob.example"] },
        carol: { cramMd5Secret: CAROL_SECRET },
      },
    },
    { dir },
  );
});

after(async () => {
  await agent?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

const submission = () => agent.ports[0]!;
const implicit = () => agent.ports[1]!;
const mx = () => agent.ports[2]!;

describe("generated TLS certificate", () => {
  test("is self-signed for the hostname (CN and SAN); key 0600, spool root 0755, queue and private dirs 0700", async () => {
    const cert = new X509Certificate(await readFile(join(agent.spool, "private", "smtpd.crt")));
    assert.equal(cert.subject, `CN=${HOSTNAME}`);
    assert.equal(cert.issuer, cert.subject);
    assert.ok(cert.verify(cert.publicKey), "signed by its own key");
    assert.equal(cert.subjectAltName, `DNS:${HOSTNAME}`);
    assert.equal(cert.checkHost(HOSTNAME), HOSTNAME);
    assert.ok(Date.parse(cert.validTo) > Date.now() + 365 * 86400_000, cert.validTo);

    assert.equal((await stat(join(agent.spool, "private", "smtpd.key"))).mode & 0o777, 0o600);
    assert.equal((await stat(agent.spool)).mode & 0o777, 0o755);
    for (const sub of ["incoming", "active", "deferred", "hold", "corrupt", "status", "private"]) {
      assert.equal((await stat(join(agent.spool, sub))).mode & 0o777, 0o700, sub);
    }
  });

  test("STARTTLS verifies for a client that pins it as its CA, and only for the configured hostname", async () => {
    const ca = await readFile(join(agent.spool, "private", "smtpd.crt"), "utf8");
    const verify = (tls: Record<string, unknown>) =>
      nodemailer.createTransport({ host: "127.0.0.1", port: submission(), name: "client.example", requireTLS: true, tls }).verify();
    assert.equal(await verify({ ca, servername: HOSTNAME }), true);
    await assert.rejects(verify({ servername: HOSTNAME }), /self[- ]signed certificate/);
    await assert.rejects(verify({ ca, servername: "other.example" }), /does not match certificate's altnames/);
  });

  test("an implicit TLS listener speaks TLS from the first byte with the same certificate, and requires AUTH before MAIL", async () => {
    const pem = await readFile(join(agent.spool, "private", "smtpd.crt"), "utf8");
    const pinned = await implicitTlsPinned(implicit(), pem);
    assert.equal(pinned.authorized, true);
    assert.equal(pinned.fingerprint256, new X509Certificate(pem).fingerprint256);
    assert.match(pinned.greeting, /^220 home\.example\.net /);

    const { dialog } = await SmtpDialog.open(implicit(), "127.0.0.1", { implicitTls: true });
    try {
      const ehlo = await dialog.command("EHLO client.example");
      assert.ok(ehlo.lines.includes("AUTH PLAIN LOGIN CRAM-MD5"), ehlo.text);
      assert.ok(!ehlo.lines.includes("STARTTLS"), ehlo.text);
      assert.equal((await dialog.command("MAIL FROM:<alice@home.example.net>")).text, "530 5.7.0 Error: authentication Required");
      assert.equal((await dialog.command(`AUTH PLAIN ${plain("alice", ALICE_PASSWORD)}`)).text, "235 2.7.0 Authentication successful");
      assert.equal((await dialog.command("MAIL FROM:<alice@home.example.net>")).text, "250 2.1.0 Accepted");
      assert.equal((await dialog.command("RCPT TO:<friend@remote.example>")).text, "250 2.1.5 Accepted");
    } finally {
      await dialog.quit();
    }
  });
});

describe("AUTH", () => {
  test("submission offers PLAIN, LOGIN and CRAM-MD5; an mx listener offers no AUTH and does not know the command", async () => {
    const sub = await SmtpDialog.open(submission());
    try {
      const ehlo = await sub.dialog.command("EHLO client.example");
      assert.ok(ehlo.lines.includes("AUTH PLAIN LOGIN CRAM-MD5"), ehlo.text);
    } finally {
      await sub.dialog.quit();
    }
    const { dialog } = await SmtpDialog.open(mx());
    try {
      const ehlo = await dialog.command("EHLO client.example");
      assert.ok(ehlo.lines.includes("STARTTLS"), ehlo.text);
      assert.ok(!ehlo.lines.some((l) => /^AUTH\b/i.test(l)), ehlo.text);
      assert.equal((await dialog.command(`AUTH PLAIN ${plain("alice", ALICE_PASSWORD)}`)).text, "500 5.5.2 Error: command not recognized");
      assert.equal((await dialog.command("MAIL FROM:<alice@home.example.net>")).code, 250);
      assert.equal((await dialog.command("RCPT TO:<friend@remote.example>")).text, "554 5.7.1 <friend@remote.example>: Relay access denied");
    } finally {
      await dialog.quit();
    }
  });

  test("AUTH PLAIN against the hash from `homerelay hash-password` lets the client relay; the message is queued for its account", async () => {
    const { dialog } = await SmtpDialog.open(submission());
    try {
      await dialog.command("EHLO client.example");
      assert.equal((await dialog.command("MAIL FROM:<alice@home.example.net>")).text, "250 2.1.0 Accepted");
      assert.equal((await dialog.command("RCPT TO:<friend@remote.example>")).text, "554 5.7.1 <friend@remote.example>: Relay access denied");
      assert.equal((await dialog.command("RSET")).code, 250);
      assert.equal((await dialog.command(`AUTH PLAIN ${plain("alice", ALICE_PASSWORD)}`)).text, "235 2.7.0 Authentication successful");
      assert.equal((await dialog.command("MAIL FROM:<alice@home.example.net>")).text, "250 2.1.0 Accepted");
      assert.equal((await dialog.command("RCPT TO:<friend@remote.example>")).text, "250 2.1.5 Accepted");
      const id = queueIdOf((await dialog.data("Subject: after AUTH PLAIN\r\n\r\nrelayed\r\n")).text);
      await agent.waitForLog(new RegExp(`${id}: client=unknown\\[127\\.0\\.0\\.1\\], sasl_method=PLAIN, sasl_username=alice\\n`));
      const record = await deferredRecord(agent, id);
      assert.equal(record.saslUser, "alice");
      assert.deepEqual(record.envelope.recipients, [{ address: "friend@remote.example" }]);
    } finally {
      await dialog.quit();
    }
  });

  test("AUTH LOGIN; an account may use only its own envelope senders (default: name@ each local domain)", async () => {
    const { dialog } = await SmtpDialog.open(submission());
    try {
      await dialog.command("EHLO client.example");
      assert.equal((await dialog.command("AUTH LOGIN")).text, "334 VXNlcm5hbWU6");
      assert.equal((await dialog.command(base64("alice"))).text, "334 UGFzc3dvcmQ6");
      assert.equal((await dialog.command(base64(ALICE_PASSWORD))).text, "235 2.7.0 Authentication successful");
      const mailFrom = async (sender: string) => {
        const reply = (await dialog.command(`MAIL FROM:<${sender}>`)).text;
        if (reply.startsWith("250")) await dialog.command("RSET");
        return reply;
      };
      assert.equal(await mailFrom("alice@home.example.net"), "250 2.1.0 Accepted");
      assert.equal(await mailFrom("alice@home.example.org"), "250 2.1.0 Accepted");
      assert.equal(await mailFrom("alice@HOME.Example.Net"), "250 2.1.0 Accepted");
      assert.equal(await mailFrom("bob@home.example.net"), NOT_OWNED("bob@home.example.net", "alice"));
      assert.equal(await mailFrom("alice@remote.example"), NOT_OWNED("alice@remote.example", "alice"));
    } finally {
      await dialog.quit();
    }
  });

  test("users.<name>.senders replaces the default sender addresses", async () => {
    const { dialog } = await SmtpDialog.open(submission());
    try {
      await dialog.command("EHLO client.example");
      assert.equal((await dialog.command(`AUTH PLAIN ${plain("bob", BOB_PASSWORD)}`)).text, "235 2.7.0 Authentication successful");
      const mailFrom = async (sender: string) => {
        const reply = (await dialog.command(`MAIL FROM:<${sender}>`)).text;
        if (reply.startsWith("250")) await dialog.command("RSET");
        return reply;
      };
      assert.equal(await mailFrom("bob@home.example.net"), "250 2.1.0 Accepted");
      assert.equal(await mailFrom("anything@bob.example"), "250 2.1.0 Accepted");
      assert.equal(await mailFrom("bob@home.example.org"), NOT_OWNED("bob@home.example.org", "bob"));
      assert.equal(await mailFrom("alice@home.example.net"), NOT_OWNED("alice@home.example.net", "bob"));
    } finally {
      await dialog.quit();
    }
  });

  test("CRAM-MD5 against cramMd5Secret; refused for an account without one", async () => {
    const { dialog } = await SmtpDialog.open(submission());
    try {
      await dialog.command("EHLO client.example");
      const noSecret = await dialog.command("AUTH CRAM-MD5");
      assert.equal(noSecret.code, 334);
      const digestFor = (challenge: string, secret: string) => createHmac("md5", secret).update(Buffer.from(challenge, "base64")).digest("hex");
      assert.equal((await dialog.command(base64(`alice ${digestFor(noSecret.lines[0]!, ALICE_PASSWORD)}`))).text, "535 5.7.8 Error: authentication failed: authentication failure");
      const wrong = await dialog.command("AUTH CRAM-MD5");
      assert.equal((await dialog.command(base64(`carol ${digestFor(wrong.lines[0]!, "not the secret")}`))).text, "535 5.7.8 Error: authentication failed: authentication failure");
      const challenge = await dialog.command("AUTH CRAM-MD5");
      assert.match(Buffer.from(challenge.lines[0]!, "base64").toString(), /^<.+@.+>$/);
      assert.equal((await dialog.command(base64(`carol ${digestFor(challenge.lines[0]!, CAROL_SECRET)}`))).text, "235 2.7.0 Authentication successful");
    } finally {
      await dialog.quit();
    }
  });

  test("Python's smtplib logs in with CRAM-MD5 and relays", async () => {
    const replies = await smtplibSend({
      port: submission(),
      login: { user: "carol", password: CAROL_SECRET },
      sender: "carol@home.example.org",
      recipient: "friend@remote.example",
      message: Buffer.from("Subject: from smtplib\r\n\r\nhello\r\n"),
    });
    assert.deepEqual(replies.slice(0, 3), ["235 2.7.0 Authentication successful", "250 2.1.0 Accepted", "250 2.1.5 Accepted"]);
    const id = queueIdOf(replies[3]!);
    await agent.waitForLog(new RegExp(`${id}: client=unknown\\[127\\.0\\.0\\.1\\], sasl_method=CRAM-MD5, sasl_username=carol\\n`));
    assert.equal((await deferredRecord(agent, id)).saslUser, "carol");
  });

  test("nodemailer authenticates with LOGIN over verified STARTTLS and relays", async () => {
    const ca = await readFile(join(agent.spool, "private", "smtpd.crt"), "utf8");
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port: submission(),
      name: "client.example",
      requireTLS: true,
      tls: { ca, servername: HOSTNAME },
      auth: { user: "alice", pass: ALICE_PASSWORD },
      authMethod: "LOGIN",
    });
    try {
      const sent = await transport.sendMail({ from: "alice@home.example.net", to: "friend@remote.example", subject: "from nodemailer", text: "hello\n" });
      const id = queueIdOf(sent.response);
      await agent.waitForLog(new RegExp(`${id}: client=unknown\\[127\\.0\\.0\\.1\\], sasl_method=LOGIN, sasl_username=alice\\n`));
      assert.equal((await deferredRecord(agent, id)).saslUser, "alice");
      const queued = await readFile(join(agent.spool, "deferred", id), "utf8");
      assert.match(queued, /\r\n\tby home\.example\.net \(homerelay\) with ESMTPSA id /);
    } finally {
      transport.close();
    }
  });

  test("failed AUTH answers 535 5.7.8, is logged with the client address, and the 4th failure in a row is slowed down", async () => {
    const { dialog } = await SmtpDialog.open(submission());
    try {
      await dialog.command("EHLO client.example");
      // A success first clears failures left by other tests.
      assert.equal((await dialog.command(`AUTH PLAIN ${plain("alice", ALICE_PASSWORD)}`)).code, 235);
    } finally {
      await dialog.quit();
    }
    const from = agent.log().length;
    const durations: number[] = [];
    for (let attempt = 1; attempt <= 4; attempt++) {
      const { dialog } = await SmtpDialog.open(submission());
      try {
        await dialog.command("EHLO client.example");
        const started = performance.now();
        const reply = await dialog.command(`AUTH PLAIN ${plain("alice", `wrong ${attempt}`)}`);
        durations.push(performance.now() - started);
        assert.equal(reply.text, "535 5.7.8 Error: authentication failed: authentication failure");
      } finally {
        await dialog.quit();
      }
    }
    assert.ok(durations[3]! >= 900, `4th failure answered after ${durations[3]} ms`);
    await agent.waitForLog(/warning: unknown\[127\.0\.0\.1\]: SASL PLAIN authentication failed: authentication failure \(4 failures, replies slowed down\)\n/, 10_000, from);
    const failures = agent.log().slice(from).match(/warning: unknown\[127\.0\.0\.1\]: SASL PLAIN authentication failed: authentication failure\b/g);
    assert.equal(failures?.length, 4);
    // The right password still works after the pause, and clears the count.
    const { dialog: last } = await SmtpDialog.open(submission());
    try {
      await last.command("EHLO client.example");
      assert.equal((await last.command(`AUTH PLAIN ${plain("alice", ALICE_PASSWORD)}`)).text, "235 2.7.0 Authentication successful");
    } finally {
      await last.quit();
    }
  });
});

describe("restart", () => {
  test("the same certificate is presented after a restart", async () => {
    const pem = await readFile(join(agent.spool, "private", "smtpd.crt"), "utf8");
    assert.equal(await agent.stop(), 0);
    agent = await agent.restart();
    assert.equal(await readFile(join(agent.spool, "private", "smtpd.crt"), "utf8"), pem);
    assert.equal((await stat(join(agent.spool, "private", "smtpd.key"))).mode & 0o777, 0o600);
    const pinned = await implicitTlsPinned(implicit(), pem);
    assert.equal(pinned.authorized, true);
    assert.equal(pinned.fingerprint256, new X509Certificate(pem).fingerprint256);
  });
});

describe("AUTH before TLS (HookedSMTPServer)", () => {
  /** A server with the hooks under test; records the AUTH attempts that reach onAuth. */
  async function hookedServer(authWithoutTls: boolean) {
    const attempts: string[] = [];
    const server = new HookedSMTPServer(
      {
        name: "unit.example",
        authMethods: ["PLAIN", "LOGIN"],
        allowInsecureAuth: true,
        authOptional: true,
        hideENHANCEDSTATUSCODES: false,
        logger: false,
        onAuth: (auth, _session, cb) => {
          attempts.push(auth.username ?? "");
          cb(null, { user: auth.username });
        },
      },
      { greetingDelay: 0, authWithoutTls: () => authWithoutTls, onCommand: () => null },
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.server.address() as { port: number }).port;
    return { attempts, port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  }

  test("a client that may not AUTH in clear sees no AUTH before STARTTLS and gets 538 5.7.11; after STARTTLS it may", async (t) => {
    const server = await hookedServer(false);
    t.after(server.close);
    const { dialog } = await SmtpDialog.open(server.port);
    try {
      const ehlo = await dialog.command("EHLO client.example");
      assert.ok(ehlo.lines.includes("STARTTLS"), ehlo.text);
      assert.ok(!ehlo.lines.some((l) => /^AUTH\b/i.test(l)), ehlo.text);
      assert.equal((await dialog.command(`AUTH PLAIN ${plain("alice", "secret")}`)).text, "538 5.7.11 Encryption required for requested authentication mechanism");
      assert.equal((await dialog.command("AUTH LOGIN")).text, "538 5.7.11 Encryption required for requested authentication mechanism");
      assert.deepEqual(server.attempts, []);
      assert.equal((await dialog.starttls()).code, 220);
      const secure = await dialog.command("EHLO client.example");
      assert.ok(secure.lines.includes("AUTH PLAIN LOGIN"), secure.text);
      assert.equal((await dialog.command(`AUTH PLAIN ${plain("alice", "secret")}`)).text, "235 2.7.0 Authentication successful");
      assert.deepEqual(server.attempts, ["alice"]);
    } finally {
      await dialog.quit();
    }
  });

  test("a client allowed to AUTH in clear sees AUTH in EHLO and may use it before STARTTLS", async (t) => {
    const server = await hookedServer(true);
    t.after(server.close);
    const { dialog } = await SmtpDialog.open(server.port);
    try {
      const ehlo = await dialog.command("EHLO client.example");
      assert.ok(ehlo.lines.includes("AUTH PLAIN LOGIN"), ehlo.text);
      assert.equal((await dialog.command(`AUTH PLAIN ${plain("alice", "secret")}`)).text, "235 2.7.0 Authentication successful");
      assert.deepEqual(server.attempts, ["alice"]);
    } finally {
      await dialog.quit();
    }
  });
});
