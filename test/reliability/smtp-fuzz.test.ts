// Property-based abuse of the agent's SMTP listeners over real sockets (fast-check): random and malformed
// command streams, pipelined garbage, over-long lines, bare LF/CR, NUL bytes, binary, DATA with long and
// folded headers. Every line the agent answers is a well-formed reply, every conversation ends, the agent
// stays up and serves the next client, and its memory stays bounded. HR_FUZZ_RUNS sets the number of
// streams (bench: 10⁵ through bench/chaos.ts), HR_FUZZ_SEED replays a failure.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { mebibytes, residentBytes } from "../support/process-memory.js";
import { message, queueIdOf, REMOTE_RCPT, sendMail } from "../support/queue-durability.js";
import { SmtpDialog } from "../support/smtp-dialog.js";
import { clientAddress, clientStream, converse } from "../support/smtp-fuzz.js";

const RUNS = Number(process.env.HR_FUZZ_RUNS ?? 1200);
const SEED = process.env.HR_FUZZ_SEED === undefined ? undefined : Number(process.env.HR_FUZZ_SEED);

let agent: AgentProcess;

before(async () => {
  // Both roles, without TLS (a STARTTLS would turn the rest of a stream into a handshake); accepted mail waits in hold/.
  agent = await startAgent({
    localDomains: ["home.example.net"],
    users: { carol: { cramMd5Secret: "not used by these tests" } },
    listeners: [
      { role: "submission", listen: "127.0.0.1:0", tls: "none" },
      { role: "mx", listen: "127.0.0.1:0", tls: "none", greetingDelay: 0 },
    ],
    routes: [{ match: "*", route: "hold" }],
    limits: { commandRate: 0 },
  });
});

after(() => agent?.cleanup());

/** A full, ordinary transaction still works on the submission listener. */
async function stillServes(): Promise<void> {
  queueIdOf(await sendMail(agent.ports[0]!, [REMOTE_RCPT], message("after the abuse")));
}

describe("random client streams", () => {
  test(`${RUNS} random streams: every answer a well-formed reply, every conversation ended, the agent up and bounded`, { timeout: 600_000 }, async (t) => {
    const rssBefore = await residentBytes(agent.child.pid!);
    let runs = 0;
    let conversations = 0;
    await fc.assert(
      fc.asyncProperty(clientStream, fc.nat(1), async (stream, listener) => {
        // Failed AUTH from one address slows its replies down by design (up to 16 s): one address per stream.
        const conversation = await converse(agent.ports[listener]!, stream, clientAddress(conversations++));
        assert.ok(conversation.ended, `the agent did not close the connection within 10 s of QUIT; it said:\n${conversation.lines.join("\n")}`);
        assert.deepEqual(conversation.problems, []);
        assert.equal(agent.child.exitCode, null, "the agent exited");
        if (++runs % 250 === 0) await stillServes();
      }),
      { numRuns: RUNS, includeErrorInReport: true, ...(SEED !== undefined ? { seed: SEED } : {}) },
    );
    await stillServes();
    const grown = (await residentBytes(agent.child.pid!)) - rssBefore;
    t.diagnostic(`${RUNS} streams; the agent's RSS grew by ${mebibytes(grown)}`);
    assert.ok(grown < 128 * 1024 * 1024, `the agent's RSS grew by ${mebibytes(grown)}`);
  });
});

describe("abuse that is too big to generate at random", () => {
  test("an 8 MB line without an end in command mode gets 421 and the connection is dropped; memory stays bounded", async () => {
    const rssBefore = await residentBytes(agent.child.pid!);
    const conversation = await converse(agent.ports[1]!, [Buffer.from("EHLO big.example\r\nMAIL FROM:<"), Buffer.alloc(8 * 1024 * 1024, "x")]);
    assert.ok(conversation.ended);
    assert.deepEqual(conversation.problems, []);
    assert.equal(conversation.lines.at(-1), "421 4.4.2 Error: Command line too long");
    const grown = (await residentBytes(agent.child.pid!)) - rssBefore;
    assert.ok(grown < 64 * 1024 * 1024, `RSS grew by ${mebibytes(grown)}`);
    await stillServes();
  });

  test("a 2 MB header field in DATA gets 552 5.6.0 and nothing is queued", async () => {
    const { dialog } = await SmtpDialog.open(agent.ports[0]!);
    assert.equal((await dialog.command("EHLO big.example")).code, 250);
    assert.equal((await dialog.command("MAIL FROM:<carol@home.example.net>")).code, 250);
    assert.equal((await dialog.command(`RCPT TO:<${REMOTE_RCPT}>`)).code, 250);
    const folded = `X-Huge: ${Array.from({ length: 30_000 }, () => "y".repeat(68)).join("\r\n\t")}\r\n`;
    const reply = await dialog.data(`Subject: huge header\r\n${folded}\r\nbody\r\n`);
    assert.equal(reply.code, 552, reply.text);
    assert.equal(reply.lines[0], "5.6.0 Message header too large");
    await dialog.quit();
    await stillServes();
  });

  test("100 000 NUL bytes and a megabyte of binary in one stream: answered with replies, closed, agent up", async () => {
    const conversation = await converse(agent.ports[1]!, [Buffer.from("EHLO nul.example\r\n"), Buffer.alloc(100_000, 0), Buffer.from("\r\n"), Buffer.from(Array.from({ length: 1 << 20 }, (_, i) => (i * 7919) & 0xff))]);
    assert.ok(conversation.ended);
    assert.deepEqual(conversation.problems, []);
    assert.equal(agent.child.exitCode, null);
    await stillServes();
  });
});
