// Notices made by the queue manager and Notifier as queued: failure and success DSNs honouring NOTIFY, RET,
// ENVID and ORCPT, their Diagnostic-Code, and never bouncing a bounce (a report to postmaster that does not loop).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { LocalDelivery } from "../../agent/local/local.js";
import { LocalRecipients } from "../../agent/local/local-recipients.js";
import { SenderRewriter, loadOrCreateSrsSecret } from "../../agent/local/srs.js";
import { HOSTNAME, QmgrHarness, ScriptedTransport, SENDER, bounced, deferred, parseDsn, sent, unknownUserReply } from "../support/qmgr-harness.js";

const POSTMASTER = `postmaster@${HOSTNAME}`;

test("a bounce is a multipart/report from MAILER-DAEMON with the null sender, honouring RET=HDRS, ENVID and ORCPT", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [bounced()] });
  const h = await QmgrHarness.create(t, { remote });
  const id = await h.submit({
    sender: SENDER,
    ret: "HDRS",
    envid: "QQ314159",
    recipients: [{ address: "bob@example.org", notify: ["FAILURE"], orcpt: "rfc822;Bob@example.org" }, { address: "carol@example.org" }],
  });

  assert.equal(h.notices.length, 1);
  assert.deepEqual(await h.queueFiles(), [`active/${h.notices[0]!.record.id}`], "the original left the queue; the DSN waits in active/");
  const notice = await h.notice(0);
  assert.deepEqual(notice.record.envelope, { sender: "", recipients: [{ address: SENDER }] });
  assert.equal(notice.record.origin, "bounce");
  assert.equal(notice.contentType.value, "multipart/report");
  assert.equal(notice.contentType.params["report-type"], "delivery-status");
  assert.equal(notice.mail.from?.value[0]?.address, `MAILER-DAEMON@${HOSTNAME}`);
  assert.deepEqual([notice.mail.to].flat().flatMap((to) => to?.value.map((a) => a.address)), [SENDER]);
  assert.equal(notice.mail.subject, "Undelivered Mail Returned to Sender");

  const [perMessage, bob, ...others] = notice.report;
  assert.equal(others.length, 0, "only the bounced recipient is reported");
  assert.equal(perMessage!.get("original-envelope-id"), "QQ314159");
  assert.equal(perMessage!.get("reporting-mta"), `dns; ${HOSTNAME}`);
  assert.equal(perMessage!.get("x-homerelay-queue-id"), id);
  assert.equal(bob!.get("original-recipient"), "rfc822;Bob@example.org");
  assert.equal(bob!.get("final-recipient"), "rfc822; bob@example.org");
  assert.equal(bob!.get("action"), "failed");
  assert.equal(bob!.get("status"), "5.1.1");
  assert.equal(bob!.get("remote-mta"), "dns; mx.example.org");

  // RET=HDRS: the header only, no body.
  assert.equal(notice.returned.contentType, "text/rfc822-headers");
  assert.match(notice.returned.text, /^Subject: Lunch on Friday$/m);
  assert.match(notice.returned.text, /^Message-ID: <first@home\.example\.net>$/m);
  assert.doesNotMatch(notice.returned.text, /Shall we meet/);
});

test("without RET the bounce returns the whole message as message/rfc822", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [bounced()] });
  const h = await QmgrHarness.create(t, { remote });
  await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }] });
  const notice = await h.notice(0);
  assert.equal(notice.returned.contentType, "message/rfc822");
  assert.match(notice.returned.text, /Message-ID: <first@home\.example\.net>\r\n[^]*\r\n\r\nShall we meet at noon\?\r\n$/);
  assert.equal(notice.report[0]!.has("original-envelope-id"), false, "no ENVID given, none echoed");
});

test("the Diagnostic-Code carries the next hop's reply as smtp; and the notice says who said it", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [bounced()], "carol@example.org": [sent()] });
  const h = await QmgrHarness.create(t, { remote });
  await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }, { address: "carol@example.org", notify: ["SUCCESS"] }] });
  assert.equal(h.notices.length, 2, "a bounce for bob, a success notice for carol");
  const [bounce, success] = [await h.notice(0), await h.notice(1)];
  assert.equal(bounce.mail.subject, "Undelivered Mail Returned to Sender");
  assert.equal(success.mail.subject, "Successful Mail Delivery Report");
  assert.deepEqual(
    [bounce.report[1]!.get("diagnostic-code"), success.report[1]!.get("diagnostic-code")],
    [`smtp; ${unknownUserReply("bob@example.org")}`, "smtp; 250 2.0.0 Ok: queued as 4YkL2m0Zz"],
  );
  assert.match((bounce.mail.text ?? "").replace(/\s+/g, " "), /<bob@example\.org>: host mx\.example\.org said: 550 5\.1\.1 <bob@example\.org>: Recipient address rejected: User unknown/);
  assert.match((success.mail.text ?? "").replace(/\s+/g, " "), /<carol@example\.org>: relayed via mx\.example\.org: 250 2\.0\.0 Ok: queued as 4YkL2m0Zz/);
});

