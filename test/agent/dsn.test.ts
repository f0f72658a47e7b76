// dsn: the agent's bounces, delay warnings and success notices as RFC 3464 multipart/report messages
// from MAILER-DAEMON — structure, delivery-status fields, RET/size limits on the returned message, NOTIFY rules.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { simpleParser, type ParsedMail } from "mailparser";
import { Headers } from "mailsplit";
import { composeDsn, isNullSender, wantsDsn, type DsnKind, type DsnRecipient, type DsnRequest } from "../../agent/bounce/dsn.js";
import type { DsnNotify } from "../../shared/envelope.js";

const HEADER =
  "Received: from laptop.example.net (unknown [192.0.2.7])\r\n" +
  "\tby mail.example.net (homerelay) with ESMTPSA id 3F2A1B\r\n" +
  "\tfor <bob@example.org>; Mon, 1 Jan 2024 12:00:00 +0000\r\n" +
  "From: Alice <alice@example.net>\r\n" +
  "To: Bob <bob@example.org>\r\n" +
  "Subject: Lunch on Friday\r\n" +
  "Message-ID: <lunch.1@example.net>\r\n";
// A body with what could trip a MIME builder: a boundary-like line, a From_ line, a lone dot, 8-bit text.
const BODY = "Hi Bob,\r\n\r\n--\r\nFrom the kitchen: caf\u00e9 at noon?\r\n.\r\n-- \r\nAlice\r\n";
const ORIGINAL = Buffer.from(`${HEADER}\r\n${BODY}`, "utf8");

const BOUNCED: DsnRecipient = {
  address: "bob@example.org",
  orcpt: "rfc822;Bob@example.org",
  action: "failed",
  status: "5.1.1",
  remoteMta: "dns; mx.example.org",
  diagnostic: "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in local recipient table",
  lastAttempt: new Date("2024-01-01T12:00:05Z"),
};

/** The queued message as a stream of `chunkSize`-byte reads. */
function queued(message: Buffer, chunkSize = 16 * 1024): Readable {
  const chunks: Buffer[] = [];
  for (let at = 0; at < message.length; at += chunkSize) chunks.push(message.subarray(at, at + chunkSize));
  return Readable.from(chunks);
}

/** A DSN request for the lunch message from alice, with `changes` applied. */
function request(changes: Partial<DsnRequest> = {}): DsnRequest {
  return {
    kind: "failure",
    hostname: "mail.example.net",
    queueId: "3F2A1B",
    sender: "alice@example.net",
    arrival: new Date("2024-01-01T12:00:00Z"),
    ret: "FULL",
    recipients: [BOUNCED],
    original: queued(ORIGINAL),
    messageId: "<3F2A1B.dsn@mail.example.net>",
    date: new Date("2024-01-01T12:00:06Z"),
    ...changes,
  };
}

interface Dsn {
  raw: Buffer;
  mail: ParsedMail;
  /** Content types of the report's parts, in order. */
  parts: string[];
  /** The delivery-status part: per-message fields first, then one block per recipient. */
  report: Map<string, string>[];
  /** The returned message or header (third part). */
  returned: { contentType: string; content: Buffer };
}

/** Compose the DSN and take it apart with mailparser; the delivery-status fields are parsed per RFC 3464. */
async function compose(req: DsnRequest): Promise<Dsn> {
  const raw = await composeDsn(req);
  const mail = await simpleParser(raw, { keepDeliveryStatus: true });
  const contentType = mail.headers.get("content-type") as { value: string; params: Record<string, string> };
  const parts = partTypes(raw, contentType.params.boundary!);
  const [status, returned, ...more] = mail.attachments;
  assert.equal(more.length, 0, "no parts besides notice, report and returned message");
  assert.ok(status && returned);
  return { raw, mail, parts, report: deliveryStatus(status.content.toString("utf8")), returned: { contentType: returned.contentType, content: returned.content } };
}

