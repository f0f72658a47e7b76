// reroute: an MX that refuses the home address (real Gmail and Spamhaus wordings) sends the recipient
// at once to the route's fallback, without a bounce; the domain and its MX provider are learned, later mail skips direct
// delivery; a home address on the Spamhaus PBL (as the cloud sees it) sends auto routes' mail by the fallback from the start.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { pkcs8PemFromSeed } from "../../shared/protocol/ed25519.js";
import { CLI, startAgent, type AgentProcess } from "../support/agent-process.js";
import { makeKey } from "../support/cloud-client.js";
import { NatCloud } from "../support/nat-cloud.js";
import { deliveryLines, mailbox, mxRecords, startMxWorld, submit, waitForDelivery, worldConfig, type MxHost, type MxWorld } from "../support/mx-world.js";

const run = promisify(execFile);
const ALICE = "alice@home.example.net";
// Gmail sends this over three lines; the test MX (smtp-server) can only answer with one.
const GMAIL_REFUSAL = {
  code: 550,
  text: "5.7.1 [198.51.100.7] The IP you're using to send mail is not authorized to send email directly to our servers. Please use the SMTP relay at your service provider instead. https://support.google.com/mail/?p=NotAuthorizedError",
};
const SPAMHAUS_DEFERRAL = { code: 450, text: "4.7.1 Client host [198.51.100.7] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/198.51.100.7" };

let world: MxWorld;
let provider: MxHost;
let isp: MxHost;
let agent: AgentProcess;