test("NOTIFY=NEVER or NOTIFY=SUCCESS alone gets no bounce; the message still leaves the queue", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [bounced()], "carol@example.org": [bounced()] });
  const h = await QmgrHarness.create(t, { remote });
  const id = await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org", notify: ["NEVER"] }, { address: "carol@example.org", notify: ["SUCCESS"] }] });
  assert.equal(h.log.matching(new RegExp(`${id}: to=<(bob|carol)@example\\.org>, .*dsn=5\\.1\\.1, status=bounced`)).length, 2);
  assert.equal(h.notices.length, 0);
  assert.deepEqual(await h.queueFiles(), []);
});

test("never bounce a bounce: a failed null-sender message gets no DSN, and postmaster gets a report", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [bounced()] });
  const h = await QmgrHarness.create(t, { remote });
  const id = await h.submit({ sender: "", recipients: [{ address: "bob@example.org" }] });

  assert.equal(h.log.matching(new RegExp(`bounce: ${id}: undeliverable notice or null-sender mail; never bouncing a bounce`)).length, 1);
  assert.equal(h.notices.length, 1, "one report, to postmaster");
  const report = await h.notice(0);
  assert.deepEqual(report.record.envelope, { sender: "", recipients: [{ address: POSTMASTER }] });
  assert.deepEqual([report.mail.to].flat().flatMap((to) => to?.value.map((a) => a.address)), [POSTMASTER]);
  assert.equal(report.mail.from?.value[0]?.address, `MAILER-DAEMON@${HOSTNAME}`);
  assert.equal(report.report[1]!.get("final-recipient"), "rfc822; bob@example.org");
  assert.equal(report.report[1]!.get("action"), "failed");
  assert.deepEqual(await h.queueFiles(), [`active/${report.record.id}`]);
});

test("never bounce a bounce: with notifyPostmaster off, a failed null-sender message is only logged", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [bounced()] });
  const h = await QmgrHarness.create(t, { remote, queue: { notifyPostmaster: false } });
  const id = await h.submit({ sender: "", recipients: [{ address: "bob@example.org" }] });
  assert.equal(h.log.matching(new RegExp(`${id}: undeliverable notice or null-sender mail; never bouncing a bounce`)).length, 1);
  assert.equal(h.notices.length, 0);
  assert.deepEqual(await h.queueFiles(), []);
});

test("a failed report to postmaster generates no other notice", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [bounced()] });
  const local = new ScriptedTransport("local", { [POSTMASTER]: [bounced()] });
  const h = await QmgrHarness.create(t, { remote, local, deliverNotices: true });
  await h.submit({ sender: "", recipients: [{ address: "bob@example.org" }] });

  assert.equal(h.notices.length, 1, "only the first report");
  const reportId = h.notices[0]!.record.id;
  assert.deepEqual(local.attemptsFor(reportId), [[POSTMASTER]]);
  assert.equal(h.log.matching(new RegExp(`${reportId}: to=<${POSTMASTER}>, .*status=bounced`)).length, 1);
  assert.equal(h.log.matching(new RegExp(`${reportId}: undeliverable notice or null-sender mail; never bouncing a bounce`)).length, 1);
  assert.deepEqual(await h.queueFiles(), []);
});

test("a bounce that cannot be delivered to the sender goes to postmaster, once", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [bounced()], "alice@example.com": [bounced()] });
  const local = new ScriptedTransport("local", { [POSTMASTER]: [bounced()] });
  const h = await QmgrHarness.create(t, { remote, local, deliverNotices: true });
  await h.submit({ sender: "alice@example.com", recipients: [{ address: "bob@example.org" }] });

  const dsnId = h.notices[0]?.record.id;
  assert.ok(dsnId, "a bounce to alice was queued");
  assert.deepEqual(remote.attemptsFor(dsnId), [["alice@example.com"]]);
  assert.equal(h.log.matching(new RegExp(`${dsnId}: undeliverable notice or null-sender mail; never bouncing a bounce`)).length, 1);
  assert.deepEqual(
    h.notices.map((n) => n.record.envelope),
    [
      { sender: "", recipients: [{ address: "alice@example.com" }] },
      { sender: "", recipients: [{ address: POSTMASTER }] },
    ],
    "the undeliverable bounce is reported to postmaster, and that report's failure to nobody",
  );
  const report = await parseDsn(local.calls.find((c) => c.recipients[0] === POSTMASTER)!.content);
  assert.equal(report.report[1]!.get("final-recipient"), "rfc822; alice@example.com");
  assert.deepEqual(await h.queueFiles(), []);
});

