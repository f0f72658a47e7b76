// Faults on the agent → cloud path: the cloud answering 500, 429 with Retry-After, never answering, cutting
// the connection, or answering with bytes that are no HTTP (a front before the real cloud app injects each);
// and `homerelay-cloud serve` killed in the middle of its onward relay and restarted. Each: the deferral's
// log line, the message kept in deferred/, and delivered through the real cloud once the fault clears.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { pkcs8PemFromSeed } from "../../shared/protocol/ed25519.js";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { makeKey } from "../support/cloud-client.js";
import { CloudProcess } from "../support/cloud-process.js";
import { onwardTo, startCloudToSink, type CloudToSink } from "../support/cloud-to-sink.js";
import { FaultyCloud, type CloudFault } from "../support/faulty-cloud.js";
import { waitForDelivery, waitForQueueFile, type DeliveryLine } from "../support/mx-world.js";
import { message, queueIdOf, sendMail } from "../support/queue-durability.js";
import { flushQueue } from "../support/queue-flush.js";
import { RecordingSink } from "../support/recording-sink.js";

const RCPT = "bob@example.org";
const KEY = makeKey("home-1");
const KEY_FILES = { "home-1.key": pkcs8PemFromSeed(KEY.seed) };
const CLOUD_KEYS = [{ id: KEY.id, publicKey: KEY.publicKey, senders: ["*@home.example.net"] }];

/** An agent whose only route is the cloud at `url`; retries come only from flushes. */
function cloudAgent(url: string): Promise<AgentProcess> {
  return startAgent(
    { cloud: { url, keyId: KEY.id, keyFile: "home-1.key", timeout: 2 }, routes: [{ match: "*", route: "cloud" }], queue: { minBackoff: 300, scanInterval: 300 } },
    { files: KEY_FILES },
  );
}

/** Submit a message with `token` as its subject; returns the queue ID and the log offset before it. */
async function submitted(agent: AgentProcess, token: string): Promise<{ id: string; mark: number }> {
  const mark = agent.log().length;
  return { id: queueIdOf(await sendMail(agent.ports[0]!, [RCPT], message(token))), mark };
}