/** The Content-Type of each body part of a multipart with `boundary`. */
function partTypes(raw: Buffer, boundary: string): string[] {
  const text = raw.toString("latin1");
  const body = text.slice(text.indexOf("\r\n\r\n") + 4);
  const [, ...parts] = body.split(`--${boundary}`);
  assert.equal(parts.pop()?.trim(), "--", "the multipart ends with its close delimiter");
  return parts.map((part) => new Headers(Buffer.from(part.slice(2, part.indexOf("\r\n\r\n") + 2), "latin1")).getFirst("content-type"));
}

/** RFC 3464 fields: header-like lines (folded lines unfolded), groups separated by blank lines. */
function deliveryStatus(text: string): Map<string, string>[] {
  assert.ok(!/(?<!\r)\n/.test(text), "CRLF line ends in the delivery-status part");
  return text
    .replace(/\r\n(?=[ \t])/g, "")
    .split(/\r\n\r\n/)
    .map((group) => group.replace(/\r\n$/, ""))
    .filter((group) => group !== "")
    .map((group) => {
      const fields = new Map<string, string>();
      for (const line of group.split("\r\n")) {
        const m = /^([\x21-\x39\x3b-\x7e]+):[ \t]*(.*)$/.exec(line);
        assert.ok(m, `field syntax: ${JSON.stringify(line)}`);
        const name = m[1]!.toLowerCase();
        assert.ok(!fields.has(name), `${name} appears once`);
        fields.set(name, m[2]!.trim());
      }
      return fields;
    });
}

/** The text with all runs of white space as one space, so that wrapping does not matter. */
function flat(text: string | undefined): string {
  return (text ?? "").replace(/\s+/g, " ").trim();
}

