// `homerelay classify` run as an administrator would: JSON lines in, one JSON answer per line out,
// `--text` for one plain reply, bad lines answered with an error line (the stream goes on) and exit 65.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { classifyReply } from "../../agent/reroute/reply-classifier.js";
import { CLI } from "../support/agent-process.js";

/** sysexits(3) EX_DATAERR. */
const EX_DATAERR = 65;

/** Run `homerelay classify ARGS` with `input` on standard input; its output lines parsed as JSON. */
function classify(input: string, ...args: string[]): { status: number | null; answers: unknown[]; stderr: string } {
  const run = spawnSync(process.execPath, [CLI, "classify", ...args], { input, encoding: "utf8", timeout: 15_000 });
  assert.ok(run.stdout.endsWith("\n") || run.stdout === "", `output ends without a newline: ${JSON.stringify(run.stdout)}`);
  return { status: run.status, answers: run.stdout.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as unknown), stderr: run.stderr };
}

const GMAIL_NOT_AUTHORIZED = "550-5.7.1 [192.0.2.7] The IP you're using to send mail is not authorized to\n550-5.7.1 send email directly to our servers. Please use the SMTP relay at your\n550 5.7.1 service provider instead. - gsmtp";

describe("homerelay classify", () => {
  test("one JSON answer per JSON line, in order, with exactly class, reroute, temporary and reason", () => {
    const input = [
      JSON.stringify({ reply: GMAIL_NOT_AUTHORIZED }),
      JSON.stringify({ reply: "454 4.7.1 Service unavailable; Client host [192.0.2.7] blocked using pbl.spamhaus.org", id: "extra fields are ignored" }),
      JSON.stringify({ reply: "554 5.7.1 <user@example.com>: Relay access denied" }),
    ].join("\n");
    const run = classify(input + "\n");
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stderr, "");
    assert.deepEqual(run.answers, [
      { class: "ip-dynamic", reroute: true, temporary: false, reason: "receiver wants mail from this end-user address to go through the ISP's relay" },
      { class: "ip-dynamic", reroute: true, temporary: true, reason: "sending IP listed on Spamhaus PBL (dynamic range)" },
      {
        class: "relay-denied",
        reroute: false,
        temporary: false,
        reason: "relaying denied: the host does not accept mail for this recipient domain without authentication (check the MX)",
      },
    ]);
  });

  test("a bad line is answered with an error and its number, the rest is still classified, and the exit status is 65", () => {
    const input = ["not json", JSON.stringify({ reply: "552 5.2.2 Mailbox full" }), "", JSON.stringify({ text: "no reply field" }), JSON.stringify(["550 x"]), JSON.stringify({ reply: 550 }), JSON.stringify({ reply: "450 4.2.0 Greylisted for 300 seconds" })].join("\r\n");
    const run = classify(input);
    assert.equal(run.status, EX_DATAERR);
    const answers = run.answers as Record<string, unknown>[];
    assert.deepEqual(
      answers.map((a) => a.line ?? a.class),
      [1, "mailbox-full", 4, 5, 6, "greylist"],
    );
    assert.match(String(answers[0]!.error), /^line 1: not JSON \(/);
    for (const i of [2, 3, 4]) assert.equal(answers[i]!.error, `line ${answers[i]!.line}: expected an object with a "reply" string, e.g. {"reply": "550 5.7.1 …"}`);
    assert.deepEqual(answers[5], { class: "greylist", reroute: false, temporary: true, reason: "greylisted: the receiver accepts a retry after a few minutes" });
  });

  test("--text reads the whole input as one multi-line reply", () => {
    const run = classify(GMAIL_NOT_AUTHORIZED.replaceAll("\n", "\r\n") + "\r\n", "--text");
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(run.answers, [{ class: "ip-dynamic", reroute: true, temporary: false, reason: "receiver wants mail from this end-user address to go through the ISP's relay" }]);
  });

  test("--text with nothing on standard input is a data error", () => {
    const run = classify("\n", "--text");
    assert.equal(run.status, EX_DATAERR);
    assert.deepEqual(run.answers, [{ error: "no reply on standard input", line: 1 }]);
  });

  test("the fixture piped through the command gets the library's verdict on every row", () => {
    const fixture = readFileSync(resolve(import.meta.dirname, "../fixtures/smtp-rejections.jsonl"), "utf8");
    const rows = fixture.trim().split("\n").map((l) => JSON.parse(l) as { reply: string });
    const run = classify(fixture);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.answers.length, rows.length);
    rows.forEach((row, i) => {
      const { rule: _rule, ...expected } = classifyReply(row.reply);
      assert.deepEqual(run.answers[i], expected);
    });
  });
});