test("NOTIFY=SUCCESS through a next hop without DSN gets a relayed notice; one that offers DSN, or no NOTIFY, gets none", async (t) => {
  const remote = new ScriptedTransport("smtp", {
    "bob@example.org": [sent({ dsnOffered: false })],
    "carol@example.com": [sent({ dsnOffered: true, relay: "mx.example.com[192.0.2.20]:25" })],
    "dave@example.org": [sent({ dsnOffered: false })],
  });
  const h = await QmgrHarness.create(t, { remote });
  const id = await h.submit({
    sender: SENDER,
    envid: "LUNCH-1",
    recipients: [
      { address: "bob@example.org", notify: ["SUCCESS", "FAILURE"], orcpt: "rfc822;bob@example.org" },
      { address: "carol@example.com", notify: ["SUCCESS"] },
      { address: "dave@example.org" },
    ],
  });

  assert.equal(h.notices.length, 1);
  const notice = await h.notice(0);
  assert.deepEqual(notice.record.envelope, { sender: "", recipients: [{ address: SENDER }] });
  assert.equal(notice.mail.subject, "Successful Mail Delivery Report");
  assert.equal(notice.mail.from?.value[0]?.address, `MAILER-DAEMON@${HOSTNAME}`);
  const [perMessage, bob, ...others] = notice.report;
  assert.equal(others.length, 0, "only bob is reported");
  assert.equal(perMessage!.get("original-envelope-id"), "LUNCH-1");
  assert.equal(perMessage!.get("x-homerelay-queue-id"), id);
  assert.equal(bob!.get("final-recipient"), "rfc822; bob@example.org");
  assert.equal(bob!.get("original-recipient"), "rfc822;bob@example.org");
  assert.equal(bob!.get("action"), "relayed");
  assert.equal(bob!.get("status"), "2.0.0");
  assert.equal(bob!.get("remote-mta"), "dns; mx.example.org");
  assert.equal(notice.returned.contentType, "text/rfc822-headers");
  assert.deepEqual(await h.queueFiles(), [`active/${notice.record.id}`]);
});

test("NOTIFY=SUCCESS delivered to a local Maildir gets a delivered notice", async (t) => {
  const h = await QmgrHarness.create(t, {
    local: async (config, spool, log) => {
      const srs = new SenderRewriter({ secret: await loadOrCreateSrsSecret(spool.privateDir), domain: HOSTNAME });
      return new LocalDelivery({ hostname: HOSTNAME, mailboxes: config.mailboxes, recipients: new LocalRecipients(config.localDomains, ["carol"], null, srs), spool, log, queued: () => {} });
    },
  });
  await h.submit({ sender: "alice@example.com", recipients: [{ address: `carol@${HOSTNAME}`, notify: ["SUCCESS"] }] });

  const maildir = join(h.config.mailboxes, "carol", "new");
  const delivered = await readdir(maildir);
  assert.equal(delivered.length, 1);
  assert.match(await readFile(join(maildir, delivered[0]!), "utf8"), /Message-ID: <first@home\.example\.net>/);

  assert.equal(h.notices.length, 1);
  const notice = await h.notice(0);
  assert.deepEqual(notice.record.envelope, { sender: "", recipients: [{ address: "alice@example.com" }] });
  assert.equal(notice.report[1]!.get("final-recipient"), `rfc822; carol@${HOSTNAME}`);
  assert.equal(notice.report[1]!.get("action"), "delivered");
  assert.equal(notice.report[1]!.get("status"), "2.0.0");
  assert.equal(notice.report[1]!.has("remote-mta"), false);
});

test("a recipient still deferred gets no notice until it is done", async (t) => {
  const remote = new ScriptedTransport("smtp", { "bob@example.org": [deferred(), bounced()] });
  const h = await QmgrHarness.create(t, { remote });
  await h.submit({ sender: SENDER, recipients: [{ address: "bob@example.org" }] });
  assert.equal(h.notices.length, 0);
  assert.equal(await h.scanAt(300), 1);
  assert.equal(h.notices.length, 1);
  assert.equal((await h.notice(0)).report[1]!.get("action"), "failed");
});
