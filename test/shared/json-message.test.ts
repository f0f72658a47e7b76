// The JSON message form both APIs read: composition by MailComposer parsed back with mailparser,
// the envelope it implies, and the refusals (header injection in every header-bound member, unknown
// members, bad addresses, no recipients) with their problem types and JSON pointers.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { simpleParser, type AddressObject, type ParsedMail } from "mailparser";
import { PROBLEM_BASE } from "../../shared/problem-details.js";
import { readJsonMessage, type JsonMessage, type ReadableJsonMessage } from "../../shared/submission/json-message.js";

const BASE = { from: "cron@example.net", to: "bob@example.org" };

/** Read `json`, expecting success. */
function readable(json: unknown): ReadableJsonMessage {
  const read = readJsonMessage(json);
  if (!read.ok) assert.fail(`refused: ${JSON.stringify(read.problem)}`);
  return read;
}

/** Compose and parse back. */
async function parsed(json: unknown, options = {}): Promise<{ raw: string; mail: ParsedMail }> {
  const raw = Buffer.concat(await readable(json).compose(options).toArray());
  return { raw: raw.toString("latin1"), mail: await simpleParser(raw) };
}

/** Expect the problem `type` at `field`. */
function refused(json: unknown, type: string, field?: string): void {
  const read = readJsonMessage(json);
  assert.equal(read.ok, false, `accepted: ${JSON.stringify(json)}`);
  if (read.ok) return;
  assert.equal(read.problem.type, PROBLEM_BASE + type, JSON.stringify(read.problem));
  assert.equal(read.problem.status, 400);
  if (field !== undefined) assert.equal(read.problem.field, field, JSON.stringify(read.problem));
}

const addresses = (a: AddressObject | AddressObject[] | undefined) => [a ?? []].flat().flatMap((o) => o.value.map((v) => v.address));

test("every member is composed, and mailparser reads back the same content", async () => {
  const pdf = Buffer.from([0x25, 0x50, 0x44, 0x46, 0x00, 0xff, 0x10, 0x0d, 0x0a, 0x80]);
  const { raw, mail } = await parsed(
    {
      from: "Jörg Cron <cron@example.net>",
      to: ["bob@example.org", "Carol <carol@example.org>"],
      cc: "dave@example.org",
      bcc: "eve@example.org",
      replyTo: "replies@example.net",
      subject: "Grüße aus Köln — 東京 ✓",
      text: "first line\nsecond line: ünïcødé\n",
      html: "<p>Grüße</p>",
      headers: { "X-Job": "nightly backup", "X-List": ["a", "b"] },
      attachments: [{ filename: "report.pdf", contentType: "application/pdf", content: pdf.toString("base64") }],
    },
    { messageId: "<ID1@home.example.net>", date: new Date("2026-11-26T05:40:00Z") },
  );
  assert.equal(mail.from?.value[0]?.address, "cron@example.net");
  assert.equal(mail.from?.value[0]?.name, "Jörg Cron");
  assert.deepEqual(addresses(mail.to), ["bob@example.org", "carol@example.org"]);
  assert.deepEqual(addresses(mail.cc), ["dave@example.org"]);
  assert.deepEqual(addresses(mail.replyTo), ["replies@example.net"]);
  assert.equal(mail.subject, "Grüße aus Köln — 東京 ✓");
  assert.equal(mail.text, "first line\nsecond line: ünïcødé\n");
  assert.equal(mail.html, "<p>Grüße</p>");
  assert.equal(mail.headers.get("x-job"), "nightly backup");
  assert.equal(mail.messageId, "<ID1@home.example.net>");
  assert.equal(mail.date?.toISOString(), "2026-11-26T05:40:00.000Z");
  assert.equal(mail.attachments.length, 1);
  assert.equal(mail.attachments[0]!.filename, "report.pdf");
  assert.equal(mail.attachments[0]!.contentType, "application/pdf");
  assert.deepEqual(mail.attachments[0]!.content, pdf);
  // Bcc recipients are in the envelope only; the message is 7-bit with CRLF line ends throughout.
  assert.doesNotMatch(raw, /^bcc:/im);
  assert.doesNotMatch(raw, /[^\r]\n/);
  assert.doesNotMatch(raw, /[\x80-\xff]/);
  assert.equal((raw.match(/^X-List:/gm) ?? []).length, 2);
});

