// The cloud's signed message protocol through the Node entry on loopback, onward to an SMTP upstream with AUTH:
// relaying with per-recipient results, idempotency, and every way a request is refused (problem type, nothing relayed).
import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { gzipSync } from "node:zlib";
import { acceptSignature } from "../../cloud/app.js";
import { parseCloudConfig } from "../../cloud/config.js";
import { PROBLEM_BASE } from "../../shared/problem-details.js";
import { serveCloud, type CloudServer } from "../../cloud/serve.js";
import { createMailLog } from "../../shared/log.js";
import { contentDigest } from "../../shared/protocol/content-digest.js";
import { BARE_COMPONENTS, MESSAGE_COMPONENTS } from "../../shared/protocol/signed-request.js";
import { makeKey, send, signed, submission, type Answer, type SignWith, type Submission, type TestKey, type WireRequest } from "../support/cloud-client.js";
import { SmtpUpstream } from "../support/smtp-upstream.js";

const AUTHORITY = "relay.example.net";
const ACCOUNT = { user: "cloud-relay", pass: "upstream secret" };
const MAX_SIZE = 64 * 1024;
const home = makeKey("home-1");
const bouncer = makeKey("bouncer");
const slow = makeKey("slow");
const stranger = makeKey("stranger");

let upstream: SmtpUpstream;
let server: CloudServer;
let dir: string;
const logLines: string[] = [];

