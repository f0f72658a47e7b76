// Queue manager timing on a fake clock: the retry schedule kept as the deferred file's mtime, per-recipient
// state across attempts and restarts, a throwing transport, expiry after the queue lifetime, and the delay warning.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rename } from "node:fs/promises";
import { readStatus } from "../../agent/queue/status-log.js";
import { rfc5322Date } from "../../shared/rfc5322-date.js";
import { HOSTNAME, QmgrHarness, ScriptedTransport, SENDER, T0, deferred, sent } from "../support/qmgr-harness.js";

const DAY = 86_400;

/** Attempt times (seconds after arrival) of a message that is always deferred, under Postfix's defaults. */
const DEFAULT_SCHEDULE = [0, 300, 600, 1200, 2400, 4800, 8800, 12800, 16800, 20800, 24800];

test("the queue defaults are Postfix's: 300 s first retry, 4000 s at most, 5 days lifetime, warning after 4 hours", async (t) => {
  const h = await QmgrHarness.create(t);
  assert.deepEqual(h.config.queue, { minBackoff: 300, maxBackoff: 4000, lifetime: 5 * DAY, delayWarning: 4 * 3600, scanInterval: 60, notifyPostmaster: true });
});

test("a deferred message is retried after 300 s, then at intervals that double with its age up to 4000 s", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [deferred()] });
  const h = await QmgrHarness.create(t, { remote, queue: { delayWarning: 0 } });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }] });
  assert.deepEqual(await h.queueFiles(), [`deferred/${id}`]);

  for (let i = 1; i < DEFAULT_SCHEDULE.length; i++) {
    const due = DEFAULT_SCHEDULE[i]!;
    assert.equal(await h.nextAttempt(id), due, `attempt ${i + 1} is due ${due} s after arrival`);
    assert.equal(await h.scanAt(due - 1), 0, `a scan one second before ${due} s leaves the message waiting`);
    assert.equal(remote.attemptsFor(id).length, i);
    assert.equal(await h.scanAt(due), 1, `the scan at ${due} s moves the message to active/`);
    assert.equal(remote.attemptsFor(id).length, i + 1, `attempt ${i + 1} at ${due} s`);
    assert.deepEqual(await h.queueFiles(), [`deferred/${id}`]);
  }
  assert.equal(await h.nextAttempt(id), 24800 + 4000);
  assert.equal(h.log.matching(new RegExp(`${id}: to=<bob@example\\.org>, relay=mx\\.example\\.org\\[192\\.0\\.2\\.10\\]:25, .*dsn=4\\.7\\.1, status=deferred \\(host mx`)).length, DEFAULT_SCHEDULE.length);
  assert.equal(h.notices.length, 0);
});

test("the backoff counts from the attempt: a late scan waits the message's age, clamped to the bounds", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [deferred()] });
  const h = await QmgrHarness.create(t, { remote, queue: { delayWarning: 0 } });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }] });
  assert.equal(await h.scanAt(1000), 1);
  assert.equal(await h.nextAttempt(id), 2000);
  assert.equal(await h.scanAt(9000), 1);
  assert.equal(await h.nextAttempt(id), 13000);
});

test("minBackoff and maxBackoff are configurable", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [deferred()] });
  const h = await QmgrHarness.create(t, { remote, queue: { minBackoff: 10, maxBackoff: 50, delayWarning: 0 } });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }] });
  const seen: number[] = [];
  for (let i = 0; i < 6; i++) {
    const due = await h.nextAttempt(id);
    seen.push(due);
    assert.equal(await h.scanAt(due), 1);
  }
  assert.deepEqual(seen, [10, 20, 40, 80, 130, 180]);
});

test("a flush (force) moves a message that is not yet due; a plain scan does not", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [deferred(), sent()] });
  const h = await QmgrHarness.create(t, { remote });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }] });
  assert.equal(await h.scanAt(10), 0);
  assert.deepEqual(await h.queueFiles(), [`deferred/${id}`]);
  assert.equal(await h.scanAt(10, true), 1);
  assert.deepEqual(remote.attemptsFor(id), [["bob@example.org"], ["bob@example.org"]]);
  assert.deepEqual(await h.queueFiles(), []);
  assert.equal(await h.hasStatusLog(id), false);
});

test("three recipients, two delivered: the outcomes are on disk and only the third is retried", async (t) => {
  const remote = new ScriptedTransport("smtp", { "dave@example.org": [deferred(), sent()] });
  const h = await QmgrHarness.create(t, { remote });
  const recipients = ["bob@example.org", "carol@example.org", "dave@example.org"];
  const id = await h.submit({ sender: SENDER, recipients: recipients.map((address) => ({ address })) });

  const status = await readStatus(h.spool, id);
  assert.deepEqual(
    recipients.map((r) => [r, status.latest.get(r)?.status, status.latest.get(r)?.dsn]),
    [
      ["bob@example.org", "sent", "2.0.0"],
      ["carol@example.org", "sent", "2.0.0"],
      ["dave@example.org", "deferred", "4.7.1"],
    ],
  );
  assert.deepEqual(await h.queueFiles(), [`deferred/${id}`]);

  assert.equal(await h.scanAt(300), 1);
  assert.deepEqual(remote.attemptsFor(id), [recipients, ["dave@example.org"]]);
  assert.deepEqual(await h.queueFiles(), []);
  assert.equal(await h.hasStatusLog(id), false);
  for (const r of recipients) assert.equal(h.log.matching(new RegExp(`${id}: to=<${r}>, .*status=sent`)).length, 1, `${r} is delivered once`);
});