test("the envelope: from and to + cc + bcc, or the envelope member; duplicates once; null sender", () => {
  const derived = readable({ ...BASE, to: ["bob@example.org", "Bob <bob@EXAMPLE.org>"], cc: "c@example.org", bcc: ["d@example.org"] }).envelope;
  assert.deepEqual(derived, { sender: "cron@example.net", recipients: [{ address: "bob@example.org" }, { address: "c@example.org" }, { address: "d@example.org" }] });
  const explicit = readable({ ...BASE, envelope: { from: "bounces@example.net", to: "other@example.com" } });
  assert.deepEqual(explicit.envelope, { sender: "bounces@example.net", recipients: [{ address: "other@example.com" }] });
  assert.deepEqual(explicit.headerFrom, ["cron@example.net"]);
  assert.equal(readable({ ...BASE, envelope: { from: "", to: "bob@example.org" } }).envelope.sender, "");
  assert.equal(readable({ ...BASE, envelope: { from: "<>", to: "bob@example.org" } }).envelope.sender, "");
  assert.equal(readable({ ...BASE, to: "jörg@bücher.example" }).envelope.smtputf8, true);
  assert.equal(readable(BASE).envelope.smtputf8, undefined);
});

test("CR, LF or NUL in any header-bound member or address is header injection, pointed at", () => {
  const cases: [JsonMessage | Record<string, unknown>, string][] = [
    [{ ...BASE, subject: "hello\r\nBcc: victim@example.com" }, "/subject"],
    [{ ...BASE, subject: "hello\nX-Evil: 1" }, "/subject"],
    [{ ...BASE, subject: "nul\0byte" }, "/subject"],
    [{ ...BASE, from: "cron@example.net\r\nBcc: victim@example.com" }, "/from"],
    [{ ...BASE, to: ["bob@example.org", "x@example.org\nBcc: victim@example.com"] }, "/to/1"],
    [{ ...BASE, cc: "c@example.org\r" }, "/cc"],
    [{ ...BASE, bcc: ["\0@example.org"] }, "/bcc/0"],
    [{ ...BASE, replyTo: "r@example.org\n" }, "/replyTo"],
    [{ ...BASE, headers: { "X-Job": "ok\r\nBcc: victim@example.com" } }, "/headers/X-Job"],
    [{ ...BASE, headers: { "X-List": ["ok", "bad\n"] } }, "/headers/X-List/1"],
    [{ ...BASE, headers: { "X-Job\r\nBcc": "victim@example.com" } }, "/headers/X-Job\r\nBcc"],
    [{ ...BASE, attachments: [{ filename: "a.txt\r\nContent-Type: text/html", content: "" }] }, "/attachments/0/filename"],
    [{ ...BASE, attachments: [{ contentType: "text/plain\r\nX-Evil: 1", content: "" }] }, "/attachments/0/contentType"],
    [{ ...BASE, envelope: { from: "a@example.net\r\nRCPT TO:<x@y>", to: "bob@example.org" } }, "/envelope/from"],
    [{ ...BASE, envelope: { from: "a@example.net", to: ["bob@example.org\n"] } }, "/envelope/to/0"],
  ];
  for (const [json, field] of cases) refused(json, "header-injection", field);
  // The bodies are content, not header fields: line breaks are what they are made of.
  assert.ok(readJsonMessage({ ...BASE, text: "a\r\nb\nc\0d", html: "<p>\r\n</p>" }).ok);
});

