// Connection floods: idle connections from many addresses up to limits.clients leave room for another client
// and are dropped after limits.idleTimeout (421 4.4.2), freeing their slots; beyond the cap a newcomer gets
// 421 at once. Slow clients (slowloris: a command line trickled a byte at a time, never idle) must not hold
// the slots for longer than the idle timeout either.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { LOCAL_CONFIG, LOCAL_RCPT, message, pollUntil, queueIdOf, sendMail } from "../support/queue-durability.js";
import { SmtpDialog } from "../support/smtp-dialog.js";

const CLIENTS = 30;
const IDLE_TIMEOUT = 2;

let agent: AgentProcess;
const open = new Set<Socket>();

before(async () => {
  agent = await startAgent({ ...LOCAL_CONFIG, limits: { clients: CLIENTS, clientsPerAddress: 5, idleTimeout: IDLE_TIMEOUT, dataTimeout: 3 } });
});
after(async () => {
  for (const s of open) s.destroy();
  await agent?.cleanup();
});

/** A raw connection from loopback address `from`; resolves with the socket and what it read so far, once the greeting is in. */
async function greeted(from: string): Promise<{ socket: Socket; received: () => string }> {
  const socket = connect({ port: agent.ports[0]!, host: "127.0.0.1", localAddress: from });
  open.add(socket);
  socket.once("close", () => open.delete(socket));
  let text = "";
  socket.setEncoding("latin1");
  socket.on("data", (d: string) => (text += d));
  socket.on("error", () => {});
  await pollUntil(`${from} is greeted`, async () => /^\d{3} .*\r\n/m.test(text) || socket.destroyed, 10_000);
  return { socket, received: () => text };
}

/** `n` connections from distinct addresses in 127.7.x.y. */
function addresses(n: number, offset = 0): string[] {
  return Array.from({ length: n }, (_, i) => `127.7.${(i + offset) >> 8}.${((i + offset) & 255) || 1}`);
}

/** A full transaction from 127.0.0.1 is queued. */
async function served(token: string): Promise<void> {
  queueIdOf(await sendMail(agent.ports[0]!, [LOCAL_RCPT], message(token)));
}

test(`idle connections up to limits.clients (${CLIENTS}) leave another client served, the next is refused with 421, and idleTimeout frees them all`, async () => {
  const idle = await Promise.all(addresses(CLIENTS - 1).map(greeted));
  for (const { received } of idle) assert.match(received(), /^220 /);
  await served("while-29-idle");

  // The cap: one more idle client fills it; a newcomer is told to come back.
  idle.push(await greeted(addresses(1, CLIENTS)[0]!));
  const { dialog, greeting } = await SmtpDialog.open(agent.ports[0]!);
  assert.equal(greeting.text, "421 4.4.2 home.example.net Too many connected clients, try again in a moment");
  dialog.destroy();

  // Each idle client is told why and dropped once limits.idleTimeout has passed.
  await pollUntil("every idle client is disconnected", async () => idle.every(({ socket }) => socket.destroyed || socket.readableEnded), (IDLE_TIMEOUT + 8) * 1000);
  for (const { received } of idle) assert.match(received(), /\r\n421 4\.4\.2 Timeout - closing connection\r\n$/);
  await served("after-the-idle-flood");
  assert.equal(agent.child.exitCode, null);
});

test("slow clients trickling a command line a byte at a time do not hold every slot beyond a few idle timeouts", async () => {
  const slow = await Promise.all(addresses(CLIENTS, 100).map(greeted));
  const trickle = setInterval(() => {
    for (const { socket } of slow) if (!socket.destroyed) socket.write("a");
  }, 250);
  try {
    for (const { socket } of slow) socket.write("EHLO ");
    const started = Date.now();
    // A newcomer is refused while the slots are held; it must get in once the slow ones are cut off.
    let greeting = "";
    await pollUntil(
      "a newcomer is greeted with 220",
      async () => {
        const { dialog, greeting: g } = await SmtpDialog.open(agent.ports[0]!).catch(() => ({ dialog: null, greeting: { text: "" } }));
        dialog?.destroy();
        greeting = g.text;
        return greeting.startsWith("220 ");
      },
      4 * IDLE_TIMEOUT * 1000,
    ).catch(() => assert.fail(`${slow.filter(({ socket }) => !socket.destroyed).length} slow clients still held their slots after ${((Date.now() - started) / 1000).toFixed(1)} s; a newcomer got: ${greeting}`));
    await served("after-the-slow-flood");
  } finally {
    clearInterval(trickle);
    for (const { socket } of slow) socket.destroy();
  }
});
