// A JSON message submitted over HTTP, delivered: to a local Maildir and to a loopback MX, parsed back
// with mailparser to the content that was sent (non-ASCII subject, text, HTML, a binary attachment);
// and the status the API reports as recipients are deferred, bounced, and finally sent.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { simpleParser, type ParsedMail } from "mailparser";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { TOKEN, apiPort, apiRequest, httpSection, postJson } from "../support/http-api.js";
import { mailbox, mxRecords, startMxWorld, waitForDelivery, worldConfig, type MxWorld } from "../support/mx-world.js";
import { pollUntil } from "../support/queue-durability.js";

const ALICE = "alice@home.example.net";
const ATTACHMENT = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 37) % 256));
const MESSAGE = {
  from: "Nightly Backup <alice@home.example.net>",
  to: [ALICE, "Bob <bob@example.org>"],
  subject: "Sauvegarde terminée ✓ — 備份完成",
  text: "Everything was saved.\nÜbersicht im Anhang.\n",
  html: "<p>Everything was <b>saved</b>.</p>",
  attachments: [{ filename: "résumé.bin", contentType: "application/octet-stream", content: ATTACHMENT.toString("base64") }],
};

let world: MxWorld;
let agent: AgentProcess;
let port: number;
before(async () => {
  world = await startMxWorld(["mx.example.org"]);
  world.setZone({ "example.org": mxRecords(["mx.example.org", 10]) });
  agent = await startAgent(worldConfig(world, { http: httpSection() }));
  port = apiPort(agent);
});
after(async () => {
  await agent.cleanup();
  await world.close();
});

/** The content the JSON message described, as mailparser reads it. */
function assertSameContent(mail: ParsedMail): void {
  assert.equal(mail.subject, MESSAGE.subject);
  assert.deepEqual(mail.from?.value, [{ address: "alice@home.example.net", name: "Nightly Backup" }]);
  assert.equal(mail.text, MESSAGE.text);
  assert.equal(mail.html, MESSAGE.html);
  assert.equal(mail.attachments.length, 1);
  const [attachment] = mail.attachments;
  assert.equal(attachment!.filename, "résumé.bin");
  assert.equal(attachment!.contentType, "application/octet-stream");
  assert.deepEqual(attachment!.content, ATTACHMENT);
}

/** The API's status answer for `id`. */
async function status(id: string): Promise<{ state: string; recipients: { recipient: string; status: string; dsn?: string; relay?: string; detail?: string }[] }> {
  const answer = await apiRequest(port, { method: "GET", path: `/v1/messages/${id}`, token: TOKEN });
  assert.equal(answer.status, 200, answer.text);
  return answer.json as never;
}

test("one JSON message reaches a local Maildir and a loopback MX with the content that was sent", async () => {
  const answer = await postJson(port, MESSAGE);
  assert.equal(answer.status, 202, answer.text);
  const id = answer.json?.id as string;
  await waitForDelivery(agent, id, ALICE, "sent");
  const remote = await waitForDelivery(agent, id, "bob@example.org", "sent");

  const [local] = (await mailbox(agent, "alice")).filter((m) => m.messageId === `<${id}@relay.home.example.net>`);
  assert.ok(local, "the message in alice's Maildir, with the agent's Message-ID");
  assertSameContent(local);
  const [received] = world.host("mx.example.org").messagesFor("bob@example.org");
  assert.ok(received, "the message at the MX");
  assert.equal(received.mailFrom, "alice@home.example.net");
  const atMx = await simpleParser(received.raw);
  assertSameContent(atMx);
  assert.equal(atMx.messageId, `<${id}@relay.home.example.net>`);

  await pollUntil("the status says both were sent", async () => (await status(id)).state === "done");
  const { recipients } = await status(id);
  assert.deepEqual(
    recipients.map((r) => [r.recipient, r.status, r.relay, r.dsn]),
    [
      [ALICE, "sent", "local", "2.0.0"],
      ["bob@example.org", "sent", remote.relay, "2.0.0"],
    ],
  );
  assert.match(remote.relay, /^mx\.example\.org\[127\.0\.0\.2\]:\d+$/);
});

test("the status follows the queue: deferred with the last error, bounced, then sent once the MX takes it", async () => {
  const mx = world.host("mx.example.org");
  mx.behave({ rcpt: { "slow@example.org": { code: 450, text: "4.2.0 <slow@example.org>: greylisted, try again later" }, "gone@example.org": { code: 550, text: "5.1.1 <gone@example.org>: User unknown" } } });
  const answer = await postJson(port, { from: ALICE, to: ["slow@example.org", "gone@example.org"], subject: "status", text: "x" });
  assert.equal(answer.status, 202, answer.text);
  const id = answer.json?.id as string;
  const mark = agent.log().length;
  await waitForDelivery(agent, id, "slow@example.org", "deferred", mark);
  await waitForDelivery(agent, id, "gone@example.org", "bounced", mark);

  await pollUntil("the status shows the deferral and the bounce", async () => (await status(id)).recipients.every((r) => r.status !== "queued"));
  const waiting = await status(id);
  assert.deepEqual(waiting.recipients.map((r) => [r.recipient, r.status, r.dsn]), [
    ["slow@example.org", "deferred", "4.2.0"],
    ["gone@example.org", "bounced", "5.1.1"],
  ]);
  assert.match(waiting.recipients[0]!.detail!, /greylisted, try again later/);
  assert.match(waiting.recipients[1]!.detail!, /User unknown/);

  mx.behave({ rcpt: {} });
  await waitForDelivery(agent, id, "slow@example.org", "sent", mark);
  await pollUntil("the message has left the queue", async () => (await status(id)).state === "done");
  assert.deepEqual((await status(id)).recipients.map((r) => [r.recipient, r.status, r.dsn]), [
    ["slow@example.org", "sent", "2.0.0"],
    ["gone@example.org", "bounced", "5.1.1"],
  ]);
});
