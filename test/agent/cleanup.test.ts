// cleanup: the content filter between DATA and the queue file — our Received: prepended, Date:/Message-ID:
// completed for submission, hop-count loops, line length and header size, whatever the chunking.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { Cleanup, type CleanupFault, type CleanupOptions } from "../../agent/cleanup/cleanup.js";

const RECEIVED = [
  "Received: from laptop.example.org (unknown [192.0.2.7])",
  "\tby home.example.net (homerelay) with ESMTP id 4Xq2ZkTJ0aB7",
  "\tfor <friend@remote.example>; Mon, 1 Jan 2024 12:00:00 +0000",
].join("\r\n");
const COMPLETE = { messageId: "<4Xq2ZkTJ0aB7@home.example.net>", date: "Mon, 1 Jan 2024 12:00:00 +0000" };
const ADDED = `Date: ${COMPLETE.date}\r\nMessage-ID: ${COMPLETE.messageId}\r\n`;

interface Cleaned {
  output: Buffer;
  fault: CleanupFault | null;
  size: number;
}

/** Run `chunks` through a Cleanup, one write per chunk, and collect what it lets into the queue. */
async function clean(chunks: readonly (string | Buffer)[], options: Partial<CleanupOptions> = {}): Promise<Cleaned> {
  const cleanup = new Cleanup({ received: RECEIVED, complete: null, hopLimit: 50, lineLength: 998, headerSize: 64 * 1024, ...options });
  const out: Buffer[] = [];
  cleanup.on("data", (d: Buffer) => out.push(d));
  const ended = once(cleanup, "end");
  for (const chunk of chunks) cleanup.write(typeof chunk === "string" ? Buffer.from(chunk, "latin1") : chunk);
  cleanup.end();
  await ended;
  return { output: Buffer.concat(out), fault: cleanup.fault, size: cleanup.size };
}

/** Assert that the message was accepted and queued as exactly `expected`. */
function assertQueued(result: Cleaned, expected: string, what = ""): void {
  assert.equal(result.fault, null, `unexpected fault ${result.fault} ${what}`);
  assert.equal(result.output.toString("latin1"), expected, what);
  assert.equal(result.size, Buffer.byteLength(expected, "latin1"), `size ${what}`);
}

/** Assert that the message must be refused with `fault` (smtpd then removes what was written of it). */
function assertRefused(result: Cleaned, fault: CleanupFault, what = ""): void {
  assert.equal(result.fault, fault, what);
}

/** Every way to cut `text` into two chunks, then into three. */
function* splits(text: string): Generator<string[]> {
  for (let i = 0; i <= text.length; i++) yield [text.slice(0, i), text.slice(i)];
  for (let i = 1; i < text.length; i++) {
    for (let j = i + 1; j < text.length; j++) yield [text.slice(0, i), text.slice(i, j), text.slice(j)];
  }
}

describe("Received: header", () => {
  test("is prepended and the message follows byte for byte", async () => {
    const message = [
      "Received: from mail.remote.example by relay.remote.example; Sun, 31 Dec 2023 23:59:59 +0000",
      "From: Friend <friend@remote.example>",
      "Subject: =?utf-8?q?caf=C3=A9?=",
      "X-Folded: first part",
      " \tsecond part",
      "",
      "Body line with 8-bit \xe9 and a trailing space ",
      ".leading dot kept as given",
      "",
      "",
    ].join("\r\n");
    assertQueued(await clean([message]), `${RECEIVED}\r\n${message}`);
  });
});

