// kill -9 of the agent while deliveries to a slow smarthost are in flight: after a restart every queued
// message reaches the smarthost at least once, and duplicates are no more than the deliveries in flight.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SMTPServer, type SMTPServerSession } from "smtp-server";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { REMOTE_RCPT, SENDER, pollUntil, queueFiles, queueIdOf, sendMail } from "../support/queue-durability.js";

const MESSAGES = 30;
/** The smarthost waits this long before each 250 to the end of DATA. */
const REPLY_DELAY_MS = 200;
/** The agent is killed right after the smarthost has acknowledged this many messages. */
const KILL_AFTER = 10;

/** One message as the smarthost received it. */
interface Received {
  messageId: string;
  /** The agent's queue ID, from the Received: header it added at intake. */
  queueId: string;
}

/**
 * A smarthost that records every message it receives in full, holds all replies until `release()`,
 * then answers each end of DATA after REPLY_DELAY_MS; calls `onAck` after each 250.
 */
class SlowSmarthost {
  readonly received: Received[] = [];
  readonly acknowledged: Received[] = [];
  /** Sessions between MAIL FROM and the reply to the end of DATA: the deliveries in flight. */
  readonly open = new Set<string>();
  readonly errors: Error[] = [];
  onAck: () => void = () => {};
  private released!: () => void;
  private readonly gate = new Promise<void>((r) => (this.released = r));
  private readonly server: SMTPServer;

  constructor() {
    this.server = new SMTPServer({
      logger: false,
      disabledCommands: ["AUTH", "STARTTLS"],
      authOptional: true,
      disableReverseLookup: true,
      onMailFrom: (_address, session, callback) => {
        this.open.add(session.id);
        callback();
      },
      onData: (stream, session, callback) => void this.take(stream, session, callback),
      onClose: (session) => this.open.delete(session.id),
    });
    // The kill resets the agent's connections; any other error is kept for the test to see.
    this.server.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "ECONNRESET") this.errors.push(err);
    });
  }

  private async take(stream: NodeJS.ReadableStream, session: SMTPServerSession, callback: (err?: Error | null, message?: string) => void): Promise<void> {
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of stream) chunks.push(chunk as Buffer);
    } catch (err) {
      // The kill cut the transfer short: this copy never arrived.
      return callback(err as Error);
    }
    const text = Buffer.concat(chunks).toString("latin1");
    const message: Received = {
      messageId: /^Message-ID: (<[^>]+>)\r$/im.exec(text)?.[1] ?? "(none)",
      queueId: /\(homerelay\) with E?SMTPS?A? id ([0-9A-Z]{16})/.exec(text)?.[1] ?? "(none)",
    };
    this.received.push(message);
    await this.gate;
    await new Promise((r) => setTimeout(r, REPLY_DELAY_MS));
    this.open.delete(session.id);
    callback(null, "2.0.0 Ok: queued");
    this.acknowledged.push(message);
    this.onAck();
  }

  release(): void {
    this.released();
  }

  listen(): Promise<number> {
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => resolve((this.server.server.address() as { port: number }).port)));
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function messageWithId(n: number): { messageId: string; text: string } {
  const messageId = `<crash-${n}.${Date.now()}@home.example.net>`;
  return { messageId, text: `From: <${SENDER}>\r\nTo: <${REMOTE_RCPT}>\r\nSubject: crash test ${n}\r\nMessage-ID: ${messageId}\r\n\r\nmessage ${n}\r\n` };
}

test("kill -9 while deliveries to the smarthost are in flight loses no message; duplicates stay within the deliveries in flight", async (t) => {
  const sink = new SlowSmarthost();
  const port = await sink.listen();
  let agent: AgentProcess = await startAgent({
    smarthosts: { sink: { host: "127.0.0.1", port, tls: "none" } },
    routes: [{ match: "*", route: "smarthost:sink" }],
    queue: { minBackoff: 1, scanInterval: 1 },
    delivery: { destinationConcurrency: 4 },
  });
  t.after(async () => {
    await agent.cleanup();
    await sink.close();
  });

  const killed = new Promise<{ acknowledged: Received[]; open: number }>((resolve) => {
    sink.onAck = () => {
      if (sink.acknowledged.length !== KILL_AFTER) return;
      agent.child.kill("SIGKILL");
      resolve({ acknowledged: [...sink.acknowledged], open: sink.open.size });
    };
  });

  const queued = new Map<string, string>();
  for (let n = 0; n < MESSAGES; n++) {
    const { messageId, text } = messageWithId(n);
    queued.set(messageId, queueIdOf(await sendMail(agent.ports[0]!, [REMOTE_RCPT], text)));
  }
  sink.release();
  const atKill = await killed;
  await agent.kill();

  const stillQueued = new Set([...(await queueFiles(agent.spool, "active")), ...(await queueFiles(agent.spool, "deferred"))]);
  // Acknowledged by the smarthost, but the agent died before it removed the queue file: these go again.
  const ackedNotRemoved = atKill.acknowledged.filter((m) => stillQueued.has(m.queueId)).length;
  const inFlight = atKill.open + ackedNotRemoved;
  t.diagnostic(`at kill -9: ${atKill.acknowledged.length} acknowledged by the smarthost, ${atKill.open} transactions open, ${ackedNotRemoved} acknowledged but still queued, ${stillQueued.size} in the queue`);
  assert.ok(stillQueued.size > 0 && stillQueued.size < MESSAGES, `some but not all messages are still queued at the kill (${stillQueued.size})`);

  agent = await agent.restart();
  await pollUntil(
    "the queue is empty after the restart",
    async () => {
      const left = [...(await queueFiles(agent.spool, "incoming")), ...(await queueFiles(agent.spool, "active")), ...(await queueFiles(agent.spool, "deferred"))];
      return left.length === 0;
    },
    30_000,
  );

  const copies = new Map<string, number>();
  for (const m of sink.received) copies.set(m.messageId, (copies.get(m.messageId) ?? 0) + 1);
  const lost = [...queued.keys()].filter((id) => !copies.has(id));
  assert.deepEqual(lost, [], "every acknowledged message reached the smarthost");
  assert.deepEqual(
    [...copies.keys()].filter((id) => !queued.has(id)),
    [],
    "the smarthost received only the test's messages (no notices)",
  );
  for (const m of sink.received) assert.equal(m.queueId, queued.get(m.messageId), `${m.messageId} carries the queue ID it was queued under`);
  const duplicates = sink.received.length - copies.size;
  t.diagnostic(`${sink.received.length} deliveries for ${MESSAGES} messages: ${duplicates} duplicate(s), ${inFlight} in flight at the kill`);
  assert.ok(duplicates <= inFlight, `${duplicates} duplicates, more than the ${inFlight} deliveries in flight at the kill`);
  assert.doesNotMatch(agent.log(), /status=bounced/);
  assert.deepEqual(sink.errors, []);
});
