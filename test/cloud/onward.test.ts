// The cloud's smtp and mx onward transports against loopback servers: upstream trouble defers every recipient,
// 8-bit messages go out as BODY=8BITMIME, password files must be private, MX delivery per domain with its results.
import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCloudConfig } from "../../cloud/config.js";
import { createMxTransport } from "../../cloud/onward/mx.js";
import type { OnwardMessage } from "../../cloud/onward/onward.js";
import { SecretFileError } from "../../shared/secret-file.js";
import { createSmtpTransport, type SmtpOnwardConfig } from "../../cloud/onward/smtp.js";
import { onwardFromConfig } from "../../cloud/serve.js";
import { mxRecords, startMxWorld, type MxWorld } from "../support/mx-world.js";
import { SmtpUpstream } from "../support/smtp-upstream.js";

const ACCOUNT = { user: "cloud-relay", pass: "upstream secret" };

function onwardMessage(recipients: string[], body = "From: alice@example.net\r\nSubject: test\r\n\r\nhello\r\n"): OnwardMessage {
  return { envelope: { sender: "alice@example.net", recipients: recipients.map((address) => ({ address })) }, raw: Buffer.from(body), headerFrom: ["alice@example.net"] };
}

describe("smtp transport", () => {
  let upstream: SmtpUpstream;
  let dir: string;
  before(async () => {
    upstream = await SmtpUpstream.start(ACCOUNT);
    dir = await mkdtemp(join(tmpdir(), "hr-cloud-onward-"));
  });
  after(async () => {
    await upstream.close();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => upstream.reset());

  const upstreamConfig = (change: Partial<SmtpOnwardConfig> = {}): SmtpOnwardConfig => ({
    transport: "smtp",
    host: "127.0.0.1",
    port: upstream.port,
    tls: "starttls",
    verify: false,
    auth: { user: ACCOUNT.user, password: ACCOUNT.pass, mechanism: "PLAIN" },
    ...change,
  });

  test("a wrong upstream password defers every recipient with 4.7.8 (the relay's problem, not the sender's)", async () => {
    const transport = createSmtpTransport(upstreamConfig({ auth: { user: ACCOUNT.user, password: "wrong", mechanism: "LOGIN" } }), "relay.example.net");
    const result = await transport.relay(onwardMessage(["bob@example.org", "carol@example.com"]));
    assert.deepEqual(
      result.results.map((r) => [r.recipient, r.status, r.dsn]),
      [
        ["bob@example.org", "deferred", "4.7.8"],
        ["carol@example.com", "deferred", "4.7.8"],
      ],
    );
    assert.match(result.results[0]!.detail, /said: 535 5\.7\.8 Error: authentication failed \(in reply to AUTH command\)/);
    assert.equal(upstream.messages.length, 0);
  });

  test("an upstream that refuses connections defers every recipient with 4.4.1", async () => {
    const closed = await SmtpUpstream.start(ACCOUNT);
    await closed.close();
    const transport = createSmtpTransport(upstreamConfig({ port: closed.port }), "relay.example.net");
    const result = await transport.relay(onwardMessage(["bob@example.org"]));
    assert.deepEqual(result.results, [{ recipient: "bob@example.org", status: "deferred", dsn: "4.4.1", detail: `connect to 127.0.0.1[127.0.0.1]:${closed.port}: Connection refused` }]);
  });

  test("an upstream certificate that does not verify defers every recipient with 4.7.5", async () => {
    // The upstream's certificate is self-signed, so `verify: true` cannot accept it.
    const transport = createSmtpTransport(upstreamConfig({ verify: true }), "relay.example.net");
    const result = await transport.relay(onwardMessage(["bob@example.org"]));
    assert.deepEqual(result.results.map((r) => [r.status, r.dsn]), [["deferred", "4.7.5"]]);
    assert.match(result.results[0]!.detail, /^TLS handshake with 127\.0\.0\.1\[127\.0\.0\.1\]:\d+ failed: /);
    assert.equal(upstream.messages.length, 0);
  });

  test("a message with 8-bit bytes goes out with BODY=8BITMIME, a 7-bit one without", async () => {
    const transport = createSmtpTransport(upstreamConfig(), "relay.example.net");
    await transport.relay(onwardMessage(["bob@example.org"]));
    await transport.relay(onwardMessage(["bob@example.org"], "From: alice@example.net\r\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nGrüße\r\n"));
    assert.deepEqual(
      upstream.messages.map((m) => m.mailArgs.BODY),
      [undefined, "8BITMIME"],
    );
  });

  test("recipients with different NOTIFY go in separate transactions; the results keep envelope order", async () => {
    const transport = createSmtpTransport(upstreamConfig(), "relay.example.net");
    const message = onwardMessage([]);
    message.envelope.recipients = [{ address: "bob@example.org", notify: ["NEVER"] }, { address: "carol@example.com" }, { address: "dave@example.org", notify: ["NEVER"] }];
    const result = await transport.relay(message);
    assert.deepEqual(result.results.map((r) => [r.recipient, r.status]), [
      ["bob@example.org", "sent"],
      ["carol@example.com", "sent"],
      ["dave@example.org", "sent"],
    ]);
    assert.deepEqual(upstream.messages.map((m) => m.rcptTo.map((r) => r.address)), [["bob@example.org", "dave@example.org"], ["carol@example.com"]]);
  });

  test("a password file others may read is refused at start; a private one is used", async () => {
    const file = join(dir, "upstream-password");
    await writeFile(file, `${ACCOUNT.pass}\n`);
    await chmod(file, 0o644);
    const config = upstreamConfig({ auth: { user: ACCOUNT.user, passwordFile: file, mechanism: "PLAIN" } });
    assert.throws(() => createSmtpTransport(config, "relay.example.net"), SecretFileError);
    await chmod(file, 0o600);
    const result = await createSmtpTransport(config, "relay.example.net").relay(onwardMessage(["bob@example.org"]));
    assert.equal(result.results[0]!.status, "sent");
    assert.equal(upstream.messages[0]!.user, ACCOUNT.user);
  });
});

describe("mx transport", () => {
  let world: MxWorld;
  before(async () => {
    world = await startMxWorld(["mx1.example.org", "mx.example.com"]);
  });
  after(() => world.close());
  beforeEach(() =>
    world.setZone({
      "example.org": mxRecords(["mx1.example.org", 10]),
      "example.com": mxRecords(["mx.example.com", 10]),
    }),
  );

  const transport = () => createMxTransport({ transport: "mx", helo: "relay.example.net", port: world.port, dns: { servers: [world.dns.server], timeout: 1 }, tlsPolicy: "may" });

  test("each domain goes to its own MX host; 2xx sent, 4xx deferred, 5xx failed, unknown domains failed", async () => {
    world.host("mx1.example.org").behave({ rcpt: { "greylisted@example.org": { code: 450, text: "4.2.0 Greylisted, try again" } } });
    world.host("mx.example.com").behave({ rcpt: { "nobody@example.com": { code: 550, text: "5.1.1 User unknown" } } });
    const result = await transport().relay(onwardMessage(["bob@example.org", "carol@example.com", "greylisted@example.org", "nobody@example.com", "x@nonexistent.example"]));
    assert.deepEqual(
      result.results.map((r) => [r.recipient, r.status, r.dsn]),
      [
        ["bob@example.org", "sent", "2.0.0"],
        ["carol@example.com", "sent", "2.0.0"],
        ["greylisted@example.org", "deferred", "4.2.0"],
        ["nobody@example.com", "failed", "5.1.1"],
        ["x@nonexistent.example", "failed", "5.4.4"],
      ],
    );
    const mx1 = world.host("mx1.example.org").messages;
    const mx2 = world.host("mx.example.com").messages;
    assert.deepEqual(mx1.map((m) => [m.helo, m.secure, m.mailFrom, m.rcptTo.map((r) => r.address)]), [["relay.example.net", true, "alice@example.net", ["bob@example.org"]]]);
    assert.deepEqual(mx2.map((m) => m.rcptTo.map((r) => r.address)), [["carol@example.com"]]);
    world.reset();
  });
});

test("onwardFromConfig builds the transport the configuration names", async () => {
  const base = { authority: ["relay.example.net"], keys: [{ id: "k", publicKey: Buffer.alloc(32, 1).toString("base64"), senders: ["*"] }], store: "/nonexistent" };
  const names = [];
  for (const onward of [{ transport: "ses", region: "eu-west-1" }, { transport: "smtp", host: "127.0.0.1" }, { transport: "mx", helo: "relay.example.net" }]) {
    const transport = await onwardFromConfig(parseCloudConfig(JSON.stringify({ ...base, onward }), "onward.yaml"));
    names.push(transport.name);
    await transport.close?.();
  }
  assert.deepEqual(names, ["ses", "smtp", "mx"]);
});