test("after a restart, the status log on disk decides: only the unfinished recipient is tried again", async (t) => {
  const remote = new ScriptedTransport("smtp", { "dave@example.org": [deferred(), sent()] });
  const h = await QmgrHarness.create(t, { remote });
  const recipients = ["bob@example.org", "carol@example.org", "dave@example.org"];
  const id = await h.submit({ sender: SENDER, recipients: recipients.map((address) => ({ address })) });

  await h.restart();
  assert.equal(await h.scanAt(300), 1);
  assert.deepEqual(remote.attemptsFor(id), [recipients, ["dave@example.org"]]);
  assert.deepEqual(await h.queueFiles(), []);
});

test("a crash after the outcomes were logged but before the move to deferred/: recovery from active/ tries only the unfinished recipient", async (t) => {
  const remote = new ScriptedTransport("smtp", { "dave@example.org": [deferred(), sent()] });
  const h = await QmgrHarness.create(t, { remote });
  const recipients = ["bob@example.org", "carol@example.org", "dave@example.org"];
  const id = await h.submit({ sender: SENDER, recipients: recipients.map((address) => ({ address })) });
  await h.qmgr.stop();
  // The disk as a kill -9 between appendStatus and the rename would leave it.
  await rename(h.spool.file("deferred", id), h.spool.file("active", id));

  await h.restart(true);
  assert.deepEqual(remote.attemptsFor(id), [recipients, ["dave@example.org"]]);
  assert.deepEqual(await h.queueFiles(), []);
});

test("a transport that throws defers every recipient of the attempt and loses nothing", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": ["throw", sent()], "carol@example.org": [sent()] });
  const h = await QmgrHarness.create(t, { remote });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }, { address: "carol@example.org" }] });

  assert.deepEqual(await h.queueFiles(), [`deferred/${id}`]);
  const status = await readStatus(h.spool, id);
  for (const r of ["bob@example.org", "carol@example.org"]) {
    const s = status.latest.get(r);
    assert.equal(s?.status, "deferred", r);
    assert.equal(s?.dsn, "4.3.0");
    assert.equal(s?.detail, "smtp transport failed: scripted transport crashed");
  }
  assert.equal(h.log.matching(/status=deferred \(smtp transport failed: scripted transport crashed\)/).length, 2);
  assert.equal(h.notices.length, 0);

  assert.equal(await h.scanAt(300), 1);
  assert.deepEqual(remote.attemptsFor(id), [
    ["bob@example.org", "carol@example.org"],
    ["bob@example.org", "carol@example.org"],
  ]);
  assert.deepEqual(await h.queueFiles(), []);
});

test("after 5 days a deferred recipient expires: status=expired, a failure DSN to the sender, the message leaves the queue", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [deferred()] });
  const h = await QmgrHarness.create(t, { remote, queue: { delayWarning: 0 } });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }, { address: "carol@example.org" }] });

  // The last attempt inside the lifetime is deferred as usual.
  assert.equal(await h.scanAt(5 * DAY - 1), 1);
  assert.deepEqual(await h.queueFiles(), [`deferred/${id}`]);
  assert.equal(h.log.matching(/status=expired/).length, 0);
  assert.equal(await h.nextAttempt(id), 5 * DAY - 1 + 4000);

  assert.equal(await h.scanAt(5 * DAY - 1 + 4000), 1);
  assert.deepEqual(remote.attemptsFor(id), [["bob@example.org", "carol@example.org"], ["bob@example.org"], ["bob@example.org"]]);
  assert.equal(h.log.matching(new RegExp(`${id}: to=<bob@example\\.org>, .*status=expired \\(message expired after 5 days in the queue: host mx`)).length, 1);
  assert.equal(h.notices.length, 1, "one failure DSN");
  const notice = await h.notice(0);
  assert.deepEqual(notice.record.envelope, { sender: "", recipients: [{ address: SENDER }] });
  assert.equal(notice.mail.subject, "Undelivered Mail Returned to Sender");
  assert.equal(notice.report.length, 2, "the per-message block and one recipient");
  const bob = notice.report[1]!;
  assert.equal(bob.get("final-recipient"), "rfc822; bob@example.org");
  assert.equal(bob.get("action"), "failed");
  assert.match(bob.get("status") ?? "", /^5\.\d{1,3}\.\d{1,3}$/);
  assert.deepEqual(await h.queueFiles(), [`active/${h.notices[0]!.record.id}`], "the original left the queue; only the DSN is queued");
  assert.equal(await h.hasStatusLog(id), false);
});

