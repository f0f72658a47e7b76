// The SES onward transport through the real @aws-sdk/client-ses: against aws-ses-v2-local (what it stored),
// and against a loopback SES Query endpoint for raw bytes, all destinations, throttling, rejections, pacing and refusals.
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { createServer, type Server } from "node:http";
import { after, before, describe, test, type TestContext } from "node:test";
import sesLocal from "aws-ses-v2-local";
import { OnwardRefusal, type OnwardMessage, type RelayResult } from "../../cloud/onward/onward.js";
import { createSesTransport, type SesOnwardConfig } from "../../cloud/onward/ses.js";
import { startSesQueryEndpoint, THROTTLED, type SesQueryEndpoint } from "../support/ses-query-endpoint.js";

// The SDK's default credential chain reads these first; nothing here reaches AWS.
process.env.AWS_ACCESS_KEY_ID = "AKIDHOMERELAYTEST";
process.env.AWS_SECRET_ACCESS_KEY = "homerelay-test-secret";

const sesConfig = (endpoint: string, extra: Partial<SesOnwardConfig> = {}): SesOnwardConfig => ({ transport: "ses", region: "eu-west-1", endpoint, ...extra });

function letter(sender: string, recipients: string[], from = sender, body = "Hello Bob,\r\nthe minutes are attached.\r\n"): OnwardMessage {
  const raw = Buffer.from(`From: Alice <${from}>\r\nTo: ${recipients.join(", ")}\r\nSubject: Minutes of the meeting\r\nMessage-ID: <m1@example.net>\r\n\r\n${body}`, "latin1");
  return { envelope: { sender, recipients: recipients.map((address) => ({ address })) }, raw, headerFrom: [from] };
}

/** The refusal `promise` rejects with, or a failure when it resolves. */
async function refusalOf(promise: Promise<RelayResult>): Promise<OnwardRefusal> {
  try {
    const result = await promise;
    assert.fail(`expected a refusal, got ${JSON.stringify(result)}`);
  } catch (err) {
    assert.ok(err instanceof OnwardRefusal, `expected an OnwardRefusal, got ${String(err)}`);
    return err;
  }
}

describe("SES transport against aws-ses-v2-local", () => {
  let emulator: Server;
  let url: string;
  before(async () => {
    emulator = await sesLocal.default({ host: "127.0.0.1", port: 0 });
    url = `http://127.0.0.1:${(emulator.address() as AddressInfo).port}`;
  });
  after(() => {
    emulator.closeAllConnections();
    emulator.close();
  });

  test("a message is accepted by SES, and the emulator stored it under the MessageId the recipient's result names", async (t) => {
    // The emulator has no GetSendQuota (it never answers it): the transport must still send, unpaced.
    const ses = createSesTransport(sesConfig(url));
    t.after(() => ses.close?.());
    const result = await ses.relay(letter("alice@example.net", ["bob@example.org"]));

    assert.equal(result.results.length, 1);
    const [bob] = result.results;
    assert.deepEqual({ recipient: bob!.recipient, status: bob!.status, dsn: bob!.dsn }, { recipient: "bob@example.org", status: "sent", dsn: "2.0.0" });
    assert.equal(bob!.detail, `SES accepted, MessageId ${result.id}`);

    const store = (await (await fetch(`${url}/store`)).json()) as { emails: { messageId: string; from: string; destination: { to: string[] }; subject: string; body: { text?: string } }[] };
    const stored = store.emails.find((e) => e.messageId === result.id);
    assert.ok(stored, `the emulator stored no message ${result.id}`);
    assert.equal(stored.from, `"Alice" <alice@example.net>`);
    assert.deepEqual(stored.destination.to, ["bob@example.org"]);
    assert.equal(stored.subject, "Minutes of the meeting");
    assert.equal(stored.body.text, "Hello Bob,\nthe minutes are attached.\n");
  });
});