describe("a cloud that fails", () => {
  let front: FaultyCloud;
  let far: CloudToSink;
  let sink: RecordingSink;
  let agent: AgentProcess;
  let relay: string;

  before(async () => {
    front = await FaultyCloud.start();
    // The agent signs for the front's address; the real cloud behind it serves that authority.
    far = await startCloudToSink({ keys: CLOUD_KEYS, authority: `127.0.0.1:${front.port}` });
    sink = far.sink;
    front.target = far.cloud.port;
    agent = await cloudAgent(front.url);
    relay = `cloud[${front.url}]`;
  });

  after(async () => {
    await agent?.cleanup();
    await front?.close();
    await far?.close();
  });

  afterEach(() => {
    front.fault = "none";
    front.hangUp();
  });

  /** Submit while the cloud fails with `fault`; resolves with the deferral line. */
  async function deferredBy(fault: CloudFault, token: string): Promise<{ id: string; mark: number; deferred: DeliveryLine }> {
    front.fault = fault;
    const { id, mark } = await submitted(agent, token);
    const deferred = await waitForDelivery(agent, id, RCPT, "deferred", mark);
    assert.equal(deferred.relay, relay);
    await waitForQueueFile(agent, "deferred", id);
    return { id, mark, deferred };
  }

  /** The fault clears; a flush delivers the message through the real cloud, once; the agent is up. */
  async function deliveredAfterFlush(id: string, mark: number): Promise<void> {
    front.fault = "none";
    assert.match(await flushQueue(agent, id), new RegExp(`${id}: queued for delivery`));
    const sent = await waitForDelivery(agent, id, RCPT, "sent", mark);
    assert.equal(sent.relay, relay);
    assert.equal(sink.received.filter((m) => m.queueId === id).length, 1, `one copy of ${id} at the cloud's upstream`);
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`), "nobody was bounced");
    assert.equal(agent.child.exitCode, null, "the agent is still running");
  }

  test("500 defers with 4.3.0 and the cloud's problem", async () => {
    const { id, mark, deferred } = await deferredBy("500", "cloud-500");
    assert.equal(deferred.dsn, "4.3.0");
    assert.equal(deferred.detail, "cloud answered 500 The relay failed unexpectedly: the relay failed; try again later [https://homerelay.dev/problems/internal-error]");
    await deliveredAfterFlush(id, mark);
  });

  test("429 with Retry-After defers with 4.3.2 and shows the Retry-After", async () => {
    const { id, mark, deferred } = await deferredBy("429", "cloud-429");
    assert.equal(deferred.dsn, "4.3.2");
    assert.equal(deferred.detail, "cloud is busy (429 Too many requests for this key: key home-1 may send 600 requests per minute [https://homerelay.dev/problems/rate-limited]; Retry-After: 120)");
    await deliveredAfterFlush(id, mark);
  });

  test("a cloud that never answers is given up after cloud.timeout with 4.4.2", async () => {
    const { id, mark, deferred } = await deferredBy("hang", "cloud-hang");
    assert.equal(deferred.dsn, "4.4.2");
    assert.equal(deferred.detail, `cloud at ${front.url} did not answer /v1/messages within 2 s`);
    await deliveredAfterFlush(id, mark);
  });

  test("a connection the cloud closes without an answer defers with 4.4.1", async () => {
    const { id, mark, deferred } = await deferredBy("close", "cloud-close");
    assert.equal(deferred.dsn, "4.4.1");
    assert.match(deferred.detail, new RegExp(`^cannot reach the cloud at ${front.url.replace(/[.]/g, "\\.")}: `));
    await deliveredAfterFlush(id, mark);
  });

  test("an answer that is no HTTP defers with 4.4.1", async () => {
    const { id, mark, deferred } = await deferredBy("garbage", "cloud-garbage");
    assert.equal(deferred.dsn, "4.4.1");
    assert.match(deferred.detail, new RegExp(`^cannot reach the cloud at ${front.url.replace(/[.]/g, "\\.")}: `));
    await deliveredAfterFlush(id, mark);
  });
});

describe("homerelay-cloud serve killed during its onward relay", () => {
  test("after the restart the agent's retry is relayed, not refused as still in progress", async (t) => {
    const sink = await RecordingSink.start();
    const cloud = await CloudProcess.start({ keys: CLOUD_KEYS, onward: onwardTo(sink) });
    const agent = await cloudAgent(cloud.url);
    t.after(async () => {
      await agent.cleanup();
      await cloud.cleanup();
      await sink.close();
    });

    // The cloud dies the moment its upstream has the whole message, before it can answer the agent.
    let killed = false;
    sink.hooks = {
      verdict: () => {
        if (!killed) cloud.signal();
        killed = true;
        return "accept";
      },
    };
    const { id, mark } = await submitted(agent, "cloud-killed");
    const deferred = await waitForDelivery(agent, id, RCPT, "deferred", mark);
    assert.equal(deferred.dsn, "4.4.1");
    await waitForQueueFile(agent, "deferred", id);

    await cloud.restart();
    const retryMark = agent.log().length;
    await flushQueue(agent, id);
    const retry = await agent.waitForLog(new RegExp(`${id}: to=<${RCPT}>, .*status=(\\w+) \\((.*)\\)$`, "m"), 10_000, retryMark);
    // No relay can still be running in a process that was restarted: the retry must go out (a duplicate is allowed).
    assert.equal(retry[1], "sent", `the retry after the cloud's restart: ${retry[0]}`);
    const copies = sink.received.filter((m) => m.queueId === id).length;
    t.diagnostic(`${copies} copies at the upstream (the first from before the kill)`);
    assert.ok(copies >= 1 && copies <= 2);
  });
});
