// The greeting pause: how long each listener holds a new connection before its 220 (greetingDelay),
// the 421 for clients that talk first, and the smtp-server internals the pause is built on.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { connect, type Socket } from "node:net";
import { resolve } from "node:path";
import { SMTPServer } from "smtp-server";
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { SmtpDialog } from "../support/smtp-dialog.js";

/**
 * Connect and measure the milliseconds from the connect call to the first reply line. Timed from
 * before the connect, so that a busy test process can only make the pause look longer, never shorter.
 */
function timeGreeting(port: number): Promise<{ ms: number; line: string }> {
  return new Promise((resolveGreeting, reject) => {
    const started = performance.now();
    const socket: Socket = connect({ port, host: "127.0.0.1" });
    let buffer = "";
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      buffer += d;
      const nl = buffer.indexOf("\r\n");
      if (nl === -1) return;
      const ms = performance.now() - started;
      socket.destroy();
      resolveGreeting({ ms, line: buffer.slice(0, nl) });
    });
    socket.once("error", reject);
    socket.once("close", () => reject(new Error(`closed before a reply; got ${JSON.stringify(buffer)}`)));
  });
}

/** Send `text` the moment the TCP connection is up, then read everything the server says until it closes. */
function talkFirst(port: number, text: string): Promise<string[]> {
  return new Promise((resolveTranscript, reject) => {
    const socket: Socket = connect({ port, host: "127.0.0.1" });
    let transcript = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`server did not close the connection; got ${JSON.stringify(transcript)}`));
    }, 10_000);
    socket.setEncoding("latin1");
    socket.once("connect", () => socket.write(text));
    socket.on("data", (d: string) => {
      transcript += d;
    });
    socket.once("error", reject);
    socket.once("close", () => {
      clearTimeout(timer);
      resolveTranscript(transcript.split("\r\n").filter((l) => l !== ""));
    });
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

describe("greeting pause per listener", () => {
  let agent: AgentProcess;
  let submission: number;
  let mx: number;
  let slowMx: number;
  before(async () => {
    agent = await startAgent({
      listeners: [
        { role: "submission", listen: "127.0.0.1:0" },
        { role: "mx", listen: "127.0.0.1:0" },
        { role: "mx", listen: "127.0.0.1:0", greetingDelay: 300 },
      ],
    });
    [submission, mx, slowMx] = agent.ports as [number, number, number];
  });
  after(() => agent.cleanup());

  test("a submission listener greets without the pause (median of 10 connections under 50 ms)", async () => {
    const times: number[] = [];
    for (let i = 0; i < 10; i++) {
      const { ms, line } = await timeGreeting(submission);
      assert.match(line, /^220 home\.example\.net /);
      times.push(ms);
    }
    assert.ok(median(times) < 50, `greeting times ${times.map((t) => t.toFixed(1)).join(", ")} ms`);
  });

  test("an mx listener holds every connection at least 100 ms before the 220", async () => {
    for (let i = 0; i < 3; i++) {
      const { ms, line } = await timeGreeting(mx);
      assert.match(line, /^220 home\.example\.net /);
      assert.ok(ms >= 95, `mx greeted after ${ms.toFixed(1)} ms`);
    }
  });

  test("greetingDelay: 300 holds the connection at least 300 ms", async () => {
    const { ms, line } = await timeGreeting(slowMx);
    assert.match(line, /^220 home\.example\.net /);
    assert.ok(ms >= 290, `greeted after ${ms.toFixed(1)} ms`);
  });

  test("the greeting names the host, ESMTP once and the program", async () => {
    const { line } = await timeGreeting(submission);
    assert.equal(line, "220 home.example.net ESMTP homerelay");
  });

  test("a client that talks before the greeting on mx gets 421 You talk too soon, no 220, and is disconnected", async () => {
    for (const port of [mx, slowMx]) {
      const transcript = await talkFirst(port, "EHLO spambot.example\r\n");
      assert.equal(transcript.length, 1, `port ${port}: ${JSON.stringify(transcript)}`);
      assert.match(transcript[0]!, /^421 .*You talk too soon/, `port ${port}`);
    }
  });

  test("on submission a client that sends EHLO at once is greeted and answered normally", async () => {
    const transcript = await talkFirst(submission, "EHLO laptop.example.org\r\nQUIT\r\n");
    assert.match(transcript[0]!, /^220 home\.example\.net /);
    assert.ok(transcript.some((l) => /^250 /.test(l)), JSON.stringify(transcript));
    assert.match(transcript.at(-1)!, /^221 /);
  });
});

describe("smtp-server internals the pause relies on", () => {
  test("the SMTPConnection of smtp-server/lib/smtp-connection.js is the class the server instantiates", async (t) => {
    const server = new SMTPServer({ logger: false, disabledCommands: ["STARTTLS", "AUTH"] });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    t.after(() => new Promise<void>((r) => server.close(() => r())));
    const { port } = server.server.address() as { port: number };
    const { dialog, greeting } = await SmtpDialog.open(port);
    try {
      assert.equal(greeting.code, 220);
      const connections = [...(server as unknown as { connections: Set<unknown> }).connections];
      assert.equal(connections.length, 1);
      assert.ok(connections[0] instanceof SMTPConnection, "the server's connection is not an instance of the SMTPConnection the hooks patch");
    } finally {
      await dialog.quit();
    }
  });

  test("smtp-server is installed at exactly the version pinned in package.json", async () => {
    const ours = JSON.parse(await readFile(resolve(import.meta.dirname, "../../package.json"), "utf8")) as { dependencies: Record<string, string> };
    const installedFile = createRequire(import.meta.url).resolve("smtp-server/package.json");
    const installed = JSON.parse(await readFile(installedFile, "utf8")) as { version: string };
    assert.match(ours.dependencies["smtp-server"]!, /^\d+\.\d+\.\d+$/, "smtp-server must be pinned to one exact version");
    assert.equal(installed.version, ours.dependencies["smtp-server"]);
  });
});
