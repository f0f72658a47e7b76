// Faults on the far side of direct MX delivery: DNS that never answers or fails for the MX host's address,
// a tarpit that trickles one byte a second (in the greeting and in the reply to the end of DATA), garbage
// instead of a greeting, a flood of bytes without a line end, garbage replies, and an MX that takes the
// whole message and hangs up without a reply, and one that refuses RSET (or hangs up on it) between two
// transactions of one message. Each: the deferral's log line, the message kept in deferred/,
// delivered exactly once by `homerelay queue flush` once the fault clears, the agent still up, memory bounded.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { startDnsServer, type DnsServer, type DnsZone } from "../support/dns-server.js";
import { FaultyMx, type MxFault } from "../support/faulty-mx.js";
import { escapeRegExp, submit, waitForDelivery, waitForQueueFile, type DeliveryLine } from "../support/mx-world.js";
import { mebibytes, residentBytes } from "../support/process-memory.js";
import { message, queueIdOf, SENDER, sendMail } from "../support/queue-durability.js";
import { flushQueue } from "../support/queue-flush.js";

const RCPT = "bob@faulty.example";
/** The agent's delivery.commandTimeout: a tarpit must be given up within a few of these. */
const COMMAND_TIMEOUT = 2;

let mx: FaultyMx;
let dns: DnsServer;
let agent: AgentProcess;
let where: string;

const zone = (extra: DnsZone = {}): DnsZone => ({
  "faulty.example": { MX: [{ exchange: "mx.faulty.example", preference: 10 }] },
  "mx.faulty.example": { A: ["127.0.0.1"] },
  ...extra,
});

/** An agent delivering to the faulty MX; retries only when the test flushes: no backoff or probe runs within a test. */
const startMxAgent = () =>
  startAgent({
    dns: { servers: [dns.server], timeout: 1 },
    delivery: { mxPort: mx.port, connectTimeout: 2, commandTimeout: COMMAND_TIMEOUT },
    queue: { minBackoff: 300, scanInterval: 300 },
  });

before(async () => {
  mx = await FaultyMx.start();
  dns = await startDnsServer(zone());
  agent = await startMxAgent();
  where = `mx.faulty.example[127.0.0.1]`;
});

after(async () => {
  await agent?.cleanup();
  await mx?.close();
  await dns?.close();
});

afterEach(() => {
  mx.fault = "none";
  mx.hangUp();
  dns.set(zone());
});

/** Submit a message to bob@faulty.example with `token` in it; returns its queue ID and the log offset before it. */
async function submitted(token: string): Promise<{ id: string; mark: number }> {
  const mark = agent.log().length;
  const id = queueIdOf(await sendMail(agent.ports[0]!, [RCPT], message(token)));
  return { id, mark };
}

/** The message waits in deferred/; the fault clears; a flush delivers it, exactly once, and the agent is still up. */
async function deliveredAfterFlush(id: string, token: string, mark: number, clear: () => void): Promise<DeliveryLine> {
  await waitForQueueFile(agent, "deferred", id);
  clear();
  assert.match(await flushQueue(agent, id), new RegExp(`${id}: queued for delivery`));
  const sent = await waitForDelivery(agent, id, RCPT, "sent", mark);
  assert.equal(sent.relay, `${where}:${mx.port}`);
  assert.equal(mx.messages.filter((m) => m.includes(`Subject: ${token}\r\n`)).length, 1, `one copy of ${token} at the MX`);
  assert.equal(agent.child.exitCode, null, "the agent is still running");
  return sent;
}

describe("DNS", () => {
  test("an MX lookup that is never answered (timeout) defers with 4.4.3; once DNS answers, the flush delivers", async () => {
    dns.set(zone({ "faulty.example": { drop: true } }));
    const { id, mark } = await submitted("dns-timeout");
    const deferred = await waitForDelivery(agent, id, RCPT, "deferred", mark);
    assert.equal(deferred.relay, "none");
    assert.equal(deferred.dsn, "4.4.3");
    assert.equal(deferred.detail, "Host or domain name not found. Name service error for name=faulty.example type=MX: Host not found, try again");
    await deliveredAfterFlush(id, "dns-timeout", mark, () => dns.set(zone()));
  });

  test("SERVFAIL for the MX host's address defers with 4.4.3 naming the A lookup; once it answers, the flush delivers", async () => {
    dns.set(zone({ "mx.faulty.example": { servfail: true } }));
    const { id, mark } = await submitted("a-servfail");
    const deferred = await waitForDelivery(agent, id, RCPT, "deferred", mark);
    assert.equal(deferred.dsn, "4.4.3");
    assert.equal(deferred.detail, "Host or domain name not found. Name service error for name=mx.faulty.example type=A: Host not found, try again");
    await deliveredAfterFlush(id, "a-servfail", mark, () => dns.set(zone()));
  });
});

