// Clock jumps, on the queue manager's injectable clock (QmgrOptions.now; the agent process itself has no
// injectable clock): a deferred message keeps its retry after the clock steps back a day, and a step
// forward of an hour brings the retry at once without bouncing or warning anybody.
import { test } from "node:test";
import assert from "node:assert/strict";
import { QmgrHarness, ScriptedTransport, SENDER, deferred, sent } from "../support/qmgr-harness.js";

const DAY = 86_400;
const BOB = "bob@example.org";

test("the clock steps back a day after a deferral: the message is still retried within maxBackoff, not a day later", async (t) => {
  const remote = new ScriptedTransport("smtp", { [BOB]: [deferred(), sent()] });
  const h = await QmgrHarness.create(t, { remote, queue: { minBackoff: 300, maxBackoff: 4000 } });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: BOB }] });
  assert.deepEqual(await h.queueFiles(), [`deferred/${id}`]);
  assert.equal(await h.nextAttempt(id), 300);

  // NTP steps the clock back by a day. A due time further ahead than maxBackoff can only come from
  // such a step, so by maxBackoff after the step the message must have been tried again.
  const moved = await h.scanAt(-DAY + 4000);
  assert.equal(moved, 1, "the deferred message was retried within maxBackoff of the step back");
  assert.deepEqual(remote.attemptsFor(id).length, 2);
  assert.deepEqual(await h.queueFiles(), []);
});

test("the clock steps forward an hour: the next scan retries the message, which is delivered; no bounce, no delay warning", async (t) => {
  const remote = new ScriptedTransport("smtp", { [BOB]: [deferred(), sent()] });
  const h = await QmgrHarness.create(t, { remote, queue: { minBackoff: 300, maxBackoff: 4000 } });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: BOB }] });
  assert.equal(await h.scanAt(3600), 1);
  assert.deepEqual(remote.attemptsFor(id), [[BOB], [BOB]]);
  assert.deepEqual(await h.queueFiles(), []);
  assert.equal(h.notices.length, 0, "neither a bounce nor a delay warning");
  assert.equal(h.log.matching(new RegExp(`${id}: to=<${BOB}>, .*status=sent`)).length, 1);
});

test("queue IDs made after the clock stepped back are still unique", async (t) => {
  const remote = new ScriptedTransport("smtp", { [BOB]: [deferred()] });
  const h = await QmgrHarness.create(t, { remote, queue: { delayWarning: 0 } });
  const before = await Promise.all(Array.from({ length: 20 }, () => h.submit({ sender: SENDER, recipients: [{ address: BOB }] })));
  h.now -= DAY;
  const after = await Promise.all(Array.from({ length: 20 }, () => h.submit({ sender: SENDER, recipients: [{ address: BOB }] })));
  assert.equal(new Set([...before, ...after]).size, 40);
  assert.equal((await h.queueFiles()).length, 40, "every message is queued under its own ID");
});