/** Run a `homerelay` command against the agent's configuration. */
async function homerelay(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args, "--config", agent.configFile], { timeout: 15_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function learnedKeys(): Promise<string[]> {
  const listed = await homerelay("routes", "learned", "--json");
  assert.equal(listed.code, 0, listed.stderr);
  return (JSON.parse(listed.stdout) as { scope: string; key: string }[]).map((r) => `${r.scope}:${r.key}`).sort();
}

before(async () => {
  world = await startMxWorld(["mx1.mailprovider.test", "smtp.isp.example"]);
  provider = world.host("mx1.mailprovider.test");
  isp = world.host("smtp.isp.example");
  agent = await startAgent(
    worldConfig(world, {
      smarthosts: { isp: { host: "smtp.isp.example", port: world.port, tls: "none" } },
      routes: [
        { match: "*", route: "mx", fallback: ["smarthost:isp"] },
        { match: "explicit.test", route: "mx", fallback: ["smarthost:isp"] },
        { match: "nofallback.test", route: "mx" },
      ],
    }),
  );
});
after(async () => {
  await agent?.cleanup();
  await world.close();
});

describe("re-routing refusals of the home address", () => {
  const zone = () =>
    world.setZone({
      "gmail.test": mxRecords(["mx1.mailprovider.test", 5]),
      "hosted.test": mxRecords(["mx1.mailprovider.test", 10]),
      "explicit.test": mxRecords(["mx1.mailprovider.test", 10]),
      "nofallback.test": mxRecords(["mx1.mailprovider.test", 10]),
      "spamhaus.test": mxRecords(["mx1.mailprovider.test", 10]),
    });
  afterEach(() => world.reset());

  test("a Gmail 'IP not authorized' refusal goes to the smarthost at once, with no bounce, and the domain and provider are learned", async () => {
    zone();
    provider.behave({ rcpt: { "*": GMAIL_REFUSAL } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@gmail.test"], "refused direct");
    const sent = await waitForDelivery(agent, id, "bob@gmail.test", "sent", mark);
    assert.equal(sent.relay, `smtp.isp.example[127.0.0.3]:${world.port}`);
    const [rerouted, delivered, ...more] = deliveryLines(agent, id, "bob@gmail.test");
    assert.equal(more.length, 0);
    assert.equal(delivered!.status, "sent");
    assert.equal(rerouted!.status, "rerouted");
    assert.equal(rerouted!.relay, `mx1.mailprovider.test[127.0.0.2]:${world.port}`);
    assert.equal(rerouted!.dsn, "5.7.1");
    assert.match(rerouted!.detail, /^host mx1\.mailprovider\.test\[127\.0\.0\.2\] said: 550 5\.7\.1 \[198\.51\.100\.7\] The IP you're using to send mail is not authorized .* \(in reply to RCPT TO command\); via smarthost:isp$/);
    assert.deepEqual(isp.messages.map((m) => m.rcptTo.map((r) => r.address)), [["bob@gmail.test"]]);
    assert.match(agent.log().slice(mark), /learned: gmail\.test \(MX mx1\.mailprovider\.test\) refuses mail from this address \(.+\); it goes by the fallback route for 30 days/);
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`), "no bounce was sent");
    assert.equal((await mailbox(agent, "alice")).length, 0, "nothing came back to the sender");
    assert.deepEqual(await learnedKeys(), ["domain:gmail.test", "provider:mailprovider.test"]);
    const table = JSON.parse(await readFile(join(agent.spool, "private", "learned-routes.json"), "utf8")) as { routes: { key: string; reply: string }[] };
    assert.match(table.routes.find((r) => r.key === "gmail.test")!.reply, /^550 5\.7\.1 \[198\.51\.100\.7\] The IP you're using to send mail is not authorized/);
  });

  test("later mail to the learned domain, and to another domain at the same provider, skips direct delivery", async () => {
    zone();
    for (const rcpt of ["carol@gmail.test", "dave@hosted.test"]) {
      const mark = agent.log().length;
      const id = await submit(agent, ALICE, [rcpt], "learned");
      const sent = await waitForDelivery(agent, id, rcpt, "sent", mark);
      assert.equal(sent.relay, `smtp.isp.example[127.0.0.3]:${world.port}`);
      assert.equal(deliveryLines(agent, id, rcpt).length, 1, "no direct attempt");
    }
    assert.equal(provider.connections, 0, "the provider's MX was not contacted");
    const test = await homerelay("routes", "test", "erin@hosted.test");
    assert.equal(test.code, 0, test.stderr);
    assert.match(test.stdout, /route auto, fallback smarthost:isp/);
    assert.match(test.stdout, /direct delivery skipped, straight to smarthost:isp: learned \d{4}-\d\d-\d\d for the MX hosts of mailprovider\.test: ip-/);
  });

  test("the learned routes survive a restart; routes forget makes direct delivery come back", async () => {
    zone();
    await agent.stop();
    agent = await agent.restart();
    assert.deepEqual(await learnedKeys(), ["domain:gmail.test", "provider:mailprovider.test"]);
    const forgotten = await homerelay("routes", "forget", "gmail.test");
    assert.equal(forgotten.code, 0, forgotten.stderr);
    assert.equal(forgotten.stdout, "gmail.test: forgotten; direct delivery is tried again\n");
    assert.equal((await homerelay("routes", "forget", "mailprovider.test")).code, 0);
    const again = await homerelay("routes", "forget", "mailprovider.test");
    assert.equal(again.code, 1);
    assert.match(again.stdout + again.stderr, /nothing is learned about mailprovider\.test/);
    assert.deepEqual(await learnedKeys(), []);
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["frank@gmail.test"], "direct again");
    const sent = await waitForDelivery(agent, id, "frank@gmail.test", "sent", mark);
    assert.equal(sent.relay, `mx1.mailprovider.test[127.0.0.2]:${world.port}`);
  });

  test("a temporary Spamhaus listing (450 4.7.1) also goes to the fallback at once and is learned", async () => {
    zone();
    provider.behave({ rcpt: { "*": SPAMHAUS_DEFERRAL } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["gina@spamhaus.test"], "listed");
    const sent = await waitForDelivery(agent, id, "gina@spamhaus.test", "sent", mark);
    assert.equal(sent.relay, `smtp.isp.example[127.0.0.3]:${world.port}`);
    assert.equal(deliveryLines(agent, id, "gina@spamhaus.test")[0]!.status, "rerouted");
    assert.ok((await learnedKeys()).includes("domain:spamhaus.test"));
    assert.ok((await homerelay("routes", "forget", "mailprovider.test")).code === 0, "the provider was learned too");
  });

  test("a refusal of the recipient (550 5.1.1) is not a refusal of the home address: it bounces, nothing is learned", async () => {
    zone();
    provider.behave({ rcpt: { "*": { code: 550, text: "5.1.1 <henry@hosted.test>: Recipient address rejected: User unknown" } } });
    const before = await learnedKeys();
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["henry@hosted.test"], "unknown user");
    const bounced = await waitForDelivery(agent, id, "henry@hosted.test", "bounced", mark);
    assert.equal(bounced.dsn, "5.1.1");
    assert.equal(isp.messages.length, 0);
    assert.deepEqual(await learnedKeys(), before);
  });

  test("an explicit route for the domain is followed as written: the refusal goes to its fallback, but the next message tries direct again", async () => {
    zone();
    provider.behave({ rcpt: { "*": GMAIL_REFUSAL } });
    for (const rcpt of ["ivan@explicit.test", "judy@explicit.test"]) {
      const mark = agent.log().length;
      const id = await submit(agent, ALICE, [rcpt], "explicit route");
      await waitForDelivery(agent, id, rcpt, "sent", mark);
      assert.deepEqual(deliveryLines(agent, id, rcpt).map((l) => l.status), ["rerouted", "sent"], "tried direct first");
    }
    await homerelay("routes", "forget", "explicit.test");
    await homerelay("routes", "forget", "mailprovider.test");
  });

  test("without a fallback the refusal bounces as the receiver said (and is still learned for the administrator)", async () => {
    zone();
    provider.behave({ rcpt: { "*": GMAIL_REFUSAL } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["kim@nofallback.test"], "no fallback");
    const bounced = await waitForDelivery(agent, id, "kim@nofallback.test", "bounced", mark);
    assert.equal(bounced.dsn, "5.7.1");
    assert.equal(isp.messages.length, 0);
    assert.ok((await learnedKeys()).includes("domain:nofallback.test"));
  });
});

describe("a home address that should not send direct", () => {
  test("listed on the Spamhaus PBL: auto routes send by the fallback without trying the MX; at a new, unlisted address, direct again", async (t) => {
    const key = makeKey("home-1");
    const cloud = await NatCloud.start("203.0.113.7", [key]);
    t.after(() => cloud.close());
    const listed = { "7.113.0.203.zen.spamhaus.org": { A: ["127.0.0.11"], TXT: ["https://check.spamhaus.org/query/ip/203.0.113.7"] } };
    const zone = { "pbl.test": mxRecords(["mx1.mailprovider.test", 10]) };
    world.setZone({ ...zone, ...listed });
    const home = await startAgent(
      worldConfig(world, {
        smarthosts: { isp: { host: "smtp.isp.example", port: world.port, tls: "none" } },
        routes: [{ match: "*", route: "mx", fallback: ["smarthost:isp"] }],
        cloud: { url: cloud.url, keyId: key.id, keyFile: "home-1.key" },
        doctor: { dnsbl: ["zen.spamhaus.org"], watchInterval: 0.3 },
      }),
      { files: { "home-1.key": pkcs8PemFromSeed(key.seed) } },
    );
    t.after(() => home.cleanup());
    await home.waitForLog(/home address 203\.0\.113\.7: .*zen\.spamhaus\.org.*: auto routes send by their fallback\n/, 10_000);
    let mark = home.log().length;
    let id = await submit(home, ALICE, ["lee@pbl.test"], "listed home address");
    const sent = await waitForDelivery(home, id, "lee@pbl.test", "sent", mark);
    assert.equal(sent.relay, `smtp.isp.example[127.0.0.3]:${world.port}`);
    assert.equal(deliveryLines(home, id, "lee@pbl.test").length, 1, "no direct attempt");
    assert.equal(provider.messages.length, 0);

    // The line gets a new address, which is not listed: auto routes are decided again.
    mark = home.log().length;
    cloud.address = "198.51.100.20";
    await home.waitForLog(/home address 198\.51\.100\.20 is not listed and its PTR looks static: auto routes try direct delivery\n/, 10_000, mark);
    id = await submit(home, ALICE, ["mia@pbl.test"], "delisted");
    assert.equal((await waitForDelivery(home, id, "mia@pbl.test", "sent", mark)).relay, `mx1.mailprovider.test[127.0.0.2]:${world.port}`);
  });
});
