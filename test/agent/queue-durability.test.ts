// Queue durability end to end: a 250 survives kill -9, a message still in DATA is never delivered
// (after a crash or a client that goes away), and concurrent messages get unique, time-ordered IDs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { queueIdTime } from "../../agent/queue/queue-id.js";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { SmtpDialog } from "../support/smtp-dialog.js";
import {
  LOCAL_CONFIG,
  LOCAL_RCPT,
  REMOTE_RCPT,
  SENDER,
  allQueueFiles,
  copiesOf,
  maildirMessages,
  message,
  pollUntil,
  queueFiles,
  queueIdOf,
  readQueueFile,
  sendMail,
  startTransaction,
} from "../support/queue-durability.js";

/** Open a transaction up to the 354 of DATA. */
async function openData(port: number, recipients: string[]): Promise<SmtpDialog> {
  const { dialog } = await SmtpDialog.open(port);
  await startTransaction(dialog, recipients);
  const r = await dialog.command("DATA");
  assert.equal(r.code, 354, `DATA: ${r.text}`);
  return dialog;
}

/** Start DATA and send the first `size` bytes of a 2 MB message; resolves once the queue file in incoming/ holds them. */
async function halfDelivered(agent: AgentProcess, token: string, size: number): Promise<{ dialog: SmtpDialog; id: string }> {
  const dialog = await openData(agent.ports[0]!, [LOCAL_RCPT]);
  dialog.write(message(token, 2 * size).slice(0, size));
  let id = "";
  // The queue file is created at DATA; its growth shows the body streams to disk as it arrives.
  await pollUntil(`the queue file in incoming/ holds at least ${size / 2} bytes`, async () => {
    const names = await queueFiles(agent.spool, "incoming");
    if (names.length !== 1) return false;
    id = names[0]!;
    return (await stat(join(agent.spool, "incoming", id))).size >= size / 2;
  });
  return { dialog, id };
}

test("kill -9 right after 250 loses nothing: local mail reaches the Maildir, remote mail stays queued", async (t) => {
  let agent = await startAgent(LOCAL_CONFIG);
  t.after(() => agent.cleanup());
  const port = agent.ports[0]!;

  const local = await openData(port, [LOCAL_RCPT]);
  const remote = await openData(port, [REMOTE_RCPT]);
  // Both final dots at once; the agent dies the moment both 250s are in.
  local.write(message("durability-local") + ".\r\n");
  remote.write(message("durability-remote") + ".\r\n");
  const [localReply, remoteReply] = await Promise.all([local.read(), remote.read()]);
  await agent.kill();
  local.destroy();
  remote.destroy();
  const localId = queueIdOf(localReply);
  const remoteId = queueIdOf(remoteReply);

  const atKill = await allQueueFiles(agent.spool);
  const localAtKill = copiesOf(await maildirMessages(agent.mailboxes, "alice"), localId).length;
  t.diagnostic(`at kill -9: queue ${JSON.stringify(atKill)}, ${localAtKill} Maildir copies of ${localId}`);
  assert.ok(atKill.includes(`active/${localId}`) || localAtKill > 0, `${localId} was acknowledged but is neither in active/ nor in the Maildir`);
  assert.ok(atKill.includes(`active/${remoteId}`) || atKill.includes(`deferred/${remoteId}`), `${remoteId} was acknowledged but is not in the queue`);

  agent = await agent.restart();
  // Recovery picks up everything in active/: the local message leaves the queue, the remote one waits in deferred/.
  await pollUntil("active/ is empty after restart", async () => (await queueFiles(agent.spool, "active")).length === 0);

  const copies = copiesOf(await maildirMessages(agent.mailboxes, "alice"), localId);
  t.diagnostic(`${localId}: ${copies.length} cop${copies.length === 1 ? "y" : "ies"} in the Maildir after restart`);
  assert.ok(copies.length >= 1, `${localId} was acknowledged with 250 and never delivered`);
  for (const copy of copies) {
    assert.match(copy, /^Return-Path: <carol@home\.example\.net>\nDelivered-To: alice@home\.example\.net\nReceived: /);
    assert.match(copy, /\n\ndurability-local\n/);
  }

  assert.deepEqual(await allQueueFiles(agent.spool), [`deferred/${remoteId}`]);
  const queued = await readQueueFile(agent.spool, "deferred", remoteId);
  assert.equal(queued.record.id, remoteId);
  const envelope = queued.record.envelope as { sender: string; recipients: { address: string }[] };
  assert.equal(envelope.sender, SENDER);
  assert.deepEqual(envelope.recipients, [{ address: REMOTE_RCPT }]);
  assert.match(queued.content, /^Received: from client\.home\.example\.net /);
  assert.match(queued.content, /\r\nSubject: durability-remote\r\n[^]*\r\n\r\ndurability-remote\r\n$/);
});

test("kill -9 in the middle of DATA: the partial file is in incoming/, removed at restart, never delivered", async (t) => {
  let agent = await startAgent(LOCAL_CONFIG);
  t.after(() => agent.cleanup());

  const { dialog, id } = await halfDelivered(agent, "killed-in-data", 1024 * 1024);
  await agent.kill();
  dialog.destroy();
  assert.deepEqual(await allQueueFiles(agent.spool), [`incoming/${id}`]);

  agent = await agent.restart();
  await agent.waitForLog(new RegExp(`qmgr\\[\\d+\\]: ${id}: removed unfinished queue file from incoming/`));
  assert.deepEqual(await allQueueFiles(agent.spool), []);
  assert.equal((await maildirMessages(agent.mailboxes, "alice")).size, 0);

  // The restarted agent takes mail as usual.
  const next = queueIdOf(await sendMail(agent.ports[0]!, [LOCAL_RCPT], message("after-restart")));
  await agent.waitForLog(new RegExp(`${next}: removed`));
  const delivered = await maildirMessages(agent.mailboxes, "alice");
  assert.equal(delivered.size, 1);
  assert.equal(copiesOf(delivered, next).length, 1);
  assert.doesNotMatch([...delivered.values()][0]!, /killed-in-data/);
});