describe("SES transport against an SES Query endpoint", () => {
  let ses: SesQueryEndpoint;
  before(async () => {
    ses = await startSesQueryEndpoint();
  });
  after(() => ses.close());
  const fresh = () => {
    ses.received.length = 0;
    ses.actions.length = 0;
  };

  test("the raw bytes go to SES untouched, with Source, every envelope recipient as a destination and the configuration set", async (t) => {
    fresh();
    const transport = createSesTransport(sesConfig(ses.url, { configurationSet: "homerelay-events" }));
    t.after(() => transport.close?.());
    const message = letter("alice@example.net", ["bob@example.org", "carol@example.com", "dave@bücher.example"], "alice@Example.NET", "Gr\xfc\xdfe,\r\n..a dot-stuffed-looking line\r\nbare LF follows\nend\r\n");
    const result = await transport.relay(message);

    assert.equal(ses.received.length, 1);
    const [sent] = ses.received;
    assert.ok(sent!.raw.equals(message.raw), "SES received other bytes than the message");
    assert.equal(sent!.source, "alice@example.net");
    // Destinations are the envelope's, not the header To:; an IDN domain goes as Punycode.
    assert.deepEqual(sent!.destinations, ["bob@example.org", "carol@example.com", "dave@xn--bcher-kva.example"]);
    assert.equal(sent!.configurationSet, "homerelay-events");
    assert.equal(result.id, sent!.messageId);
    assert.deepEqual(
      result.results,
      ["bob@example.org", "carol@example.com", "dave@bücher.example"].map((recipient) => ({ recipient, status: "sent", dsn: "2.0.0", detail: `SES accepted, MessageId ${sent!.messageId}` })),
    );
  });

  test("without a configuration set none is named", async (t) => {
    fresh();
    const transport = createSesTransport(sesConfig(ses.url));
    t.after(() => transport.close?.());
    await transport.relay(letter("alice@example.net", ["bob@example.org"]));
    assert.equal(ses.received.length, 1);
    assert.equal(ses.received[0]!.configurationSet, undefined);
  });

  test("an envelope of more than 50 recipients goes in calls of at most 50, each recipient naming its own MessageId", async (t) => {
    fresh();
    ses.quota.maxSendRate = 100;
    t.after(() => (ses.quota.maxSendRate = 14));
    const transport = createSesTransport(sesConfig(ses.url));
    t.after(() => transport.close?.());
    const recipients = Array.from({ length: 61 }, (_, i) => `member${i}@lists.example.org`);
    const result = await transport.relay(letter("alice@example.net", recipients));

    assert.deepEqual(ses.received.map((r) => r.destinations), [recipients.slice(0, 50), recipients.slice(50)]);
    assert.equal(result.id, ses.received[0]!.messageId);
    assert.equal(result.results.length, 61);
    result.results.forEach((r, i) => {
      assert.equal(r.recipient, recipients[i]);
      assert.equal(r.status, "sent");
      assert.equal(r.detail, `SES accepted, MessageId ${ses.received[i < 50 ? 0 : 1]!.messageId}`);
    });
  });

  test("SES throttling is a 429 refusal: the rate limit retries after a second, the daily quota after an hour", async (t) => {
    fresh();
    const transport = createSesTransport(sesConfig(ses.url));
    t.after(() => transport.close?.());
    ses.failNext("SendRawEmail", THROTTLED);
    const rate = await refusalOf(transport.relay(letter("alice@example.net", ["bob@example.org"])));
    assert.deepEqual([rate.type, rate.httpStatus, rate.retryAfter], ["ses-throttled", 429, 1]);
    assert.match(rate.message, /Maximum sending rate exceeded/);

    ses.failNext("SendRawEmail", { status: 400, type: "Sender", code: "Throttling", message: "Daily message quota exceeded." });
    const daily = await refusalOf(transport.relay(letter("alice@example.net", ["bob@example.org"])));
    assert.deepEqual([daily.type, daily.httpStatus, daily.retryAfter], ["ses-throttled", 429, 3600]);
    assert.equal(ses.received.length, 0);
    // Tried once each: the SDK does not retry behind the agent's back.
    assert.equal(ses.actions.filter((a) => a === "SendRawEmail").length, 2);
  });

  test("MessageRejected fails every recipient with 5.7.1 and SES's reason", async (t) => {
    fresh();
    const transport = createSesTransport(sesConfig(ses.url));
    t.after(() => transport.close?.());
    const reason = "Illegal address";
    ses.failNext("SendRawEmail", { status: 400, type: "Sender", code: "MessageRejected", message: reason });
    const result = await transport.relay(letter("alice@example.net", ["bob@example.org", "carol@example.com"]));
    assert.deepEqual(
      result.results,
      ["bob@example.org", "carol@example.com"].map((recipient) => ({ recipient, status: "failed", dsn: "5.7.1", detail: `SES rejected the message: ${reason}` })),
    );
  });

  test("MessageRejected for an unverified address (identity pending, SES sandbox) is a 403 refusal for the owner, not a bounce", async (t) => {
    fresh();
    const transport = createSesTransport(sesConfig(ses.url));
    t.after(() => transport.close?.());
    const reason = "Email address is not verified. The following identities failed the check in region EU-WEST-1: bob@example.org";
    ses.failNext("SendRawEmail", { status: 400, type: "Sender", code: "MessageRejected", message: reason });
    const refusal = await refusalOf(transport.relay(letter("alice@example.net", ["bob@example.org"])));
    assert.deepEqual([refusal.type, refusal.httpStatus], ["ses-not-verified", 403]);
    assert.equal(refusal.message, `SES: ${reason} (verify the identity, or leave the SES sandbox)`);
  });

  test("an SES server error is a 503 refusal with Retry-After, tried once", async (t) => {
    fresh();
    const transport = createSesTransport(sesConfig(ses.url));
    t.after(() => transport.close?.());
    ses.failNext("SendRawEmail", { status: 500, type: "Receiver", code: "InternalFailure", message: "The request processing has failed because of an unknown error." });
    const refusal = await refusalOf(transport.relay(letter("alice@example.net", ["bob@example.org"])));
    assert.deepEqual([refusal.type, refusal.httpStatus, refusal.retryAfter], ["ses-unavailable", 503, 60]);
    assert.match(refusal.message, /InternalFailure/);
    assert.equal(ses.actions.filter((a) => a === "SendRawEmail").length, 1);
  });

  test("an SES endpoint that refuses connections is a 503 refusal", async (t) => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const transport = createSesTransport(sesConfig(`http://127.0.0.1:${port}`));
    t.after(() => transport.close?.());
    const refusal = await refusalOf(transport.relay(letter("alice@example.net", ["bob@example.org"])));
    assert.deepEqual([refusal.type, refusal.httpStatus], ["ses-unavailable", 503]);
  });

  test("throttled after a first batch went out: the sent stay sent and only the rest is deferred", async (t) => {
    fresh();
    ses.quota.maxSendRate = 100;
    t.after(() => (ses.quota.maxSendRate = 14));
    const transport = createSesTransport(sesConfig(ses.url));
    t.after(() => transport.close?.());
    const recipients = Array.from({ length: 55 }, (_, i) => `member${i}@lists.example.org`);
    ses.failNext("SendRawEmail", THROTTLED, 1);
    const result = await transport.relay(letter("alice@example.net", recipients));

    assert.equal(ses.received.length, 1);
    assert.deepEqual(ses.received[0]!.destinations, recipients.slice(0, 50));
    assert.equal(result.id, ses.received[0]!.messageId);
    assert.deepEqual(
      result.results.map((r) => [r.recipient, r.status, r.dsn]),
      recipients.map((r, i) => (i < 50 ? [r, "sent", "2.0.0"] : [r, "deferred", "4.4.5"])),
    );
    assert.match(result.results[54]!.detail, /Maximum sending rate exceeded/);
  });

  test("the null sender, a foreign From: and a non-ASCII local part are refused with 422 before anything reaches SES", async (t) => {
    fresh();
    const transport = createSesTransport(sesConfig(ses.url));
    t.after(() => transport.close?.());

    const bounce = await refusalOf(transport.relay(letter("", ["alice@example.net"], "MAILER-DAEMON@home.example.net")));
    assert.deepEqual([bounce.type, bounce.httpStatus], ["null-sender-not-supported", 422]);

    // Forwarded mail: the home server's SRS sender, the original author's From:.
    const forwarded = letter("SRS0=HHH=TT=example.com=carol@home.example.net", ["alice@example.org"], "carol@example.com");
    const foreign = await refusalOf(transport.relay(forwarded));
    assert.deepEqual([foreign.type, foreign.httpStatus], ["foreign-from-not-supported", 422]);
    assert.match(foreign.message, /carol@example\.com/);

    // A From: in the sender's domain but a subdomain is foreign too.
    const subdomain = await refusalOf(transport.relay(letter("alice@example.net", ["bob@example.org"], "alice@mail.example.net")));
    assert.equal(subdomain.type, "foreign-from-not-supported");

    const utf8 = await refusalOf(transport.relay(letter("alice@example.net", ["bob@example.org", "jösé@example.org"])));
    assert.deepEqual([utf8.type, utf8.httpStatus], ["smtputf8-not-supported", 422]);
    assert.match(utf8.message, /jösé@example\.org/);

    assert.deepEqual(ses.actions, [], "a refused message must not reach SES at all");
  });

  test("sends are paced to GetSendQuota's MaxSendRate per recipient, with a 429 saying when to come back; the quota is asked once a minute", async (t) => {
    fresh();
    ses.quota.maxSendRate = 2;
    t.after(() => (ses.quota.maxSendRate = 14));
    let clock = 1_700_000_000_000;
    const transport = createSesTransport(sesConfig(ses.url), { now: () => clock });
    t.after(() => transport.close?.());
    const toBob = () => letter("alice@example.net", ["bob@example.org"]);

    await transport.relay(toBob());
    await transport.relay(toBob());
    const over = await refusalOf(transport.relay(toBob()));
    assert.deepEqual([over.type, over.httpStatus, over.retryAfter], ["send-rate-exceeded", 429, 1]);
    assert.equal(ses.received.length, 2, "the paced message must not reach SES");

    clock += 500; // one recipient's worth at 2 per second
    await transport.relay(toBob());
    assert.equal(ses.received.length, 3);
    assert.equal((await refusalOf(transport.relay(toBob()))).type, "send-rate-exceeded");

    // A message for more recipients than a second's worth goes from a full bucket and leaves a debt.
    clock += 1_000;
    await transport.relay(letter("alice@example.net", ["a@example.org", "b@example.org", "c@example.org", "d@example.org", "e@example.org"]));
    const debt = await refusalOf(transport.relay(toBob()));
    assert.equal(debt.retryAfter, 2);

    assert.equal(ses.actions.filter((a) => a === "GetSendQuota").length, 1);
    clock += 60_000;
    ses.quota.maxSendRate = 50;
    await transport.relay(toBob());
    await transport.relay(toBob());
    await transport.relay(toBob());
    assert.equal(ses.actions.filter((a) => a === "GetSendQuota").length, 2);
  });

  /** A transport on a fake clock whose first GetSendQuota fails with `failure`, the account's rate being 1 per second. */
  function quotaFailing(t: TestContext, failure: Parameters<typeof ses.failNext>[1]): { transport: ReturnType<typeof createSesTransport>; advance(ms: number): void } {
    fresh();
    ses.quota.maxSendRate = 1;
    t.after(() => (ses.quota.maxSendRate = 14));
    let clock = 1_700_000_000_000;
    const transport = createSesTransport(sesConfig(ses.url), { now: () => clock });
    t.after(() => transport.close?.());
    ses.failNext("GetSendQuota", failure);
    return { transport, advance: (ms) => (clock += ms) };
  }

  test("when the quota cannot be read, messages go unpaced and the quota is asked again a minute later", async (t) => {
    const { transport, advance } = quotaFailing(t, { status: 500, type: "Receiver", code: "InternalFailure", message: "The request processing has failed because of an unknown error." });
    for (let i = 0; i < 3; i++) await transport.relay(letter("alice@example.net", ["bob@example.org"]));
    assert.equal(ses.received.length, 3);

    advance(60_000);
    await transport.relay(letter("alice@example.net", ["bob@example.org"]));
    assert.equal((await refusalOf(transport.relay(letter("alice@example.net", ["bob@example.org"])))).type, "send-rate-exceeded");
    assert.deepEqual(
      ses.actions.filter((a) => a === "GetSendQuota"),
      ["GetSendQuota", "GetSendQuota"],
    );
  });

  test("without permission for GetSendQuota (a least-privilege role) the quota is asked once, and messages go unpaced", async (t) => {
    const { transport, advance } = quotaFailing(t, { status: 403, type: "Sender", code: "AccessDenied", message: "User is not authorized to perform: ses:GetSendQuota" });
    for (let i = 0; i < 3; i++) {
      await transport.relay(letter("alice@example.net", ["bob@example.org"]));
      advance(60_000);
    }
    assert.equal(ses.received.length, 3);
    assert.deepEqual(
      ses.actions.filter((a) => a === "GetSendQuota"),
      ["GetSendQuota"],
    );
  });
});