describe("failure DSN", () => {
  test("is a multipart/report from MAILER-DAEMON to the sender: notice, delivery-status, returned message", async () => {
    const dsn = await compose(request());
    const contentType = dsn.mail.headers.get("content-type") as { value: string; params: Record<string, string> };
    assert.equal(contentType.value, "multipart/report");
    assert.equal(contentType.params["report-type"], "delivery-status");
    assert.deepEqual(dsn.parts, ["text/plain", "message/delivery-status", "message/rfc822"]);
    assert.equal(dsn.mail.from?.value[0]?.address, "MAILER-DAEMON@mail.example.net");
    assert.equal(dsn.mail.from?.value[0]?.name, "Mail Delivery System");
    assert.deepEqual(
      [dsn.mail.to].flat().flatMap((to) => to?.value.map((a) => a.address)),
      ["alice@example.net"],
    );
    assert.equal(dsn.mail.subject, "Undelivered Mail Returned to Sender");
    assert.equal(dsn.mail.headers.get("auto-submitted"), "auto-replied");
    assert.equal(dsn.mail.messageId, "<3F2A1B.dsn@mail.example.net>");
    assert.equal(dsn.mail.date?.toISOString(), "2024-01-01T12:00:06.000Z");
    assert.ok(!/(?<!\r)\n/.test(dsn.raw.toString("latin1")), "CRLF line ends throughout");
  });

  test("the report has the per-message fields and a per-recipient block in RFC 3464 form", async () => {
    const { report } = await compose(request({ envid: "QQ314159" }));
    assert.equal(report.length, 2);
    const [message, recipient] = report;
    assert.equal(message!.get("original-envelope-id"), "QQ314159");
    assert.equal(message!.get("reporting-mta"), "dns; mail.example.net");
    assert.equal(message!.get("x-homerelay-queue-id"), "3F2A1B");
    assert.equal(message!.get("arrival-date"), "Mon, 1 Jan 2024 12:00:00 +0000");
    assert.deepEqual(Object.fromEntries(recipient!), {
      "original-recipient": "rfc822;Bob@example.org",
      "final-recipient": "rfc822; bob@example.org",
      action: "failed",
      status: "5.1.1",
      "remote-mta": "dns; mx.example.org",
      "diagnostic-code": "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in local recipient table",
      "last-attempt-date": "Mon, 1 Jan 2024 12:00:05 +0000",
    });
  });

  test("without ENVID and ORCPT there is no Original-Envelope-Id or Original-Recipient", async () => {
    const { orcpt: _, ...withoutOrcpt } = BOUNCED;
    const { report } = await compose(request({ recipients: [withoutOrcpt] }));
    assert.equal(report[0]!.has("original-envelope-id"), false);
    assert.equal(report[1]!.has("original-recipient"), false);
    assert.equal(report[1]!.get("final-recipient"), "rfc822; bob@example.org");
  });

  test("each recipient has its own block, in order, and its own line in the notice", async () => {
    const carol: DsnRecipient = { address: "carol@example.com", action: "failed", status: "5.4.4", diagnostic: "Host or domain name not found. Name service error for name=example.com type=MX: Host not found" };
    const dsn = await compose(request({ recipients: [BOUNCED, carol] }));
    assert.deepEqual(dsn.report.slice(1).map((r) => r.get("final-recipient")), ["rfc822; bob@example.org", "rfc822; carol@example.com"]);
    assert.deepEqual(dsn.report.slice(1).map((r) => r.get("status")), ["5.1.1", "5.4.4"]);
    assert.equal(dsn.report[2]!.get("diagnostic-code"), `X-Homerelay; ${carol.diagnostic}`);
    assert.ok(flat(dsn.mail.text).includes(`<carol@example.com>: ${carol.diagnostic}`), flat(dsn.mail.text));
  });

  test("the notice is Postfix's, naming the recipient and what the server said", async () => {
    const { mail } = await compose(request());
    const text = flat(mail.text);
    assert.ok(text.startsWith("This is the mail system at host mail.example.net."), text);
    assert.ok(text.includes("I'm sorry to have to inform you that your message could not be delivered to one or more recipients."), text);
    assert.ok(
      text.endsWith("<bob@example.org>: host mx.example.org said: 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in local recipient table"),
      text,
    );
  });

  test("a recipient reached through an alias is named with the address it was expanded from", async () => {
    const { mail } = await compose(request({ recipients: [{ ...BOUNCED, orcpt: "rfc822;lunch-club@example.net" }] }));
    assert.ok(flat(mail.text).includes("<bob@example.org> (expanded from <lunch-club@example.net>): host mx.example.org said: 550 5.1.1"), mail.text);
  });

  test("RET=FULL returns the whole message byte for byte as message/rfc822", async () => {
    const dsn = await compose(request({ ret: "FULL" }));
    assert.equal(dsn.returned.contentType, "message/rfc822");
    assert.ok(dsn.returned.content.equals(ORIGINAL), dsn.returned.content.toString("utf8"));
  });

  test("RET=HDRS returns only the header block as text/rfc822-headers", async () => {
    const dsn = await compose(request({ ret: "HDRS" }));
    assert.equal(dsn.parts[2], "text/rfc822-headers");
    assert.equal(dsn.returned.contentType, "text/rfc822-headers");
    assert.equal(dsn.returned.content.toString("utf8"), HEADER);
    assert.ok(!dsn.raw.toString("latin1").includes("From the kitchen"), "no body text anywhere in the DSN");
  });

  test("the header block is found whatever the reads: one byte at a time", async () => {
    const dsn = await compose(request({ ret: "HDRS", original: queued(ORIGINAL, 1) }));
    assert.equal(dsn.returned.content.toString("utf8"), HEADER);
  });

  test("a message without a body comes back whole as its header; one without a header as nothing", async () => {
    const headerOnly = await compose(request({ ret: "HDRS", original: queued(Buffer.from(HEADER)) }));
    assert.equal(headerOnly.returned.content.toString("utf8"), HEADER);
    const bodyOnly = await compose(request({ ret: "HDRS", original: queued(Buffer.from("\r\nJust a body.\r\n")) }));
    assert.equal(bodyOnly.returned.content.length, 0);
  });

  test("RET=HDRS reads no further than the header block", async () => {
    // A body that never ends, unless read far past the header: then the read fails the test.
    async function* endless(): AsyncGenerator<Buffer> {
      yield Buffer.from(`${HEADER}\r\n`);
      for (let reads = 0; reads < 10_000; reads++) yield Buffer.from("more body\r\n");
      throw new Error("the body was read far past the header");
    }
    const dsn = await compose(request({ ret: "HDRS", original: Readable.from(endless()) }));
    assert.equal(dsn.returned.content.toString("utf8"), HEADER);
  });

  test("a message larger than maxReturnedSize comes back as its header only; one of that size whole", async () => {
    const over = await compose(request({ ret: "FULL", maxReturnedSize: ORIGINAL.length - 1 }));
    assert.equal(over.returned.contentType, "text/rfc822-headers");
    assert.equal(over.returned.content.toString("utf8"), HEADER);
    const atLimit = await compose(request({ ret: "FULL", maxReturnedSize: ORIGINAL.length }));
    assert.equal(atLimit.returned.contentType, "message/rfc822");
    assert.ok(atLimit.returned.content.equals(ORIGINAL));
  });

  test("without maxReturnedSize, Postfix's 50000 bytes apply", async () => {
    const ofSize = (size: number) => Buffer.concat([Buffer.from(`${HEADER}\r\n`), Buffer.alloc(size - HEADER.length - 2, "z")]);
    const whole = await compose(request({ ret: "FULL", original: queued(ofSize(50_000)) }));
    assert.equal(whole.returned.contentType, "message/rfc822");
    assert.equal(whole.returned.content.length, 50_000);
    const over = await compose(request({ ret: "FULL", original: queued(ofSize(50_001)) }));
    assert.equal(over.returned.contentType, "text/rfc822-headers");
    assert.equal(over.returned.content.toString("utf8"), HEADER);
  });

  test("a multi-line reply is joined, and line breaks in a reply cannot forge report fields", async () => {
    const forged: DsnRecipient = { ...BOUNCED, diagnostic: "550-5.1.1 No such user\r\n550 5.1.1 Try again\r\n\r\nAction: delivered" };
    const { report } = await compose(request({ recipients: [forged] }));
    assert.equal(report.length, 2);
    assert.equal(report[1]!.get("action"), "failed");
    assert.equal(report[1]!.get("diagnostic-code"), "smtp; 550-5.1.1 No such user 550 5.1.1 Try again Action: delivered");
  });

  test("a UTF-8 recipient makes a message/global-delivery-status with a utf-8 address (RFC 6533)", async () => {
    const dsn = await compose(request({ recipients: [{ address: "j\u00f6rg@example.de", action: "failed", status: "5.1.1", diagnostic: "550 5.1.1 unknown" }] }));
    assert.equal(dsn.parts[1], "message/global-delivery-status");
    assert.equal(dsn.report[1]!.get("final-recipient"), "utf-8; j\u00f6rg@example.de");
  });
});

