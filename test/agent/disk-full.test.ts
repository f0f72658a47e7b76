// A spool that runs out of room or turns read-only: 452 4.3.1, no partial queue file left behind,
// the agent keeps running and takes mail again once there is room; queueMinFree refuses MAIL early.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { SmtpDialog } from "../support/smtp-dialog.js";
import { LOCAL_CONFIG, LOCAL_RCPT, SENDER, allQueueFiles, copiesOf, maildirMessages, message, queueIdOf, sendMail, startTransaction } from "../support/queue-durability.js";

const run = promisify(execFile);
const INSUFFICIENT_STORAGE = "4.3.1 Insufficient system storage";

/**
 * Start an agent whose spool is a 2 MB tmpfs (mailboxes stay on the ordinary disk). Returns null
 * after marking the test skipped when this system does not let us mount.
 */
async function agentOnTmpfs(t: TestContext, limits: Record<string, number>): Promise<{ agent: AgentProcess; spool: string } | null> {
  const dir = await mkdtemp(join(tmpdir(), "hr-diskfull-"));
  const spool = join(dir, "spool");
  await mkdir(spool);
  let agent: AgentProcess | undefined;
  let mounted = false;
  t.after(async () => {
    await agent?.stop();
    if (mounted) await run("umount", [spool]);
    await rm(dir, { recursive: true, force: true });
  });
  try {
    await run("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", spool]);
    mounted = true;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? "";
    if (/permission denied|operation not permitted|must be superuser|only root|EPERM/i.test(stderr)) {
      t.skip(`cannot mount a tmpfs for the spool here (needs root with CAP_SYS_ADMIN): ${stderr.trim()}`);
      return null;
    }
    throw err;
  }
  agent = await startAgent({ ...LOCAL_CONFIG, spool, limits }, { dir });
  return { agent, spool };
}

test("a message larger than the free space gets 452 4.3.1, leaves nothing behind, and the next one is delivered", async (t) => {
  const setup = await agentOnTmpfs(t, { queueMinFree: 1, messageSize: 10 * 1024 * 1024 });
  if (!setup) return;
  const { agent, spool } = setup;

  const full = await sendMail(agent.ports[0]!, [LOCAL_RCPT], message("too-big-for-the-disk", 4 * 1024 * 1024));
  assert.equal(full.code, 452, full.text);
  assert.equal(full.lines[0], INSUFFICIENT_STORAGE);
  await agent.waitForLog(/smtpd\[\d+\]: warning: [0-9A-Z]{16}: queue file write error from unknown\[127\.0\.0\.1\]: ENOSPC: /);
  assert.deepEqual(await allQueueFiles(spool), []);
  assert.equal(agent.child.exitCode, null, "the agent exited");

  const id = queueIdOf(await sendMail(agent.ports[0]!, [LOCAL_RCPT], message("fits")));
  await agent.waitForLog(new RegExp(`${id}: removed`));
  const delivered = await maildirMessages(agent.mailboxes, "alice");
  assert.equal(delivered.size, 1);
  assert.equal(copiesOf(delivered, id).length, 1);
  assert.match([...delivered.values()][0]!, /\nSubject: fits\n/);
});

test("queueMinFree larger than the spool's free space refuses MAIL FROM with 452 4.3.1", async (t) => {
  const setup = await agentOnTmpfs(t, { queueMinFree: 4 * 1024 * 1024, messageSize: 1024 * 1024 });
  if (!setup) return;
  const { agent, spool } = setup;

  const { dialog } = await SmtpDialog.open(agent.ports[0]!);
  t.after(() => dialog.destroy());
  assert.equal((await dialog.command("EHLO client.home.example.net")).code, 250);
  const mail = await dialog.command(`MAIL FROM:<${SENDER}>`);
  assert.equal(mail.code, 452, mail.text);
  assert.equal(mail.lines[0], INSUFFICIENT_STORAGE);
  await agent.waitForLog(/NOQUEUE: reject: MAIL from unknown\[127\.0\.0\.1\]: 452 4\.3\.1 Insufficient system storage; from=<carol@home\.example\.net>/);
  // The session goes on: the client may try again later on the same connection.
  assert.equal((await dialog.command("NOOP")).code, 250);
  await dialog.quit();
  assert.deepEqual(await allQueueFiles(spool), []);
});

test("a read-only spool answers DATA with 452 4.3.1; once writable again, mail is queued and delivered", async (t) => {
  const setup = await agentOnTmpfs(t, { queueMinFree: 1, messageSize: 1024 * 1024 });
  if (!setup) return;
  const { agent, spool } = setup;

  // Root ignores permission bits, so the file system itself is made read-only.
  await run("mount", ["-o", "remount,ro", spool]);
  const { dialog } = await SmtpDialog.open(agent.ports[0]!);
  t.after(() => dialog.destroy());
  await startTransaction(dialog, [LOCAL_RCPT]);
  const refused = await dialog.data(message("read-only-spool"));
  assert.equal(refused.code, 452, refused.text);
  assert.equal(refused.lines[0], INSUFFICIENT_STORAGE);
  await agent.waitForLog(/smtpd\[\d+\]: warning: NOQUEUE: queue file write error from unknown\[127\.0\.0\.1\]: EROFS: /);
  assert.deepEqual(await allQueueFiles(spool), []);
  assert.equal(agent.child.exitCode, null, "the agent exited");

  await run("mount", ["-o", "remount,rw", spool]);
  // Same connection: the refused transaction is over and the next one starts with MAIL.
  await startTransaction(dialog, [LOCAL_RCPT], true);
  const id = queueIdOf(await dialog.data(message("writable-again")));
  await dialog.quit();
  await agent.waitForLog(new RegExp(`${id}: removed`));
  const delivered = await maildirMessages(agent.mailboxes, "alice");
  assert.equal(delivered.size, 1);
  assert.equal(copiesOf(delivered, id).length, 1);
  assert.match([...delivered.values()][0]!, /\nSubject: writable-again\n/);
});