describe("Date: and Message-ID: completion", () => {
  test("a submission message without them gets both at the end of its header", async () => {
    const result = await clean(["From: alice@home.example.net\r\nSubject: hi\r\n\r\nbody\r\n"], { complete: COMPLETE });
    assertQueued(result, `${RECEIVED}\r\nFrom: alice@home.example.net\r\nSubject: hi\r\n${ADDED}\r\nbody\r\n`);
  });

  test("present ones are kept and not doubled, whatever the case of their names", async () => {
    const message = "DATE: Sun, 31 Dec 2023 10:00:00 +0100\r\nmessage-id: <own@laptop.example.org>\r\nSubject: hi\r\n\r\nbody\r\n";
    assertQueued(await clean([message], { complete: COMPLETE }), `${RECEIVED}\r\n${message}`);
  });

  test("only the missing one is added", async () => {
    const noId = "Date: Sun, 31 Dec 2023 10:00:00 +0100\r\nSubject: hi\r\n\r\nbody\r\n";
    assertQueued(
      await clean([noId], { complete: COMPLETE }),
      `${RECEIVED}\r\nDate: Sun, 31 Dec 2023 10:00:00 +0100\r\nSubject: hi\r\nMessage-ID: ${COMPLETE.messageId}\r\n\r\nbody\r\n`,
    );
    const noDate = "Message-Id: <own@laptop.example.org>\r\nSubject: hi\r\n\r\nbody\r\n";
    assertQueued(
      await clean([noDate], { complete: COMPLETE }),
      `${RECEIVED}\r\nMessage-Id: <own@laptop.example.org>\r\nSubject: hi\r\nDate: ${COMPLETE.date}\r\n\r\nbody\r\n`,
    );
  });

  test("mail from other servers (complete not set) is left without them", async () => {
    const message = "From: friend@remote.example\r\nSubject: hi\r\n\r\nbody\r\n";
    assertQueued(await clean([message]), `${RECEIVED}\r\n${message}`);
  });
});

describe("hop count", () => {
  const hops = (n: number) =>
    Array.from({ length: n }, (_, i) => `${i % 2 ? "RECEIVED" : "Received"}: from hop${i}.example by hop${i + 1}.example; Mon, 1 Jan 2024 11:00:0${i} +0000\r\n`).join("");

  test("one Received: below the limit is accepted (the queued copy then has exactly the limit)", async () => {
    const message = `${hops(2)}Subject: loop?\r\n\r\nbody\r\n`;
    assertQueued(await clean([message], { hopLimit: 3 }), `${RECEIVED}\r\n${message}`);
  });

  test("as many Received: headers as the limit is a mail loop", async () => {
    assertRefused(await clean([`${hops(3)}Subject: loop\r\n\r\nbody\r\n`], { hopLimit: 3 }), "loop");
  });

  test("is detected when the Received: headers arrive one byte at a time", async () => {
    assertRefused(await clean([...`${hops(3)}Subject: loop\r\n\r\nbody\r\n`], { hopLimit: 3 }), "loop");
  });

  test("Received: lines in the body (a forwarded message) do not count", async () => {
    const message = `${hops(2)}Subject: fwd\r\n\r\n${hops(5)}`;
    assertQueued(await clean([message], { hopLimit: 3 }), `${RECEIVED}\r\n${message}`);
  });
});

describe("line length", () => {
  // lineLength 10: "0123456789" is the longest line allowed, CRLF not counted.
  const options = { lineLength: 10 };

  test("a line of exactly the limit passes when its CRLF is split across chunks", async () => {
    const chunks = ["Subject: x\r\n\r\n0123456789\r", "\n0123456789\r\n"];
    assertQueued(await clean(chunks, options), `${RECEIVED}\r\n${chunks.join("")}`);
  });

  test("a line of exactly the limit passes when it ends a chunk and its CRLF starts the next", async () => {
    const chunks = ["Subject: x\r\n\r\n0123456789", "\r\nshort\r\n"];
    assertQueued(await clean(chunks, options), `${RECEIVED}\r\n${chunks.join("")}`);
  });

  test("one octet over the limit is refused, with the CR at the end of a chunk", async () => {
    assertRefused(await clean(["Subject: x\r\n\r\n01234567890\r", "\n"], options), "line-too-long");
  });

  test("one octet over the limit is refused, with the CRLF in the next chunk", async () => {
    assertRefused(await clean(["Subject: x\r\n\r\n01234567890", "\r\n"], options), "line-too-long");
  });

  test("one octet over the limit is refused when the line is spread over many chunks", async () => {
    assertRefused(await clean(["Subject: x\r\n\r\n0123", "4567", "890", "\r", "\n"], options), "line-too-long");
  });

  test("a header line counts as much as a body line", async () => {
    assertRefused(await clean(["Subject: xyz\r\n\r\nbody\r\n"], options), "line-too-long");
  });

  test("a line ending in a bare LF is measured without the LF", async () => {
    assertQueued(await clean(["S: x\r\n\r\n0123456789\n"], options), `${RECEIVED}\r\nS: x\r\n\r\n0123456789\n`);
    assertRefused(await clean(["S: x\r\n\r\n0123456789A\n"], options), "line-too-long");
  });
});