before(async () => {
  upstream = await SmtpUpstream.start(ACCOUNT);
  dir = await mkdtemp(join(tmpdir(), "hr-cloud-app-"));
  const config = parseCloudConfig(
    JSON.stringify({
      listen: "127.0.0.1:0",
      authority: [AUTHORITY, "relay2.example.net"],
      keys: [
        { id: home.id, publicKey: home.publicKey, senders: ["*@example.net"] },
        { id: bouncer.id, publicKey: bouncer.publicKey, senders: ["*@example.net"], nullSender: true },
        { id: slow.id, publicKey: slow.publicKey, senders: ["*@example.net"], ratePerMinute: 1 },
      ],
      onward: { transport: "smtp", host: "127.0.0.1", port: upstream.port, tls: "starttls", verify: false, auth: { user: ACCOUNT.user, password: ACCOUNT.pass } },
      store: join(dir, "store"),
      maxMessageSize: MAX_SIZE,
    }),
    "app.test.yaml",
  );
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
      done();
    },
  });
  server = await serveCloud(config, createMailLog({ format: "json", level: "info", destination: sink }, "cloud"));
});
after(async () => {
  await server.close();
  await upstream.close();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => upstream.reset());

/** A message from `from` with a marker line in its body. */
function message(from = "Alice <alice@example.net>", text = "Hello Bob"): Buffer {
  return Buffer.from(`From: ${from}\r\nTo: bob@example.org\r\nSubject: ${text}\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@example.net>\r\n\r\n${text}\r\n`);
}

const standard: Submission = { body: message(), envelopeFrom: "<alice@example.net>", envelopeTo: "<bob@example.org>" };

/** Sign `s` with `key` and send it; `tamper` changes the request after signing. */
async function post(s: Partial<Submission> = {}, key: TestKey = home, o: SignWith = {}, tamper?: (r: WireRequest) => void): Promise<Answer> {
  const request = await signed(submission(AUTHORITY, { ...standard, ...s }), key, o);
  tamper?.(request);
  return send(server.port, request);
}

/** The answer is the problem `type` with `status`, and the upstream saw nothing at all. */
function assertRefused(answer: Answer, status: number, type: string): void {
  assert.equal(answer.status, status, answer.text);
  assert.equal(answer.headers["content-type"], "application/problem+json");
  assert.equal(answer.json?.type, PROBLEM_BASE + type, answer.text);
  assert.equal(answer.json?.status, status);
  assert.equal(typeof answer.json?.title, "string");
  assert.equal(typeof answer.json?.detail, "string");
  assert.equal(upstream.connections, 0, "the upstream was contacted");
  assert.equal(upstream.messages.length, 0, "the upstream received a message");
}

const MESSAGE_ACCEPT = 'hr=("@method" "@authority" "@path" "content-type" "content-digest" "envelope-from" "envelope-to" "idempotency-key");created;nonce;alg="ed25519"';

describe("relaying onward", () => {
  test("a signed message is relayed to the upstream with AUTH over STARTTLS, bytes and envelope unchanged", async () => {
    const body = message();
    const answer = await post({ body, envelopeTo: "<bob@example.org>, <carol@example.com>" });
    assert.equal(answer.status, 200, answer.text);
    assert.equal(answer.headers["content-type"], "application/json");
    assert.equal(typeof answer.json?.id, "string");
    const results = answer.json?.results as { recipient: string; status: string; dsn: string; detail: string }[];
    assert.deepEqual(
      results.map((r) => [r.recipient, r.status, r.dsn]),
      [
        ["bob@example.org", "sent", "2.0.0"],
        ["carol@example.com", "sent", "2.0.0"],
      ],
    );
    assert.equal(results[0]!.detail, "250 2.0.0 Ok: queued as up-1");
    assert.equal(upstream.messages.length, 1);
    const [received] = upstream.messages;
    assert.equal(received!.user, ACCOUNT.user);
    assert.equal(received!.secure, true);
    assert.equal(received!.helo, AUTHORITY);
    assert.equal(received!.mailFrom, "alice@example.net");
    assert.deepEqual(received!.rcptTo.map((r) => r.address), ["bob@example.org", "carol@example.com"]);
    assert.deepEqual(received!.raw, body);
  });

  test("DSN parameters of the envelope fields reach the upstream", async () => {
    const answer = await post({ envelopeFrom: "<alice@example.net>; ret=hdrs; envid=q1", envelopeTo: "<bob@example.org>; notify=success,failure; orcpt=rfc822;bob@example.org" });
    assert.equal(answer.status, 200, answer.text);
    const [received] = upstream.messages;
    assert.equal(received!.mailArgs.RET, "HDRS");
    assert.equal(received!.mailArgs.ENVID, "q1");
    assert.deepEqual(received!.rcptTo[0]!.args, { NOTIFY: "SUCCESS,FAILURE", ORCPT: "rfc822;bob@example.org" });
  });

  test("per recipient: a 4xx is deferred with 4.x.x, a 5xx failed with 5.x.x, the rest sent", async () => {
    upstream.rcpt = {
      "bob@example.org": { code: 450, text: "4.2.0 <bob@example.org>: Recipient address rejected: Greylisted" },
      "carol@example.com": { code: 550, text: "5.1.1 <carol@example.com>: Recipient address rejected: User unknown" },
    };
    const answer = await post({ envelopeTo: "<bob@example.org>, <carol@example.com>, <dave@example.org>" });
    assert.equal(answer.status, 200, answer.text);
    const results = answer.json?.results as { recipient: string; status: string; dsn: string; detail: string }[];
    assert.deepEqual(
      results.map((r) => [r.recipient, r.status, r.dsn]),
      [
        ["bob@example.org", "deferred", "4.2.0"],
        ["carol@example.com", "failed", "5.1.1"],
        ["dave@example.org", "sent", "2.0.0"],
      ],
    );
    assert.equal(results[1]!.detail, "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <carol@example.com>: Recipient address rejected: User unknown (in reply to RCPT TO command)");
    assert.deepEqual(upstream.messages.map((m) => m.rcptTo.map((r) => r.address)), [["dave@example.org"]]);
  });

  test("an answer of deferrals only is not kept: a retry with the same Idempotency-Key relays again", async () => {
    upstream.rcpt = { "bob@example.org": { code: 451, text: "4.3.0 Try again later" } };
    const first = await post({ idempotencyKey: '"all-deferred"' });
    assert.deepEqual((first.json?.results as { status: string }[]).map((r) => r.status), ["deferred"]);
    upstream.rcpt = {};
    const retry = await post({ idempotencyKey: '"all-deferred"' });
    assert.equal(retry.status, 200, retry.text);
    assert.deepEqual((retry.json?.results as { status: string }[]).map((r) => r.status), ["sent"]);
    assert.equal(upstream.messages.length, 1);
  });

  test("a null sender needs its own permission: refused for a key without it, relayed with <> for one with it", async () => {
    const bounce = { envelopeFrom: "<>", body: message("Mail Delivery System <MAILER-DAEMON@example.net>", "Undelivered Mail") };
    assertRefused(await post(bounce, home), 403, "null-sender-not-allowed");
    const answer = await post(bounce, bouncer);
    assert.equal(answer.status, 200, answer.text);
    assert.equal(upstream.messages[0]!.mailFrom, "");
  });

  test("a gzip body is accepted and relayed decompressed", async () => {
    const body = message("alice@example.net", "compressed");
    const answer = await post({ body: gzipSync(body), contentEncoding: "gzip" });
    assert.equal(answer.status, 200, answer.text);
    assert.deepEqual(upstream.messages[0]!.raw, body);
  });
});

describe("idempotency", () => {
  test("a retry with the same key, body and envelope gets the same answer and is relayed once", async () => {
    const s = { body: message(), idempotencyKey: '"retry-1"' };
    const first = await post(s);
    assert.equal(first.status, 200, first.text);
    const again = await post(s);
    assert.equal(again.status, 200, again.text);
    assert.deepEqual(again.json, first.json);
    assert.equal(upstream.messages.length, 1);
    assert.equal(upstream.connections, 1);
  });

  test("the same key with a different body is 422 and not relayed", async () => {
    assert.equal((await post({ body: message(), idempotencyKey: '"reused-body"' })).status, 200);
    upstream.reset();
    assertRefused(await post({ body: message(undefined, "another text"), idempotencyKey: '"reused-body"' }), 422, "idempotency-key-reused");
  });

  test("the same key with a different envelope is 422 and not relayed", async () => {
    const body = message();
    assert.equal((await post({ body, idempotencyKey: '"reused-envelope"' })).status, 200);
    upstream.reset();
    assertRefused(await post({ body, idempotencyKey: '"reused-envelope"', envelopeTo: "<carol@example.com>" }), 422, "idempotency-key-reused");
  });

  test("a duplicate while the first is still being relayed is 409; the first then succeeds, relayed once", async () => {
    const gate = upstream.hold();
    const s = { body: message(), idempotencyKey: '"concurrent"' };
    const first = post(s);
    const deadline = Date.now() + 10_000;
    while (upstream.held === 0) {
      assert.ok(Date.now() < deadline, "the first request never reached the end of DATA");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const duplicate = await post(s);
    assert.equal(duplicate.status, 409, duplicate.text);
    assert.equal(duplicate.json?.type, `${PROBLEM_BASE}idempotency-in-progress`);
    gate.release();
    assert.equal((await first).status, 200);
    assert.equal(upstream.messages.length, 1);
    assert.equal(upstream.connections, 1);
  });
});

describe("signatures", () => {
  test("an unsigned request is 401 with Accept-Signature naming the required components", async () => {
    const answer = await send(server.port, submission(AUTHORITY, standard));
    assertRefused(answer, 401, "signature-missing");
    assert.equal(answer.headers["accept-signature"], MESSAGE_ACCEPT);
    assert.equal(acceptSignature(MESSAGE_COMPONENTS), MESSAGE_ACCEPT);
  });

  test("any signature label is accepted", async () => {
    assert.equal((await post({}, home, { label: "sig-b26" })).status, 200);
  });

  const tampered: [string, SignWith, (r: WireRequest) => void][] = [
    ["@method", {}, (r) => (r.method = "POST")],
    ["@authority", {}, (r) => (r.host = "relay2.example.net")],
    ["@path", {}, (r) => (r.path = "/v1/messages")],
    ["content-type", {}, (r) => (r.headers["content-type"] = "message/rfc822; charset=utf-8")],
    ["envelope-from", {}, (r) => (r.headers["envelope-from"] = "<eve@example.net>")],
    ["envelope-to", {}, (r) => (r.headers["envelope-to"] = "<bob@example.org>, <mallory@example.com>")],
    ["idempotency-key", {}, (r) => (r.headers["idempotency-key"] = '"another-key"')],
    [
      "content-digest",
      {},
      (r) => {
        r.body = message(undefined, "a different message");
        r.headers["content-digest"] = contentDigest(r.body);
      },
    ],
    ["signature bytes", {}, (r) => (r.headers.signature = r.headers.signature!.replace(/:(.)/, (_, c: string) => `:${c === "A" ? "B" : "A"}`))],
  ];
  for (const [component, o, tamper] of tampered) {
    test(`${component} changed after signing is 401 bad-signature, nothing relayed`, async () => {
      const request = submission(AUTHORITY, { ...standard, body: message() });
      // What the signer saw differs from what is sent: sign a variant, then send the original.
      if (component === "@method") request.method = "PUT";
      if (component === "@path") request.path = "/v1/messages/other";
      const signedRequest = await signed(request, home, o);
      tamper(signedRequest);
      assertRefused(await send(server.port, signedRequest), 401, "bad-signature");
    });
  }

  test("content-encoding changed after signing is 401 bad-signature", async () => {
    const request = await signed(submission(AUTHORITY, { ...standard, body: gzipSync(message()), contentEncoding: "gzip" }), home);
    request.headers["content-encoding"] = "identity";
    assertRefused(await send(server.port, request), 401, "bad-signature");
  });

  test("a signature that leaves out content-encoding when it is present is 401 signature-incomplete", async () => {
    const answer = await post({ body: gzipSync(message()), contentEncoding: "gzip" }, home, { components: MESSAGE_COMPONENTS });
    assertRefused(answer, 401, "signature-incomplete");
    assert.equal(answer.headers["accept-signature"], MESSAGE_ACCEPT.replace('"idempotency-key")', '"idempotency-key" "content-encoding")'));
  });

  test("a signature that leaves out a required component is 401 signature-incomplete", async () => {
    assertRefused(await post({}, home, { components: MESSAGE_COMPONENTS.filter((c) => c !== "envelope-to") }), 401, "signature-incomplete");
  });

  test("an unknown key is 401 unknown-key", async () => {
    assertRefused(await post({}, stranger), 401, "unknown-key");
  });

  test("a Host that is not a configured authority is 401 wrong-authority", async () => {
    const request = await signed(submission("relay.attacker.example", standard), home);
    assertRefused(await send(server.port, request), 401, "wrong-authority");
  });

  test("created more than the window ago is 401 signature-expired", async () => {
    assertRefused(await post({}, home, { created: Math.floor(Date.now() / 1000) - 301 }), 401, "signature-expired");
  });

  test("created more than the window in the future is 401 signature-expired", async () => {
    assertRefused(await post({}, home, { created: Math.floor(Date.now() / 1000) + 301 }), 401, "signature-expired");
  });

  test("the same signed request sent twice: the second is 401 replayed and not relayed", async () => {
    const request = await signed(submission(AUTHORITY, { ...standard, body: message() }), home);
    assert.equal((await send(server.port, request)).status, 200);
    upstream.reset();
    assertRefused(await send(server.port, request), 401, "replayed");
  });

  test("a Signature-Input that is not a dictionary is 401 signature-malformed", async () => {
    assertRefused(await post({}, home, {}, (r) => (r.headers["signature-input"] = "hr=(")), 401, "signature-malformed");
  });
});

describe("authorization", () => {
  test("a key not allowed for the envelope sender is 403 sender-not-allowed", async () => {
    assertRefused(await post({ envelopeFrom: "<alice@example.org>", body: message("alice@example.org") }), 403, "sender-not-allowed");
  });

  test("a key not allowed for the header From: is 403 from-not-allowed", async () => {
    assertRefused(await post({ body: message("Boss <ceo@bank.example>") }), 403, "from-not-allowed");
  });

  test("a message without a From: header field is 400 bad-message", async () => {
    assertRefused(await post({ body: Buffer.from("To: bob@example.org\r\nSubject: no from\r\n\r\nbody\r\n") }), 400, "bad-message");
  });

  test("past the key's rate the request is 429 with Retry-After", async () => {
    assert.equal((await post({}, slow)).status, 200);
    upstream.reset();
    const answer = await post({}, slow);
    assertRefused(answer, 429, "rate-limited");
    const wait = Number(answer.headers["retry-after"]);
    assert.ok(wait >= 1 && wait <= 60, `Retry-After ${answer.headers["retry-after"]}`);
  });
});

describe("malformed requests", () => {
  test("a body that does not match its Content-Digest is 400 digest-mismatch", async () => {
    assertRefused(await post({}, home, {}, (r) => (r.body = message(undefined, "changed in transit"))), 400, "digest-mismatch");
  });

  test("a request without Content-Digest is 400 missing-field", async () => {
    const request = await signed(submission(AUTHORITY, standard), home, { components: MESSAGE_COMPONENTS.filter((c) => c !== "content-digest") });
    delete request.headers["content-digest"];
    const answer = await send(server.port, request);
    assertRefused(answer, 400, "missing-field");
    assert.match(String(answer.json?.detail), /content-digest/);
  });

  test("a Content-Digest without sha-256 or sha-512 is 400 bad-content-digest", async () => {
    const request = submission(AUTHORITY, standard);
    request.headers["content-digest"] = "md5=:AAAA:";
    assertRefused(await send(server.port, await signed(request, home)), 400, "bad-content-digest");
  });

  for (const [what, fields] of [
    ["Envelope-From without brackets", { envelopeFrom: "alice@example.net" }],
    ["an unknown Envelope-From parameter", { envelopeFrom: "<alice@example.net>; size=100" }],
    ["a bad notify", { envelopeTo: "<bob@example.org>; notify=never,success" }],
    ["an empty Envelope-To", { envelopeTo: "" }],
    ["a recipient that is no address", { envelopeTo: "<bob>" }],
  ] as const) {
    test(`${what} is 400 bad-envelope`, async () => {
      assertRefused(await post(fields), 400, "bad-envelope");
    });
  }

  test("an Idempotency-Key that is not a quoted string is 400 bad-idempotency-key", async () => {
    assertRefused(await post({ idempotencyKey: "token-not-string" }), 400, "bad-idempotency-key");
  });

  test("a query string is 400 query-not-allowed", async () => {
    const request = await signed(submission(AUTHORITY, standard), home);
    request.path = "/v1/messages?x=1";
    assertRefused(await send(server.port, request), 400, "query-not-allowed");
  });

  test("a body that is not message/rfc822 is 415 unsupported-media-type", async () => {
    assertRefused(await post({}, home, {}, (r) => (r.headers["content-type"] = "text/plain")), 415, "unsupported-media-type");
  });

  test("a content coding other than gzip is 415 unsupported-content-encoding", async () => {
    assertRefused(await post({ contentEncoding: "br" }), 415, "unsupported-content-encoding");
  });

  test("a body larger than the maximum, announced by Content-Length, is 413 too-large", async () => {
    const body = Buffer.concat([message(), Buffer.alloc(MAX_SIZE, "x")]);
    assertRefused(await post({ body }), 413, "too-large");
  });

  test("a body larger than the maximum, sent chunked without Content-Length, is 413 too-large", async () => {
    const body = Buffer.concat([message(), Buffer.alloc(MAX_SIZE, "x")]);
    assertRefused(await post({ body }, home, {}, (r) => (r.chunked = true)), 413, "too-large");
  });

  test("a gzip bomb (small when sent, huge decompressed) is 413 too-large", async () => {
    const bomb = gzipSync(Buffer.concat([message(), Buffer.alloc(50 * 1024 * 1024)]));
    assert.ok(bomb.length < MAX_SIZE);
    assertRefused(await post({ body: bomb, contentEncoding: "gzip" }), 413, "too-large");
  });

  test("a body declared gzip that is not is 400 bad-content-encoding", async () => {
    assertRefused(await post({ contentEncoding: "gzip" }), 400, "bad-content-encoding");
  });

  test("GET /v1/messages is 405 with Allow: POST; an unknown path is 404", async () => {
    const answer = await send(server.port, { method: "GET", path: "/v1/messages", host: AUTHORITY, headers: {} });
    assertRefused(answer, 405, "method-not-allowed");
    assert.equal(answer.headers.allow, "POST");
    assertRefused(await send(server.port, { method: "GET", path: "/v2/messages", host: AUTHORITY, headers: {} }), 404, "not-found");
  });
});

describe("info, whoami, health and the log", () => {
  test("GET /v1/info (unsigned) gives the protocol version, the required components and the maximum size", async () => {
    const answer = await send(server.port, { method: "GET", path: "/v1/info", host: AUTHORITY, headers: {} });
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.json, {
      protocol: 1,
      signature: { algorithm: "ed25519", components: MESSAGE_COMPONENTS, componentsWhenPresent: ["content-encoding"], window: 300 },
      contentEncodings: ["gzip"],
      maxMessageSize: MAX_SIZE,
    });
  });

  test("GET /v1/whoami signed gives the caller's address and key id; unsigned it is 401", async () => {
    const request = await signed({ method: "GET", path: "/v1/whoami", host: AUTHORITY, headers: {} }, home, { components: BARE_COMPONENTS });
    const answer = await send(server.port, request);
    assert.equal(answer.status, 200, answer.text);
    assert.deepEqual(answer.json, { ip: "127.0.0.1", keyid: home.id });
    assertRefused(await send(server.port, request), 401, "replayed");
    const unsigned = await send(server.port, { method: "GET", path: "/v1/whoami", host: AUTHORITY, headers: {} });
    assertRefused(unsigned, 401, "signature-missing");
    assert.equal(unsigned.headers["accept-signature"], 'hr=("@method" "@authority" "@path");created;nonce;alg="ed25519"');
  });

  test("GET /healthz is 200", async () => {
    const answer = await send(server.port, { method: "GET", path: "/healthz", host: AUTHORITY, headers: {} });
    assert.equal(answer.status, 200);
    assert.equal(answer.text, "ok\n");
  });

  test("one JSON log line per request with key id, status, recipients and results; no keys, signatures or bodies", async () => {
    upstream.rcpt = { "carol@example.com": { code: 550, text: "5.1.1 User unknown" } };
    const marker = "body-marker-that-must-not-be-logged";
    const request = await signed(submission(AUTHORITY, { ...standard, body: message(undefined, marker), envelopeTo: "<bob@example.org>, <carol@example.com>" }), home);
    const from = logLines.length;
    assert.equal((await send(server.port, request)).status, 200);
    const lines = logLines.slice(from).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.msg, `POST /v1/messages status=200 client=127.0.0.1 keyid=${home.id} rcpt=2 sent=1 deferred=0 failed=1 duration=${(lines[0]!.duration as number).toFixed(3)}`);
    assert.deepEqual([lines[0]!.keyid, lines[0]!.status, lines[0]!.recipients, lines[0]!.results], [home.id, 200, 2, { sent: 1, deferred: 0, failed: 1 }]);
    const everything = logLines.join("\n");
    for (const secret of [marker, request.headers.signature!.slice(4, -1), home.publicKey, Buffer.from(home.seed).toString("base64"), ACCOUNT.pass]) {
      assert.ok(!everything.includes(secret), `the log contains ${secret}`);
    }
  });
});