/** Submit with the MX in `fault`; resolve with the deferral line (within `ms`). */
async function deferredBy(fault: MxFault, token: string, ms = 15_000): Promise<{ id: string; mark: number; deferred: DeliveryLine }> {
  mx.fault = fault;
  const { id, mark } = await submitted(token);
  const deferred = await waitForDelivery(agent, id, RCPT, "deferred", mark, ms);
  return { id, mark, deferred };
}

describe("a misbehaving MX", () => {
  test("a tarpit greeting (one byte a second, never ending) is given up after the command timeout, as a conversation timeout", async () => {
    const { id, mark, deferred } = await deferredBy("tarpit-greeting", "tarpit-greeting");
    assert.equal(deferred.relay, "none");
    // The host answered the TCP connection: the greeting timed out, the network is not down (Postfix's words).
    assert.equal(deferred.detail, `conversation with ${where} timed out while receiving the initial server greeting`);
    assert.equal(deferred.dsn, "4.4.2");
    assert.doesNotMatch(agent.log().slice(mark), /no network: nothing could be reached/);
    await deliveredAfterFlush(id, "tarpit-greeting", mark, () => (mx.fault = "none"));
  });

  test("a tarpit reply to the end of DATA (one byte a second, never ending) is given up within a few command timeouts", async () => {
    const started = Date.now();
    const { id, mark, deferred } = await deferredBy("tarpit-data-reply", "tarpit-data", 6 * COMMAND_TIMEOUT * 1000);
    assert.equal(deferred.dsn, "4.4.2");
    // Postfix: "conversation with … timed out while sending end of data -- message may be sent more than once".
    assert.match(deferred.detail, new RegExp(`^conversation with ${escapeRegExp(where)} timed out while `));
    assert.ok(Date.now() - started < 6 * COMMAND_TIMEOUT * 1000);
    // The MX may have kept the message it never acknowledged; the retry goes to the same MX, now healthy.
    await deliveredAfterFlush(id, "tarpit-data", mark, () => (mx.fault = "none"));
  });

  test("garbage instead of a greeting defers with a log line of bounded length", async () => {
    const { id, mark, deferred } = await deferredBy("garbage-greeting", "garbage-greeting");
    assert.equal(deferred.relay, "none");
    assert.match(deferred.dsn, /^4\.\d\.\d+$/);
    assert.match(deferred.detail, /Invalid greeting/);
    // A remote server's bytes must not blow up the log line (nor the status log and DSNs that quote it).
    assert.ok(deferred.line.length <= 1000, `the deferral line has ${deferred.line.length} characters`);
    await deliveredAfterFlush(id, "garbage-greeting", mark, () => (mx.fault = "none"));
  });

  test("a flood of bytes without a line end is cut off at the response size limit, and the agent's memory stays bounded", async () => {
    const before = await residentBytes(agent.child.pid!);
    let last = { id: "", mark: 0 };
    for (let i = 0; i < 5; i++) {
      const { id, mark, deferred } = await deferredBy("garbage-flood", `garbage-flood-${i}`);
      assert.equal(deferred.dsn, "4.4.1");
      assert.equal(deferred.detail, `connect to ${where}:${mx.port}: Server response exceeds maximum allowed size`);
      last = { id, mark };
    }
    const grown = (await residentBytes(agent.child.pid!)) - before;
    assert.ok(grown < 64 * 1024 * 1024, `the agent's RSS grew by ${mebibytes(grown)} over five floods`);
    await deliveredAfterFlush(last.id, "garbage-flood-4", last.mark, () => (mx.fault = "none"));
  });

  test("replies that are no SMTP replies defer the message and deliver nothing", async () => {
    const { id, mark, deferred } = await deferredBy("garbage-reply", "garbage-reply");
    assert.match(deferred.dsn, /^4\.\d\.\d+$/);
    assert.match(deferred.detail, new RegExp(`^host ${escapeRegExp(where)} said: `));
    await deliveredAfterFlush(id, "garbage-reply", mark, () => (mx.fault = "none"));
  });

  test("an MX that takes the whole message and hangs up without a reply: deferred as lost connection, never counted as sent", async () => {
    const { id, mark, deferred } = await deferredBy("drop-after-data", "drop-after-data");
    assert.equal(deferred.dsn, "4.4.2");
    assert.equal(deferred.detail, `lost connection with ${where} while sending message (Connection closed unexpectedly)`);
    await deliveredAfterFlush(id, "drop-after-data", mark, () => (mx.fault = "none"));
  });
});

