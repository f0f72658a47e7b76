// `homerelay send` as a user runs it (the built CLI, the body on stdin): through the running agent's
// HTTP API (prints the queue ID), into the drop directory while the agent is down (delivered once it
// starts), signed to a cloud with --cloud/--key; sysexits exit statuses for what goes wrong.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { access, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { simpleParser, type ParsedMail } from "mailparser";
import type { CloudServer } from "../../cloud/serve.js";
import { pkcs8PemFromSeed } from "../../shared/protocol/ed25519.js";
import { CLI, startAgent, type AgentProcess } from "../support/agent-process.js";
import { makeKey } from "../support/cloud-client.js";
import { httpSection, startCloudRelay } from "../support/http-api.js";
import { mailbox } from "../support/mx-world.js";
import { LOCAL_CONFIG, LOCAL_RCPT, pollUntil } from "../support/queue-durability.js";
import { SmtpUpstream } from "../support/smtp-upstream.js";

const QUEUE_ID = /^([0-9A-HJKMNP-TV-Z]{16})\n$/;
const PDF = Buffer.from("%PDF-1.4\n\x00\xff binary bytes\n", "latin1");

/** Run `homerelay send ARGS` with `body` on standard input. */
function homerelaySend(args: string[], body: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, "send", ...args], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(body);
  });
}

let dir: string;
let report: string;
let page: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hr-send-"));
  report = join(dir, "report.pdf");
  page = join(dir, "page.html");
  await writeFile(report, PDF);
  await writeFile(page, "<p>Grüße from <b>cron</b></p>");
});
after(() => rm(dir, { recursive: true, force: true }));

/** The message in alice's Maildir with `subject`, once there. */
async function delivered(agent: AgentProcess, subject: string): Promise<ParsedMail> {
  let found: ParsedMail | undefined;
  await pollUntil(`"${subject}" is in alice's Maildir`, async () => {
    found = (await mailbox(agent, "alice")).find((m) => m.subject === subject);
    return found !== undefined;
  });
  return found!;
}

