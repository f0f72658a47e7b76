// cloud-ses: end to end through real parts — the agent's cloud route, signed with a key from homerelay keygen, to the cloud's
// Node entry relaying through Amazon SES (aws-ses-v2-local, read back from its store), and a From: SES cannot send, deferred or taken by a smarthost fallback.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import sesLocal from "aws-ses-v2-local";
import { stringify } from "yaml";
import { parseCloudConfig } from "../../cloud/config.js";
import type { CloudServer } from "../../cloud/serve.js";
import { serveCloudOnNamedPort } from "../support/cloud-client.js";
import { createMailLog } from "../../shared/log.js";
import { CLI, startAgent, type AgentProcess } from "../support/agent-process.js";
import { deliveryLines, escapeRegExp, startMxWorld, submitText, waitForDelivery, waitForQueueFile, worldConfig, type MxHost, type MxWorld } from "../support/mx-world.js";

// The SDK's default credential chain reads these first; the cloud runs in this process and nothing here reaches AWS.
process.env.AWS_ACCESS_KEY_ID = "AKIDHOMERELAYTEST";
process.env.AWS_SECRET_ACCESS_KEY = "homerelay-test-secret";

const ALICE = "alice@home.example.net";
const KEY_ID = "home-ses";
/** A second domain of the owner's: the key may use it in From:, but SES wants From: in the envelope sender's domain. */
const ALICE_FAMILY = "alice@family.example.org";

/** A message as the emulator keeps it (parsed text only). */
interface StoredEmail {
  messageId: string;
  from: string;
  destination: { to: string[] };
  subject: string;
  body: { text?: string };
}

/** A complete CRLF message (Date: and Message-ID: included, so the agent adds nothing but its Received: field). */
function message(from: string, to: string, subject: string, body: string): string {
  return `From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nDate: Mon, 06 Jan 2025 09:00:00 +0000\r\nMessage-ID: <${subject.replace(/\W/g, "")}@home.example.net>\r\n\r\n${body}`;
}