describe("delay DSN", () => {
  const delayed: DsnRecipient = {
    address: "bob@example.org",
    action: "delayed",
    status: "4.4.1",
    diagnostic: "connect to mx.example.org[192.0.2.1]:25: Connection refused",
    lastAttempt: new Date("2024-01-01T16:00:00Z"),
    willRetryUntil: new Date("2024-01-06T12:00:00Z"),
  };

  test("warns in Postfix's words, with how long it waited and until when it is retried", async () => {
    const dsn = await compose(request({ kind: "delay", recipients: [delayed], date: new Date("2024-01-01T16:00:00Z") }));
    assert.equal(dsn.mail.subject, "Delayed Mail (still being retried)");
    const text = dsn.mail.text ?? "";
    assert.ok(text.includes("# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #"), text);
    assert.ok(flat(text).includes("Your message could not be delivered for 4 hours. It will be retried until it is 5 days old."), text);
    assert.ok(flat(text).includes("<bob@example.org>: connect to mx.example.org[192.0.2.1]:25: Connection refused"), text);
    assert.deepEqual(Object.fromEntries(dsn.report[1]!), {
      "final-recipient": "rfc822; bob@example.org",
      action: "delayed",
      status: "4.4.1",
      "diagnostic-code": "X-Homerelay; connect to mx.example.org[192.0.2.1]:25: Connection refused",
      "last-attempt-date": "Mon, 1 Jan 2024 16:00:00 +0000",
      "will-retry-until": "Sat, 6 Jan 2024 12:00:00 +0000",
    });
  });

  test("returns only the header even with RET=FULL (RFC 3461 section 4.3)", async () => {
    const dsn = await compose(request({ kind: "delay", ret: "FULL", recipients: [delayed] }));
    assert.equal(dsn.returned.contentType, "text/rfc822-headers");
    assert.equal(dsn.returned.content.toString("utf8"), HEADER);
  });
});