// An agent of their own: the other tests leave deferred messages, whose retry (when the agent finds the
// network back) would flush these tests' message before the test does.
describe("a session reset between transactions", () => {
  let agent: AgentProcess;
  before(async () => {
    agent = await startMxAgent();
  });
  after(() => agent?.cleanup());

  test("an MX that refuses RSET between transactions of one message: the next recipients are deferred with its reply, not bounced", async () => {
    mx.fault = "refused-reset";
    const mark = agent.log().length;
    // Different NOTIFY parameters: three transactions on one session, later@'s first, cut short at RCPT;
    // the RSET before bob's is refused, and dave's is never tried on the broken session.
    const DAVE = "dave@faulty.example";
    const id = await submit(agent, SENDER, [{ address: "later@faulty.example", notify: "NEVER" }, RCPT, { address: DAVE, notify: "SUCCESS,FAILURE" }], "refused-reset");
    const later = await waitForDelivery(agent, id, "later@faulty.example", "deferred", mark);
    assert.equal(later.dsn, "4.2.0");
    assert.equal(later.detail, `host ${where} said: 450 4.2.0 <later>: Recipient address rejected: try again later (in reply to RCPT TO command)`);
    assert.equal(later.relay, `${where}:${mx.port}`, "each recipient keeps its own reason, and the host that gave it");
    const bob = await waitForDelivery(agent, id, RCPT, "deferred", mark);
    assert.equal(bob.dsn, "4.5.2", "a 5xx reply to RSET defers, with the class turned to 4");
    assert.equal(bob.detail, `host ${where} said: 502 5.5.2 Error: command not recognized (in reply to RSET command)`);
    assert.equal(bob.relay, `${where}:${mx.port}`);
    const dave = await waitForDelivery(agent, id, DAVE, "deferred", mark);
    assert.deepEqual([dave.dsn, dave.relay, dave.detail], [bob.dsn, bob.relay, bob.detail], "what broke the session is the reason of the transactions after it");
    await waitForQueueFile(agent, "deferred", id);
    const copies = () => mx.messages.filter((m) => m.includes("Subject: refused-reset\r\n")).length;
    assert.equal(copies(), 0);
    // A connection keeps the fault it was opened with: an idle session opened under it must not carry the retry.
    mx.fault = "none";
    mx.hangUp();
    assert.match(await flushQueue(agent, id), new RegExp(`${id}: queued for delivery`));
    await waitForDelivery(agent, id, "later@faulty.example", "sent", mark);
    await waitForDelivery(agent, id, RCPT, "sent", mark);
    await waitForDelivery(agent, id, DAVE, "sent", mark);
    assert.equal(copies(), 3, "one copy per transaction");
  });

  test("an MX that hangs up on RSET between transactions: the next recipient is deferred as a lost connection at once, not after the command timeout", async () => {
    mx.fault = "drop-on-reset";
    const mark = agent.log().length;
    const id = await submit(agent, SENDER, [{ address: "later@faulty.example", notify: "NEVER" }, RCPT], "drop-on-reset");
    const bob = await waitForDelivery(agent, id, RCPT, "deferred", mark);
    assert.equal(bob.dsn, "4.4.2");
    assert.equal(bob.detail, `lost connection with ${where} while resetting the session (Connection closed unexpectedly)`);
    assert.ok(Number(bob.delay) < COMMAND_TIMEOUT, `deferred after ${bob.delay} s: the hang-up was taken for an answer`);
    await waitForQueueFile(agent, "deferred", id);
    mx.fault = "none";
    mx.hangUp();
    assert.match(await flushQueue(agent, id), new RegExp(`${id}: queued for delivery`));
    await waitForDelivery(agent, id, "later@faulty.example", "sent", mark);
    await waitForDelivery(agent, id, RCPT, "sent", mark);
  });
});