describe("header block split across chunks", () => {
  test("every cut of a small message into two or three chunks gives the same queued bytes", async () => {
    const message = "Received: from a.example by b.example; Mon, 1 Jan 2024 11:00:00 +0000\r\nSubject: split\r\n here\r\n\r\nbody\r\n\r\nend\r\n";
    const expected = `${RECEIVED}\r\nReceived: from a.example by b.example; Mon, 1 Jan 2024 11:00:00 +0000\r\nSubject: split\r\n here\r\n${ADDED}\r\nbody\r\n\r\nend\r\n`;
    let cuts = 0;
    for (const chunks of splits(message)) {
      assertQueued(await clean(chunks, { complete: COMPLETE }), expected, `for chunks ${JSON.stringify(chunks)}`);
      cuts++;
    }
    assert.ok(cuts > 1000, `only ${cuts} cuts tried`);
  });

  test("one byte per chunk gives the same queued bytes", async () => {
    const message = "Subject: bytewise\r\n\r\nbody\r\n";
    assertQueued(await clean([...message], { complete: COMPLETE }), `${RECEIVED}\r\nSubject: bytewise\r\n${ADDED}\r\nbody\r\n`);
  });
});

describe("unusual shapes", () => {
  test("a message with a header and no body gets its header block closed by the blank line", async () => {
    const message = "From: alice@home.example.net\r\nSubject: header only\r\n";
    for (const chunks of splits(message)) {
      assertQueued(await clean(chunks), `${RECEIVED}\r\n${message}\r\n`, `for chunks ${JSON.stringify(chunks)}`);
    }
  });

  test("an empty message becomes our header and the blank line", async () => {
    assertQueued(await clean([]), `${RECEIVED}\r\n\r\n`);
    assertQueued(await clean([], { complete: COMPLETE }), `${RECEIVED}\r\n${ADDED}\r\n`);
  });

  test("a message that starts with a blank line has no header: what follows is body, even if it looks like a header", async () => {
    const message = "\r\nSubject: this is body text\r\nsecond line\r\n";
    for (const chunks of splits(message)) {
      assertQueued(await clean(chunks, { complete: COMPLETE }), `${RECEIVED}\r\n${ADDED}${message}`, `for chunks ${JSON.stringify(chunks)}`);
    }
  });
});

describe("header size", () => {
  const header = (bytes: number) => `X-Filler: ${"h".repeat(bytes - "X-Filler: \r\n".length)}\r\n`;

  test("a header block under the limit is accepted", async () => {
    const message = `${header(90)}\r\nbody\r\n`;
    assertQueued(await clean([message], { headerSize: 100 }), `${RECEIVED}\r\n${message}`);
  });

  test("a header block that grows past the limit without ending is refused", async () => {
    const chunks = Array.from({ length: 10 }, () => header(30));
    assertRefused(await clean(chunks, { headerSize: 100 }), "header-too-large");
  });

  test("a header block past the limit is refused however it is chunked", async () => {
    const message = `${header(300)}\r\nbody\r\n`;
    assertRefused(await clean([...message], { headerSize: 100 }), "header-too-large", "one byte per chunk");
    assertRefused(await clean([message], { headerSize: 100 }), "header-too-large", "in one chunk");
  });
});