describe("success DSN", () => {
  test("reports delivery to the destination", async () => {
    const delivered: DsnRecipient = { address: "bob@example.org", action: "delivered", status: "2.0.0", remoteMta: "dns; mx.example.org", diagnostic: "250 2.0.0 Ok: queued as 4XyZ" };
    const dsn = await compose(request({ kind: "success", recipients: [delivered] }));
    assert.equal(dsn.mail.subject, "Successful Mail Delivery Report");
    assert.ok(flat(dsn.mail.text).includes("Your message was successfully delivered to the destination(s) listed below."), dsn.mail.text);
    assert.ok(flat(dsn.mail.text).includes("<bob@example.org>: delivery via mx.example.org: 250 2.0.0 Ok: queued as 4XyZ"), dsn.mail.text);
    assert.equal(dsn.report[1]!.get("action"), "delivered");
    assert.equal(dsn.report[1]!.get("status"), "2.0.0");
    assert.equal(dsn.returned.contentType, "text/rfc822-headers");
  });

  test("a relayed DSN says the next hop does not support delivery status notifications", async () => {
    const relayed: DsnRecipient = { address: "bob@example.org", action: "relayed", status: "2.0.0", remoteMta: "dns; mx.example.org", diagnostic: "250 2.0.0 Ok" };
    const dsn = await compose(request({ kind: "success", recipients: [relayed] }));
    assert.ok(flat(dsn.mail.text).includes("delivered to a mail system that does not support delivery status notifications"), dsn.mail.text);
    assert.ok(flat(dsn.mail.text).includes("<bob@example.org>: relayed via mx.example.org: 250 2.0.0 Ok"), dsn.mail.text);
    assert.equal(dsn.report[1]!.get("action"), "relayed");
  });
});

describe("composeDsn refuses", () => {
  test("the null sender: never bounce a bounce", async () => {
    assert.equal(isNullSender(""), true);
    assert.equal(isNullSender("<>"), true);
    assert.equal(isNullSender("alice@example.net"), false);
    await assert.rejects(composeDsn(request({ sender: "" })), TypeError);
    await assert.rejects(composeDsn(request({ sender: "<>" })), TypeError);
  });

  test("an action or status that does not belong in the kind of DSN", async () => {
    await assert.rejects(composeDsn(request({ kind: "delay" })), /cannot report action "failed"/);
    await assert.rejects(composeDsn(request({ recipients: [{ ...BOUNCED, status: "4.1.1" }] })), /no 5\.x\.x enhanced status code/);
    await assert.rejects(composeDsn(request({ recipients: [{ ...BOUNCED, status: "550" }] })), /no 5\.x\.x enhanced status code/);
    await assert.rejects(composeDsn(request({ recipients: [] })), /no recipients/);
  });
});

describe("wantsDsn", () => {
  const cases: [DsnNotify[] | undefined, Record<DsnKind, boolean>][] = [
    [undefined, { failure: true, delay: true, success: false }],
    [[], { failure: true, delay: true, success: false }],
    [["NEVER"], { failure: false, delay: false, success: false }],
    [["SUCCESS"], { failure: false, delay: false, success: true }],
    [["FAILURE"], { failure: true, delay: false, success: false }],
    [["DELAY"], { failure: false, delay: true, success: false }],
    [["SUCCESS", "FAILURE"], { failure: true, delay: false, success: true }],
    [["FAILURE", "DELAY"], { failure: true, delay: true, success: false }],
    [["SUCCESS", "FAILURE", "DELAY"], { failure: true, delay: true, success: true }],
  ];
  for (const [notify, expected] of cases) {
    test(`NOTIFY=${notify === undefined ? "(none)" : notify.join(",") || "(empty)"}`, () => {
      for (const kind of ["failure", "delay", "success"] as const) assert.equal(wantsDsn(kind, notify), expected[kind], kind);
    });
  }
});