describe("the JSON form (scripts away from home)", () => {
  /** Sign and send `json` as application/json with the envelope fields given. */
  async function postJson(json: unknown, envelopeFrom = "<alice@example.net>", envelopeTo = "<bob@example.org>"): Promise<Answer> {
    const request = submission(AUTHORITY, { body: Buffer.from(typeof json === "string" ? json : JSON.stringify(json)), envelopeFrom, envelopeTo });
    request.headers["content-type"] = "application/json";
    return send(server.port, await signed(request, home));
  }

  test("a JSON message is composed with MailComposer and relayed with the signed envelope", async () => {
    const answer = await postJson({ from: "Alice <alice@example.net>", to: "bob@example.org", subject: "Grüße aus dem Keller", text: "The backup is done.\n" });
    assert.equal(answer.status, 200, answer.text);
    assert.equal(upstream.messages.length, 1);
    const [received] = upstream.messages;
    assert.equal(received!.mailFrom, "alice@example.net");
    assert.deepEqual(received!.rcptTo.map((r) => r.address), ["bob@example.org"]);
    const text = received!.raw.toString("latin1");
    assert.match(text, /^From: Alice <alice@example\.net>\r$/m);
    assert.match(text, /^Subject: =\?UTF-8\?Q\?Gr=C3=BC=C3=9Fe_aus_dem_Keller\?=\r$/m);
    assert.match(text, new RegExp(`^Message-ID: <[0-9a-f-]{36}@${AUTHORITY.replace(/\./g, "\\.")}>\\r$`, "m"));
    assert.match(text, /\r\n\r\nThe backup is done\.\r\n$/);
  });

  test("an envelope that differs from the signed Envelope-To is 400 bad-envelope, nothing relayed", async () => {
    assertRefused(await postJson({ from: "alice@example.net", to: "bob@example.org" }, "<alice@example.net>", "<carol@example.com>"), 400, "bad-envelope");
  });

  test("broken JSON is 400 invalid-json; a subject with CR LF is 400 header-injection; a From: the key may not use is 403", async () => {
    assertRefused(await postJson('{"from": "alice@example.net", "to": '), 400, "invalid-json");
    assertRefused(await postJson({ from: "alice@example.net", to: "bob@example.org", subject: "hi\r\nBcc: victim@example.com" }), 400, "header-injection");
    assertRefused(await postJson({ from: "ceo@bank.example", to: "bob@example.org", envelope: { from: "alice@example.net", to: "bob@example.org" } }), 403, "from-not-allowed");
  });
});