test("the queue lifetime is configurable", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [deferred()] });
  const h = await QmgrHarness.create(t, { remote, queue: { lifetime: 3600, delayWarning: 0 } });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }] });
  for (const due of [300, 600, 1200, 2400]) {
    assert.equal(await h.scanAt(due), 1);
    assert.deepEqual(await h.queueFiles(), [`deferred/${id}`], `still queued at ${due} s`);
  }
  assert.equal(await h.scanAt(4800), 1);
  assert.equal(h.log.matching(new RegExp(`${id}: to=<bob@example\\.org>, .*status=expired`)).length, 1);
  assert.ok(!(await h.queueFiles()).some((f) => f.endsWith(id)), "the expired message left the queue");
});

test("the delay warning goes once, at the first attempt after 4 hours, to recipients whose NOTIFY allows DELAY", async (t) => {
  const plain = "bob@example.org";
  const failureOnly = "carol@example.org";
  const never = "dave@example.org";
  const delay = "erin@example.org";
  const remote = new ScriptedTransport("smtp", Object.fromEntries([plain, failureOnly, never, delay].map((r) => [r, [deferred()]])));
  const h = await QmgrHarness.create(t, { remote });
  const id = await h.submit({
    sender: SENDER,
    recipients: [
      { address: plain },
      { address: failureOnly, notify: ["FAILURE"] },
      { address: never, notify: ["NEVER"] },
      { address: delay, notify: ["SUCCESS", "DELAY"], orcpt: "rfc822;Erin@example.org" },
    ],
  });

  for (const due of DEFAULT_SCHEDULE.slice(1)) {
    assert.equal(await h.scanAt(due), 1);
    assert.equal(h.notices.length, due < 4 * 3600 ? 0 : 1, `delay notices after the attempt at ${due} s`);
  }
  assert.equal(remote.attemptsFor(id).length, DEFAULT_SCHEDULE.length);
  assert.equal((await readStatus(h.spool, id)).delayWarned, true, "the warning is in the status log");

  const notice = await h.notice(0);
  assert.deepEqual(notice.record.envelope, { sender: "", recipients: [{ address: SENDER }] });
  assert.equal(notice.record.origin, "bounce");
  assert.equal(notice.contentType.value, "multipart/report");
  assert.equal(notice.contentType.params["report-type"], "delivery-status");
  assert.equal(notice.mail.from?.value[0]?.address, `MAILER-DAEMON@${HOSTNAME}`);
  assert.equal(notice.mail.subject, "Delayed Mail (still being retried)");
  assert.match(notice.mail.text ?? "", /THIS IS A WARNING ONLY/);
  assert.deepEqual(
    notice.report.slice(1).map((r) => r.get("final-recipient")),
    [`rfc822; ${plain}`, `rfc822; ${delay}`],
  );
  for (const r of notice.report.slice(1)) {
    assert.equal(r.get("action"), "delayed");
    assert.equal(r.get("status"), "4.7.1");
    assert.equal(r.get("will-retry-until"), rfc5322Date(new Date(T0 + 5 * DAY * 1000)));
    assert.equal(r.get("last-attempt-date"), rfc5322Date(new Date(T0 + 16800 * 1000)));
  }
  assert.equal(notice.report[2]!.get("original-recipient"), "rfc822;Erin@example.org");
  assert.equal(notice.returned.contentType, "text/rfc822-headers");

  // Once per message, also across a restart.
  await h.restart();
  assert.equal(await h.scanAt(28800), 1);
  assert.equal(h.notices.length, 1);
});

test("the delay warning time is configurable", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [deferred()] });
  const h = await QmgrHarness.create(t, { remote, queue: { delayWarning: 600 } });
  await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }] });
  assert.equal(await h.scanAt(300), 1);
  assert.equal(h.notices.length, 0, "no warning at 300 s");
  assert.equal(await h.scanAt(600), 1);
  assert.equal(h.notices.length, 1, "the warning at 600 s");
  assert.equal((await h.notice(0)).report[1]!.get("action"), "delayed");
});

test("delayWarning: 0 never warns", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [deferred()] });
  const h = await QmgrHarness.create(t, { remote, queue: { delayWarning: 0 } });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }] });
  for (const at of [4 * 3600, DAY, 4 * DAY]) assert.equal(await h.scanAt(at), 1);
  assert.equal(remote.attemptsFor(id).length, 4);
  assert.equal(h.notices.length, 0);
});

test("no delay warning when every recipient said NOTIFY=NEVER or FAILURE only", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [deferred()], "carol@example.org": [deferred()] });
  const h = await QmgrHarness.create(t, { remote });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org", notify: ["NEVER"] }, { address: "carol@example.org", notify: ["FAILURE"] }] });
  for (const at of [4 * 3600, DAY]) assert.equal(await h.scanAt(at), 1);
  assert.equal(remote.attemptsFor(id).length, 3);
  assert.equal(h.notices.length, 0);
});