test("unknown members are refused, nested ones too: an attachment path would read the server's files", () => {
  refused({ ...BASE, priority: "high" }, "unknown-field", "/priority");
  refused({ ...BASE, attachments: [{ filename: "passwd", path: "/etc/passwd" }] }, "unknown-field", "/attachments/0/path");
  refused({ ...BASE, attachments: [{ href: "http://169.254.169.254/", content: "" }] }, "unknown-field", "/attachments/0/href");
  refused({ ...BASE, envelope: { from: "a@example.net", to: "b@example.org", size: 1 } }, "unknown-field", "/envelope/size");
});

test("addresses must be mailboxes; the message needs recipients and one From: address", () => {
  refused({ ...BASE, to: "not an address" }, "bad-address", "/to");
  refused({ ...BASE, to: ["bob@example.org", "bob@"] }, "bad-address", "/to/1");
  refused({ ...BASE, to: "bob@-not-a-host-.example" }, "bad-address", "/to");
  refused({ ...BASE, from: "a@example.net, b@example.net" }, "bad-address", "/from");
  refused({ ...BASE, from: "" }, "bad-address", "/from");
  refused({ ...BASE, envelope: { from: "a@example.net, b@example.net", to: "bob@example.org" } }, "bad-address", "/envelope/from");
  refused({ from: "cron@example.net" }, "no-recipients", "/to");
  refused({ ...BASE, to: [] }, "no-recipients", "/to");
  refused({ ...BASE, envelope: { from: "a@example.net", to: [] } }, "no-recipients", "/envelope/to");
  // Bcc alone is enough, as with sendmail -t.
  assert.ok(readJsonMessage({ from: "cron@example.net", bcc: "bob@example.org" }).ok);
});

test("the rest of the form: types, base64, media types, header names the server composes", () => {
  refused("a string", "invalid-message", "/");
  refused({ ...BASE, to: 5 }, "invalid-message", "/to");
  refused({ ...BASE, text: ["not", "a", "string"] }, "invalid-message", "/text");
  refused({ ...BASE, attachments: [{ filename: "a.bin", content: "not base64!" }] }, "invalid-message", "/attachments/0/content");
  refused({ ...BASE, attachments: [{ filename: "a.bin", content: "abc" }] }, "invalid-message", "/attachments/0/content");
  refused({ ...BASE, attachments: [{ contentType: "pdf", content: "" }] }, "invalid-message", "/attachments/0/contentType");
  refused({ ...BASE, headers: { From: "ceo@bank.example" } }, "invalid-message", "/headers/From");
  refused({ ...BASE, headers: { "content-type": "text/html" } }, "invalid-message", "/headers/content-type");
  refused({ ...BASE, headers: { "Bad Name": "x" } }, "invalid-message", "/headers/Bad Name");
  // Base64 as the base64 command writes it, wrapped at 76 columns, is fine.
  const wrapped = Buffer.alloc(200, 7).toString("base64").replace(/(.{76})/g, "$1\n");
  assert.ok(readJsonMessage({ ...BASE, attachments: [{ filename: "a.bin", content: wrapped }] }).ok);
});

test("property: any subject without CR, LF or NUL comes back as it was; any with one is header injection", async () => {
  // mailparser trims a subject's ends and reads runs of white space as one, as mail readers do.
  const subject = fc.string({ unit: "grapheme", maxLength: 120 }).filter((s) => !/[\r\n\0]/.test(s) && s === s.trim() && !/\s\s|[\t\v\f\x1c-\x1f\x85\u2028\u2029]/.test(s));
  await fc.assert(
    fc.asyncProperty(subject, async (s) => {
      const { mail } = await parsed({ ...BASE, subject: s });
      assert.equal(mail.subject ?? "", s);
    }),
    { numRuns: 200 },
  );
  fc.assert(
    fc.property(fc.string(), fc.constantFrom("\r", "\n", "\0"), fc.string(), (before, bad, after) => {
      refused({ ...BASE, subject: before + bad + after }, "header-injection", "/subject");
    }),
  );
});