test("a client that disconnects during DATA leaves no queue file, and the agent keeps serving", async (t) => {
  const agent = await startAgent(LOCAL_CONFIG);
  t.after(() => agent.cleanup());

  const { dialog, id } = await halfDelivered(agent, "abandoned", 1024 * 1024);
  dialog.destroy();
  await agent.waitForLog(new RegExp(`smtpd\\[\\d+\\]: ${id}: lost connection after DATA \\(\\d+ bytes\\) from unknown\\[127\\.0\\.0\\.1\\]`));
  await pollUntil("the partial queue file is removed from incoming/", async () => (await queueFiles(agent.spool, "incoming")).length === 0);
  assert.deepEqual(await allQueueFiles(agent.spool), []);
  assert.equal(agent.child.exitCode, null, "the agent exited");

  const next = queueIdOf(await sendMail(agent.ports[0]!, [LOCAL_RCPT], message("next-message")));
  await agent.waitForLog(new RegExp(`${next}: removed`));
  const delivered = await maildirMessages(agent.mailboxes, "alice");
  assert.equal(delivered.size, 1);
  assert.equal(copiesOf(delivered, next).length, 1);
  assert.doesNotMatch([...delivered.values()][0]!, /abandoned/);
});

test("50 messages over 10 connections: each 250 names a unique, time-ordered queue ID found exactly once", async (t) => {
  const agent = await startAgent(LOCAL_CONFIG);
  t.after(() => agent.cleanup());
  const connections = await Promise.all(Array.from({ length: 10 }, () => SmtpDialog.open(agent.ports[0]!)));
  t.after(() => connections.forEach((c) => c.dialog.destroy()));
  for (const { dialog } of connections) assert.equal((await dialog.command("EHLO client.home.example.net")).code, 250);

  interface Accepted {
    id: string;
    round: number;
    recipient: string;
    token: string;
    /** Client clock before MAIL FROM and when the 250 arrived. */
    began: number;
    acked: number;
  }
  const accepted: Accepted[] = [];
  // Five rounds, one message per connection each; a round starts only when the previous one is all acknowledged.
  for (let round = 0; round < 5; round++) {
    const batch = await Promise.all(
      connections.map(async ({ dialog }, c) => {
        const n = round * 10 + c;
        const recipient = n % 2 === 0 ? LOCAL_RCPT : REMOTE_RCPT;
        const token = `concurrent-${n}`;
        const began = Date.now();
        await startTransaction(dialog, [recipient], true);
        const id = queueIdOf(await dialog.data(message(token, 4096)));
        return { id, round, recipient, token, began, acked: Date.now() };
      }),
    );
    accepted.push(...batch);
  }
  await Promise.all(connections.map((c) => c.dialog.quit()));

  const ids = accepted.map((a) => a.id);
  assert.equal(new Set(ids).size, 50, "queue IDs are not unique");
  for (const a of accepted) {
    const time = queueIdTime(a.id);
    assert.ok(time >= a.began && time <= a.acked, `${a.id} encodes ${time}, outside its transaction ${a.began}..${a.acked}`);
  }
  for (let round = 1; round < 5; round++) {
    const earlier = accepted.filter((a) => a.round === round - 1).map((a) => a.id);
    const later = accepted.filter((a) => a.round === round).map((a) => a.id);
    // Within one millisecond the random part decides, so compare the time part of the IDs.
    const lastEarlier = earlier.map((id) => id.slice(0, 10)).sort().at(-1)!;
    const firstLater = later.map((id) => id.slice(0, 10)).sort()[0]!;
    assert.ok(firstLater >= lastEarlier, `round ${round} has ${firstLater} sorting before round ${round - 1}'s ${lastEarlier}`);
  }

  await pollUntil("the queue manager has handled every message", async () => (await queueFiles(agent.spool, "active")).length === 0);
  const onDisk = await allQueueFiles(agent.spool);
  const mailbox = await maildirMessages(agent.mailboxes, "alice");
  for (const a of accepted) {
    const inQueue = onDisk.filter((f) => f.endsWith(`/${a.id}`));
    const inMaildir = copiesOf(mailbox, a.id);
    assert.equal(inQueue.length + inMaildir.length, 1, `${a.id} (${a.token}): queue ${JSON.stringify(inQueue)}, ${inMaildir.length} Maildir copies`);
    if (a.recipient === LOCAL_RCPT) {
      assert.match(inMaildir[0] ?? "", new RegExp(`\\nSubject: ${a.token}\\n`));
    } else {
      assert.deepEqual(inQueue, [`deferred/${a.id}`]);
      const { record, content } = await readQueueFile(agent.spool, "deferred", a.id);
      assert.deepEqual((record.envelope as { recipients: unknown }).recipients, [{ address: REMOTE_RCPT }]);
      assert.match(content, new RegExp(`\\r\\nSubject: ${a.token}\\r\\n`));
    }
  }
  assert.equal(mailbox.size, 25);
  assert.equal(onDisk.length, 25);
});