describe("end to end: agent → cloud app (Node entry) → Amazon SES (aws-ses-v2-local)", () => {
  let world: MxWorld;
  let isp: MxHost;
  let emulator: Server;
  let emulatorUrl: string;
  let keyDir: string;
  let store: string;
  let cloud: CloudServer;
  let cloudLog = "";
  let agent: AgentProcess;
  let relay: string;

  /** Everything the emulator stored. */
  async function storedEmails(): Promise<StoredEmail[]> {
    const response = await fetch(`${emulatorUrl}/store`);
    assert.equal(response.status, 200);
    return ((await response.json()) as { emails: StoredEmail[] }).emails;
  }

  /** The cloud's request log lines for POST /v1/messages since log offset `from`. */
  function cloudRequests(from: number): string[] {
    return cloudLog
      .slice(from)
      .split("\n")
      .filter((l) => l.includes(": POST /v1/messages "));
  }

  before(async () => {
    world = await startMxWorld(["smtp.isp.example"]);
    isp = world.host("smtp.isp.example");
    emulator = await sesLocal.default({ host: "127.0.0.1", port: 0 });
    emulatorUrl = `http://127.0.0.1:${(emulator.address() as AddressInfo).port}`;

    // The key as an owner makes it: homerelay keygen writes the private key and prints the public one.
    keyDir = await mkdtemp(join(tmpdir(), "hr-cloud-ses-key-"));
    const keygen = spawnSync(process.execPath, [CLI, "keygen", "--id", KEY_ID, "--out", keyDir], { encoding: "utf8", timeout: 15_000 });
    assert.equal(keygen.status, 0, keygen.stderr);
    const publicKey = /^public key: (\S+)$/m.exec(keygen.stdout)?.[1];
    const keyFile = /^ {2}keyFile: (.+)$/m.exec(keygen.stdout)?.[1];
    assert.ok(publicKey && keyFile, keygen.stdout);

    store = await mkdtemp(join(tmpdir(), "hr-cloud-ses-store-"));
    const log = createMailLog(
      {
        format: "text",
        level: "info",
        destination: new Writable({
          write(chunk: Buffer, _encoding, done) {
            cloudLog += chunk.toString();
            done();
          },
        }),
      },
      "cloud",
    );
    cloud = await serveCloudOnNamedPort(
      (port) =>
        parseCloudConfig(
      stringify({
        listen: `127.0.0.1:${port}`,
        authority: [`127.0.0.1:${port}`],
        keys: [{ id: KEY_ID, publicKey, senders: ["*@home.example.net", "*@family.example.org"] }],
        onward: { transport: "ses", region: "us-east-1", endpoint: emulatorUrl },
        store,
      }),
      "cloud.yaml",
    ),
      log,
    );
    relay = `cloud[http://127.0.0.1:${cloud.port}]`;
    agent = await startAgent(
      worldConfig(world, {
        cloud: { url: `http://127.0.0.1:${cloud.port}`, keyId: KEY_ID, keyFile, timeout: 10 },
        smarthosts: { isp: { host: "smtp.isp.example", port: world.port, tls: "none" } },
        routes: [
          { match: "*", route: "cloud" },
          { match: "forward.example", route: "cloud", fallback: ["smarthost:isp"] },
        ],
      }),
    );
  });
  after(async () => {
    await agent.cleanup();
    await cloud.close();
    // The emulator never answers GetSendQuota: the cloud's abandoned request may still hold a connection.
    emulator.closeAllConnections();
    await new Promise<void>((resolve) => emulator.close(() => resolve()));
    await world.close();
    await rm(keyDir, { recursive: true, force: true });
    await rm(store, { recursive: true, force: true });
  });

  test("a message from a sender the key may use is sent through SES: the agent logs SES's MessageId, and the emulator stored its subject, From:, To: and text", async () => {
    const mark = agent.log().length;
    const cloudMark = cloudLog.length;
    const to = ["bob@example.org", "carol@example.org"];
    const subject = "Minutes of the garden committee";
    const text = message(`Alice Liddell <${ALICE}>`, "Bob <bob@example.org>, carol@example.org", subject, "Hello Bob and Carol,\r\nthe minutes are attached.\r\n\r\nAlice\r\n");
    const id = await submitText(agent, ALICE, to, text);

    const sent = await Promise.all(to.map((rcpt) => waitForDelivery(agent, id, rcpt, "sent", mark)));
    for (const line of sent) {
      assert.equal(line.relay, relay);
      assert.equal(line.dsn, "2.0.0");
    }
    const messageId = /^SES accepted, MessageId (\S+)$/.exec(sent[0]!.detail)?.[1];
    assert.ok(messageId, sent[0]!.detail);
    assert.equal(sent[1]!.detail, sent[0]!.detail, "both recipients went in one SES call");
    await agent.waitForLog(new RegExp(`${id}: removed`), 5000, mark);

    const [request, ...more] = cloudRequests(cloudMark);
    assert.equal(more.length, 0, "one request to the cloud");
    assert.match(request!, new RegExp(` status=200 client=127\\.0\\.0\\.1 keyid=${KEY_ID} rcpt=2 sent=2 deferred=0 failed=0 `));

    const stored = (await storedEmails()).filter((e) => e.messageId === messageId);
    assert.equal(stored.length, 1, `the emulator stored one message ${messageId}`);
    const [email] = stored;
    assert.equal(email!.subject, subject);
    assert.equal(email!.from, `"Alice Liddell" <${ALICE}>`);
    assert.deepEqual(email!.destination.to, [`"Bob" <bob@example.org>, carol@example.org`]);
    assert.equal(email!.body.text, "Hello Bob and Carol,\nthe minutes are attached.\n\nAlice\n");
  });

  test("a From: outside the envelope sender's domain with a smarthost fallback: the cloud refuses it with 422 and the smarthost delivers it in the same attempt", async () => {
    const mark = agent.log().length;
    const cloudMark = cloudLog.length;
    const before = (await storedEmails()).length;
    const subject = "Family reunion";
    const text = message(`Alice Liddell <${ALICE_FAMILY}>`, "<dave@forward.example>", subject, "Dave,\r\nsee you in June.\r\n");
    const id = await submitText(agent, ALICE, ["dave@forward.example"], text);

    const sent = await waitForDelivery(agent, id, "dave@forward.example", "sent", mark);
    assert.equal(sent.relay, `smtp.isp.example[${isp.address}]:${world.port}`);
    assert.equal(deliveryLines(agent, id, "dave@forward.example").length, 1, "delivered in the first attempt");
    await agent.waitForLog(new RegExp(`${id}: removed`), 5000, mark);

    const [refused, ...more] = cloudRequests(cloudMark);
    assert.equal(more.length, 0, "one request to the cloud");
    assert.match(refused!, new RegExp(` status=422 client=127\\.0\\.0\\.1 keyid=${KEY_ID} rcpt=1 problem=foreign-from-not-supported `));

    const [received, ...others] = isp.messagesFor("dave@forward.example");
    assert.equal(others.length, 0);
    assert.equal(received!.mailFrom, ALICE);
    assert.ok(received!.raw.toString("latin1").endsWith(`\r\n${text}`), "the smarthost got the whole message");
    assert.equal((await storedEmails()).length, before, "nothing reached SES");
  });

  test("a From: outside the envelope sender's domain and no fallback: the cloud refuses it with 422 and the agent defers it, retries, and bounces nothing", async () => {
    const mark = agent.log().length;
    const cloudMark = cloudLog.length;
    const before = (await storedEmails()).length;
    const text = message(`Alice Liddell <${ALICE_FAMILY}>`, "<erin@example.org>", "Family recipes", "Erin,\r\nthe recipes, as promised.\r\n");
    const id = await submitText(agent, ALICE, ["erin@example.org"], text);

    const deferred = await waitForDelivery(agent, id, "erin@example.org", "deferred", mark);
    assert.equal(deferred.relay, relay);
    assert.equal(deferred.dsn, "4.3.5");
    assert.ok(
      deferred.detail.startsWith(
        `cloud cannot relay this message (422 The onward transport cannot send this header From: address: SES cannot send a From: of ${ALICE_FAMILY} for the envelope sender ${ALICE}`,
      ),
      deferred.detail,
    );
    await waitForQueueFile(agent, "deferred", id);

    // Retried as any temporary failure, refused the same way, and still not bounced.
    await agent.waitForLog(new RegExp(`${id}: to=<erin@example\\.org>, relay=${escapeRegExp(relay)}, .* dsn=4\\.3\\.5, status=deferred [^]*${id}: to=<erin@example\\.org>, relay=${escapeRegExp(relay)}, .* dsn=4\\.3\\.5, status=deferred`), 15_000, mark);
    const requests = cloudRequests(cloudMark);
    assert.ok(requests.length >= 2, requests.join("\n"));
    for (const line of requests) assert.match(line, / status=422 .* problem=foreign-from-not-supported /);
    assert.deepEqual(
      deliveryLines(agent, id, "erin@example.org").filter((l) => l.status !== "deferred"),
      [],
      "never sent nor bounced",
    );
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`), "no bounce");
    assert.equal((await storedEmails()).length, before, "nothing reached SES");
  });
});
