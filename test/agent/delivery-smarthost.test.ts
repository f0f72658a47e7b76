// delivery-smarthost: the agent relaying through smarthosts in a loopback world — AUTH CRAM-MD5 over verified
// STARTTLS, wrong secrets and unsafe password files, fallback from MX to smarthost, and sender-dependent routes.
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { CLI, startAgent, type AgentProcess } from "../support/agent-process.js";
import {
  deliveryLines,
  deliveryStatus,
  mailbox,
  mxRecords,
  startMxWorld,
  submit,
  waitForBounceNotice,
  waitForDelivery,
  waitForQueueFile,
  worldConfig,
  type MxHost,
  type MxWorld,
} from "../support/mx-world.js";

const ALICE = "alice@home.example.net";
const ACCOUNT = { user: "homeuser", secret: "correct horse battery staple" };

let world: MxWorld;
let mx1: MxHost;
let isp: MxHost;
let work: MxHost;

before(async () => {
  world = await startMxWorld(["mx1.example.org", "smtp.isp.example", "smtp.work.example"]);
  mx1 = world.host("mx1.example.org");
  isp = world.host("smtp.isp.example");
  work = world.host("smtp.work.example");
});
after(() => world.close());

describe("smarthosts and routes", () => {
  let agent: AgentProcess;
  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), "hr-agent-"));
    const config = worldConfig(world, {
      smarthosts: {
        isp: {
          host: "smtp.isp.example",
          port: world.port,
          tls: "starttls",
          verify: true,
          ca: world.caFile,
          auth: { user: ACCOUNT.user, passwordFile: join(dir, "isp-password"), mechanism: "CRAM-MD5" },
        },
        work: { host: "smtp.work.example", port: world.port, tls: "none" },
      },
      routes: [
        { match: "*", route: "mx", fallback: ["smarthost:isp"] },
        { match: "via-isp.example", route: "smarthost:isp" },
        { match: "*", sender: "*@work.example", route: "smarthost:work" },
      ],
    });
    agent = await startAgent(config, { dir, files: { "isp-password": `${ACCOUNT.secret}\n` } });
  });
  after(() => agent.cleanup());
  beforeEach(() => isp.behave({ tls: "ca-signed", auth: ACCOUNT }));
  afterEach(() => world.reset());

  test("AUTH CRAM-MD5 with the right secret over verified STARTTLS delivers; the smarthost sees the account", async () => {
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@via-isp.example"], "through the ISP");
    const sent = await waitForDelivery(agent, id, "bob@via-isp.example", "sent", mark);
    assert.equal(sent.relay, `smtp.isp.example[127.0.0.3]:${world.port}`);
    assert.equal(sent.dsn, "2.0.0");
    assert.equal(sent.detail, "250 2.0.0 Ok: queued as smtp-1");
    assert.equal(isp.messages.length, 1);
    const [received] = isp.messages;
    assert.equal(received!.user, ACCOUNT.user);
    assert.equal(received!.secure, true);
    assert.equal(received!.mailFrom, ALICE);
    assert.deepEqual(received!.rcptTo.map((r) => r.address), ["bob@via-isp.example"]);
  });

  test("a wrong secret defers and never bounces, the log says authentication failed; the retry after the fix delivers", async () => {
    isp.behave({ auth: { user: ACCOUNT.user, secret: "the password was changed at the ISP" } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@via-isp.example"], "wrong secret");
    const first = await waitForDelivery(agent, id, "bob@via-isp.example", "deferred", mark);
    assert.equal(first.dsn, "4.7.8");
    assert.equal(first.detail, "host smtp.isp.example[127.0.0.3] said: 535 5.7.8 Error: authentication failed: authentication failure (in reply to AUTH command)");
    await waitForDelivery(agent, id, "bob@via-isp.example", "deferred", agent.log().indexOf(first.line) + first.line.length);
    await waitForQueueFile(agent, "deferred", id);
    assert.equal(isp.messages.length, 0);
    assert.ok(deliveryLines(agent, id, "bob@via-isp.example").every((l) => l.status === "deferred"));
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`), "no bounce for the owner's configuration problem");

    isp.behave({ auth: ACCOUNT });
    await waitForDelivery(agent, id, "bob@via-isp.example", "sent", mark);
    assert.equal(isp.messages.length, 1);
    assert.equal((await mailbox(agent, "alice")).filter((m) => m.messageId?.startsWith(`<${id}.`)).length, 0, "no notice reached the sender");
  });

  test("fallback: when the MX refuses connections the smarthost delivers", async () => {
    world.setZone({ "refusing.example": mxRecords(["mx.refusing.example", 10]), "mx.refusing.example": { A: [world.deadAddress] } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["carol@refusing.example"], "fallback after refusal");
    const sent = await waitForDelivery(agent, id, "carol@refusing.example", "sent", mark);
    assert.equal(sent.relay, `smtp.isp.example[127.0.0.3]:${world.port}`);
    assert.equal(deliveryLines(agent, id, "carol@refusing.example").length, 1, "delivered in the first attempt");
    assert.deepEqual(isp.messages.map((m) => [m.rcptTo[0]?.address, m.user]), [["carol@refusing.example", ACCOUNT.user]]);
  });

  test("fallback: a 5xx from the MX bounces and is not sent to the smarthost", async () => {
    world.setZone({ "example.org": mxRecords(["mx1.example.org", 10]) });
    mx1.behave({ rcpt: { "*": { code: 550, text: "5.1.1 <dave@example.org>: Recipient address rejected: User unknown" } } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["dave@example.org"], "permanent failure");
    const bounced = await waitForDelivery(agent, id, "dave@example.org", "bounced", mark);
    assert.equal(bounced.dsn, "5.1.1");
    assert.equal(bounced.relay, `mx1.example.org[127.0.0.2]:${world.port}`);
    assert.equal(bounced.detail, "host mx1.example.org[127.0.0.2] said: 550 5.1.1 <dave@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO command)");
    const notice = await waitForBounceNotice(agent, id, "alice", mark);
    assert.equal(deliveryStatus(notice)[0]?.get("status"), "5.1.1");
    assert.equal(isp.connections, 0, "the smarthost was not contacted");
  });

  test("fallback: a domain that does not exist bounces with 5.4.4 and is not sent to the smarthost", async () => {
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["erin@nowhere.example"], "no such domain");
    const bounced = await waitForDelivery(agent, id, "erin@nowhere.example", "bounced", mark);
    assert.equal(bounced.dsn, "5.4.4");
    await waitForBounceNotice(agent, id, "alice", mark);
    assert.equal(isp.connections, 0, "the smarthost was not contacted");
  });

  test("a sender-dependent route sends *@work.example through its own smarthost; other senders go direct", async () => {
    world.setZone({ "example.org": mxRecords(["mx1.example.org", 10]) });
    const mark = agent.log().length;
    const fromWork = await submit(agent, "bob@work.example", ["dave@example.org"], "from work");
    const fromHome = await submit(agent, ALICE, ["dave@example.org"], "from home");
    const viaWork = await waitForDelivery(agent, fromWork, "dave@example.org", "sent", mark);
    const direct = await waitForDelivery(agent, fromHome, "dave@example.org", "sent", mark);
    assert.equal(viaWork.relay, `smtp.work.example[127.0.0.4]:${world.port}`);
    assert.equal(direct.relay, `mx1.example.org[127.0.0.2]:${world.port}`);
    assert.deepEqual(work.messages.map((m) => [m.mailFrom, m.secure]), [["bob@work.example", false]]);
    assert.deepEqual(mx1.messages.map((m) => m.mailFrom), [ALICE]);
    assert.equal(isp.connections, 0);
  });
});

describe("smarthost password file", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hr-agent-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("a password file others may read (mode 0644) stops the agent at start, naming the file and chmod 600", async () => {
    const passwordFile = join(dir, "isp-password");
    await writeFile(passwordFile, `${ACCOUNT.secret}\n`);
    await chmod(passwordFile, 0o644);
    const configFile = join(dir, "homerelay.yaml");
    await writeFile(
      configFile,
      stringify({
        hostname: "relay.home.example.net",
        spool: join(dir, "spool"),
        mailboxes: join(dir, "mail"),
        listeners: [{ role: "submission", listen: "127.0.0.1:0" }],
        smarthosts: { isp: { host: "smtp.isp.example", auth: { user: ACCOUNT.user, passwordFile, mechanism: "CRAM-MD5" } } },
        routes: [{ match: "*", route: "smarthost:isp" }],
      }),
    );
    const run = spawnSync(process.execPath, [CLI, "agent", "--config", configFile], { encoding: "utf8", timeout: 15_000 });
    const output = `${run.stdout}${run.stderr}`;
    assert.equal(run.signal, null, `the agent did not exit by itself:\n${output}`);
    assert.notEqual(run.status, 0, output);
    assert.ok(output.includes(passwordFile), output);
    assert.ok(output.includes(`chmod 600 ${passwordFile}`), output);
    assert.ok(!output.includes("daemon started"), output);
  });
});