describe("with the agent", () => {
  let agent: AgentProcess;
  before(async () => {
    agent = await startAgent({ ...LOCAL_CONFIG, http: httpSection() });
  });
  after(() => agent.cleanup());

  test("running: through the HTTP API, printing the queue ID; attachments and an HTML part arrive", async () => {
    const sent = await homerelaySend(
      ["-c", agent.configFile, "--to", LOCAL_RCPT, "--cc", "postmaster@home.example.net", "--subject", "Nächtliche Sicherung", "--from", "cron@home.example.net", "--attach", report, "--html", page],
      "Alles gesichert.\n",
    );
    assert.equal(sent.code, 0, sent.stderr);
    const [, id] = sent.stdout.match(QUEUE_ID) ?? assert.fail(`expected a queue ID, got ${JSON.stringify(sent.stdout)}`);
    await agent.waitForLog(new RegExp(`${id}: client=http\\[127\\.0\\.0\\.1\\], token=cron`));
    const mail = await delivered(agent, "Nächtliche Sicherung");
    assert.equal(mail.messageId, `<${id}@home.example.net>`);
    assert.equal(mail.text, "Alles gesichert.\n");
    assert.equal(mail.html, "<p>Grüße from <b>cron</b></p>");
    assert.deepEqual(
      mail.attachments.map((a) => [a.filename, a.contentType]),
      [["report.pdf", "application/pdf"]],
    );
    assert.deepEqual(mail.attachments[0]!.content, PDF);
  });

  test("exit statuses: no recipient 64, bad address 65, unreadable file 66, sender not allowed 77", async () => {
    const base = ["-c", agent.configFile, "--subject", "x", "--from", "cron@home.example.net"];
    const noRecipient = await homerelaySend(base, "x");
    assert.equal(noRecipient.code, 64, noRecipient.stderr);
    const badAddress = await homerelaySend([...base, "--to", "not an address"], "x");
    assert.equal(badAddress.code, 65, badAddress.stderr);
    assert.match(badAddress.stderr, /not an address/);
    const missing = await homerelaySend([...base, "--to", LOCAL_RCPT, "--attach", join(dir, "nonexistent.pdf")], "x");
    assert.equal(missing.code, 66, missing.stderr);
    assert.match(missing.stderr, /cannot read .*nonexistent\.pdf: ENOENT/);
    const foreign = await homerelaySend(["-c", agent.configFile, "--subject", "x", "--to", LOCAL_RCPT, "--from", "ceo@bank.example"], "x");
    assert.equal(foreign.code, 77, foreign.stderr);
    assert.match(foreign.stderr, /the agent refused the message: .*\[https:\/\/homerelay\.dev\/problems\/sender-not-allowed\]/);
    assert.equal(foreign.stdout, "");
  });

  test("stopped: the API's address file is gone and the message waits in maildrop/ until the agent starts", async () => {
    const addressFile = join(agent.spool, "private", "http.address");
    await access(addressFile);
    await agent.stop();
    await assert.rejects(access(addressFile), { code: "ENOENT" });
    const sent = await homerelaySend(["-c", agent.configFile, "--to", LOCAL_RCPT, "--subject", "while the agent was stopped", "--from", "cron@home.example.net"], "kept\n");
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(sent.stdout, "");
    assert.match(sent.stderr, /the agent's HTTP API is not running .*; the message waits in .*\/maildrop until the agent picks it up/);
    assert.equal((await readdir(join(agent.spool, "maildrop"))).length, 1);
    agent = await agent.restart();
    const mail = await delivered(agent, "while the agent was stopped");
    assert.equal(mail.text, "kept\n");
    assert.equal(mail.from?.value[0]?.address, "cron@home.example.net");
  });

  test("killed, its address file left behind: nothing answers there, so the message goes to maildrop/", async () => {
    await agent.kill();
    const sent = await homerelaySend(["-c", agent.configFile, "--to", LOCAL_RCPT, "--subject", "after a crash", "--from", "cron@home.example.net"], "kept too\n");
    assert.equal(sent.code, 0, sent.stderr);
    assert.match(sent.stderr, /the agent does not answer at http:\/\/127\.0\.0\.1:\d+; the message waits in/);
    agent = await agent.restart();
    assert.equal((await delivered(agent, "after a crash")).text, "kept too\n");
  });
});

describe("--cloud", () => {
  const key = makeKey("home-1");
  let upstream: SmtpUpstream;
  let cloud: CloudServer;
  let keyFile: string;
  /** The configuration of a machine that runs no agent. */
  let agentless: string;
  before(async () => {
    agentless = join(dir, "laptop.yaml");
    await writeFile(agentless, "hostname: laptop.example.net\n");
    upstream = await SmtpUpstream.start({ user: "u", pass: "p" });
    keyFile = join(dir, "home-1.key");
    await writeFile(keyFile, pkcs8PemFromSeed(key.seed), { mode: 0o600 });
    cloud = await startCloudRelay(key, upstream, join(dir, "cloud-store"));
  });
  after(async () => {
    await cloud.close();
    await upstream.close();
  });

  test("composes locally, signs with the key (its id from the file name), prints the cloud's ID and each result", async () => {
    const url = `http://127.0.0.1:${cloud.port}`;
    const ok = await homerelaySend(["-c", agentless, "--cloud", url, "--key", keyFile, "--from", "alice@example.net", "--to", "bob@example.org", "--subject", "über die Cloud", "--attach", report], "relayed\n");
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^\S+\n$/);
    assert.match(ok.stderr, new RegExp(`to=<bob@example\\.org>, relay=cloud\\[${url.replace(/[.]/g, "\\.")}\\], dsn=2\\.0\\.0, status=sent \\(`));
    const [relayed] = upstream.messages;
    assert.ok(relayed, "the upstream got the message");
    assert.equal(relayed.mailFrom, "alice@example.net");
    const mail = await simpleParser(relayed.raw);
    assert.equal(mail.subject, "über die Cloud");
    assert.equal(mail.text, "relayed\n");
    assert.deepEqual(mail.attachments[0]!.content, PDF);
  });

  test("a key the cloud does not list exits 77; a sender it may not use too", async () => {
    const stranger = join(dir, "stranger.key");
    await writeFile(stranger, pkcs8PemFromSeed(makeKey("stranger").seed), { mode: 0o600 });
    const url = `http://127.0.0.1:${cloud.port}`;
    const unknown = await homerelaySend(["-c", agentless, "--cloud", url, "--key", stranger, "--from", "alice@example.net", "--to", "bob@example.org", "--subject", "x"], "x");
    assert.equal(unknown.code, 77, unknown.stderr);
    assert.match(unknown.stderr, /the cloud refused the message: .*\[https:\/\/homerelay\.dev\/problems\/unknown-key\]/);
    const foreign = await homerelaySend(["-c", agentless, "--cloud", url, "--key", keyFile, "--from", "ceo@bank.example", "--to", "bob@example.org", "--subject", "x"], "x");
    assert.equal(foreign.code, 77, foreign.stderr);
    assert.match(foreign.stderr, /sender-not-allowed/);
  });
});
