// Storage faults after intake (disk-full.test.ts covers DATA and a read-only spool at intake): the spool
// fills up just as the queue manager records a deferral, or turns read-only just as a delivery succeeds.
// The message stays queued, is delivered once the fault clears, the agent keeps running, and a message
// that was already delivered is not delivered again and again while its queue file cannot be removed.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { waitForDelivery } from "../support/mx-world.js";
import { message, pollUntil, queueFiles, queueIdOf, REMOTE_RCPT, sendMail } from "../support/queue-durability.js";
import { RecordingSink } from "../support/recording-sink.js";
import { SmallDisk } from "../support/small-disk.js";

/** An agent whose spool is a 2 MB tmpfs and whose mail goes to a recording smarthost, retried every second. */
async function agentOnSmallDisk(t: TestContext): Promise<{ agent: AgentProcess; disk: SmallDisk; sink: RecordingSink } | null> {
  const disk = await SmallDisk.mount(t, "2m");
  if (!disk) return null;
  const sink = await RecordingSink.start();
  let agent: AgentProcess | undefined;
  // The agent lets go of the mount before it is released (which removes its directory too).
  t.after(async () => {
    await agent?.kill();
    await sink.close();
    await disk.release();
  });
  agent = await startAgent(
    {
      spool: disk.path,
      smarthosts: { sink: { host: "127.0.0.1", port: sink.port, tls: "none" } },
      routes: [{ match: "*", route: "smarthost:sink" }],
      queue: { minBackoff: 1, maxBackoff: 1, scanInterval: 1 },
      limits: { queueMinFree: 1 },
    },
    { dir: disk.dir },
  );
  return { agent, disk, sink };
}

test("the spool fills up as a deferral is recorded: the error is logged, the message stays in active/ and goes out once there is room", async (t) => {
  const setup = await agentOnSmallDisk(t);
  if (!setup) return;
  const { agent, disk, sink } = setup;
  // The smarthost defers the message and, at that moment, the disk is full: the deferral cannot be written.
  let full = false;
  sink.hooks = {
    verdict: () => {
      if (!full) disk.fill();
      full = true;
      return "defer";
    },
  };
  const id = queueIdOf(await sendMail(agent.ports[0]!, [REMOTE_RCPT], message("disk-full-at-deferral")));
  await agent.waitForLog(new RegExp(`qmgr\\[\\d+\\]: error: ${id}: ENOSPC: no space left on device, write; will try again in 1s`));
  assert.deepEqual(await queueFiles(disk.path, "active"), [id], "the message stays in active/");
  assert.equal(agent.child.exitCode, null, "the agent is still running");

  disk.free();
  full = false;
  sink.hooks = {};
  await waitForDelivery(agent, id, REMOTE_RCPT, "sent");
  await agent.waitForLog(new RegExp(`${id}: removed`));
  assert.equal(sink.received.filter((m) => m.queueId === id).length, 1);
});

test("the spool turns read-only as a delivery succeeds: the message is not delivered again while its queue file cannot be removed", async (t) => {
  const setup = await agentOnSmallDisk(t);
  if (!setup) return;
  const { agent, disk, sink } = setup;
  sink.hooks = {
    verdict: () => {
      if (sink.received.length === 0) disk.readOnly(true);
      return "accept";
    },
  };
  const id = queueIdOf(await sendMail(agent.ports[0]!, [REMOTE_RCPT], message("read-only-after-delivery")));
  await agent.waitForLog(new RegExp(`qmgr\\[\\d+\\]: error: ${id}: EROFS: read-only file system, unlink '[^']+'; will try again in 1s`));
  // Three retry intervals with the spool read-only.
  const mark = agent.log().length;
  await agent.waitForLog(/will try again in 1s[^]*will try again in 1s[^]*will try again in 1s/, 10_000, mark).catch(() => undefined);
  const whileReadOnly = sink.received.filter((m) => m.queueId === id).length;

  disk.readOnly(false);
  sink.hooks = {};
  await pollUntil(`${id} leaves the queue`, async () => (await queueFiles(disk.path, "active")).length === 0 && (await queueFiles(disk.path, "deferred")).length === 0);
  const copies = sink.received.filter((m) => m.queueId === id).length;
  t.diagnostic(`${whileReadOnly} copies while the spool was read-only, ${copies} in all`);
  assert.equal(agent.child.exitCode, null, "the agent is still running");
  // The agent knew the smarthost had it: one copy, or two at worst (the crash model), never one per retry.
  assert.ok(copies <= 2, `${copies} copies of a message delivered once, re-sent while its queue file could not be removed`);
});
