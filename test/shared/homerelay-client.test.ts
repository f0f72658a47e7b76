// The typed client (`homerelay/client`) against the real halves on loopback: the agent's local API
// (JSON and raw submissions, status, problems as HomerelayError) and a cloud's Node entry (a raw
// message signed with RFC 9421, relayed to an SMTP upstream; a key the cloud does not know).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { simpleParser } from "mailparser";
import type { CloudServer } from "../../cloud/serve.js";
import { HomerelayClient, HomerelayError } from "../../shared/client/homerelay-client.js";
import { pkcs8PemFromSeed } from "../../shared/protocol/ed25519.js";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { makeKey } from "../support/cloud-client.js";
import { OTHER_TOKEN, TOKEN, apiPort, httpSection, startCloudRelay } from "../support/http-api.js";
import { LOCAL_CONFIG, LOCAL_RCPT, pollUntil } from "../support/queue-durability.js";
import { SmtpUpstream } from "../support/smtp-upstream.js";

test("the package exports the client as homerelay/client", async () => {
  // A specifier TypeScript does not resolve at compile time: the package's exports map decides.
  const specifier = "homerelay/client";
  const exported = (await import(specifier)) as Record<string, unknown>;
  assert.equal(typeof exported.HomerelayClient, "function");
  assert.equal(typeof exported.HomerelayError, "function");
});

describe("the agent's local API", () => {
  let agent: AgentProcess;
  let url: string;
  before(async () => {
    agent = await startAgent({ ...LOCAL_CONFIG, http: httpSection() });
    url = `http://127.0.0.1:${apiPort(agent)}/`;
  });
  after(() => agent.cleanup());

  test("send queues a JSON message; status follows it until it is delivered", async () => {
    const client = new HomerelayClient({ url, token: TOKEN });
    const result = await client.send({ from: "cron@home.example.net", to: LOCAL_RCPT, subject: "from the client", text: "typed\n" });
    assert.equal(result.kind, "queued");
    assert.match(result.id, /^[0-9A-HJKMNP-TV-Z]{16}$/);
    assert.equal(result.statusUrl, `${url}v1/messages/${result.id}`);
    await pollUntil("the client sees the message delivered", async () => (await client.status(result.id)).state === "done");
    const status = await client.status(result.id);
    assert.deepEqual(status.recipients.map((r) => [r.recipient, r.status, r.relay]), [[LOCAL_RCPT, "sent", "local"]]);
  });

  test("sendRaw queues a message/rfc822 body with its envelope", async () => {
    const client = new HomerelayClient({ url, token: OTHER_TOKEN });
    const result = await client.sendRaw(Buffer.from("From: other@example.com\r\nSubject: raw\r\n\r\nbody\r\n"), { from: "", to: [LOCAL_RCPT] });
    assert.equal(result.kind, "queued");
    assert.deepEqual(result.envelope, { from: "", to: [LOCAL_RCPT] });
  });

  test("refusals are HomerelayErrors carrying the problem; a malformed message never leaves the client", async () => {
    let requests = 0;
    const counting: typeof fetch = (input, init) => {
      requests++;
      return fetch(input, init);
    };
    const client = new HomerelayClient({ url, token: TOKEN, fetch: counting });
    await assert.rejects(client.send({ from: "ceo@bank.example", to: LOCAL_RCPT }), (err: HomerelayError) => {
      assert.ok(err instanceof HomerelayError);
      assert.equal(err.status, 403);
      assert.equal(err.problem?.type, "https://homerelay.dev/problems/sender-not-allowed");
      return true;
    });
    assert.equal(requests, 1);
    await assert.rejects(client.send({ from: "cron@home.example.net", to: LOCAL_RCPT, subject: "a\r\nBcc: victim@example.com" }), (err: HomerelayError) => {
      assert.equal(err.status, 400);
      assert.equal(err.problem?.type, "https://homerelay.dev/problems/header-injection");
      return true;
    });
    assert.equal(requests, 1, "refused before any request");
    await assert.rejects(new HomerelayClient({ url, token: "not-a-token-0123456789" }).status("0VJ3Q8M2ZK4T7R1A"), (err: HomerelayError) => {
      assert.equal(err.status, 401);
      assert.equal(err.problem?.type, "https://homerelay.dev/problems/bad-token");
      return true;
    });
  });
});

describe("a cloud", () => {
  const key = makeKey("home-1");
  let upstream: SmtpUpstream;
  let cloud: CloudServer;
  let store: string;
  before(async () => {
    upstream = await SmtpUpstream.start({ user: "u", pass: "p" });
    store = await mkdtemp(join(tmpdir(), "hr-client-cloud-"));
    cloud = await startCloudRelay(key, upstream, store);
  });
  after(async () => {
    await cloud.close();
    await upstream.close();
    await rm(store, { recursive: true, force: true });
  });

  test("sendRaw signs the message with the key's PEM; the cloud relays it and says so per recipient", async () => {
    const client = new HomerelayClient({ url: `http://127.0.0.1:${cloud.port}`, keyId: key.id, privateKey: pkcs8PemFromSeed(key.seed) });
    const raw = Buffer.from("From: Alice <alice@example.net>\r\nTo: bob@example.org\r\nSubject: signed by the client\r\n\r\nhello cloud\r\n");
    const result = await client.sendRaw(raw, { from: "alice@example.net", to: ["bob@example.org", "carol@example.org"] });
    assert.equal(result.kind, "relayed");
    assert.deepEqual(
      result.results.map((r) => [r.recipient, r.status, r.dsn]),
      [
        ["bob@example.org", "sent", "2.0.0"],
        ["carol@example.org", "sent", "2.0.0"],
      ],
    );
    const [relayed] = upstream.messages;
    assert.ok(relayed);
    assert.equal(relayed.mailFrom, "alice@example.net");
    assert.deepEqual(relayed.rcptTo.map((r) => r.address), ["bob@example.org", "carol@example.org"]);
    assert.equal((await simpleParser(relayed.raw)).subject, "signed by the client");
  });

  test("a retry with the same idempotency key gets the first answer without a second relay", async () => {
    const client = new HomerelayClient({ url: `http://127.0.0.1:${cloud.port}`, keyId: key.id, privateKey: key.seed });
    const before = upstream.messages.length;
    const raw = Buffer.from("From: alice@example.net\r\nSubject: once\r\n\r\nonce\r\n");
    const first = await client.sendRaw(raw, { from: "alice@example.net", to: ["bob@example.org"] }, { idempotencyKey: "client-retry-1" });
    const again = await client.sendRaw(raw, { from: "alice@example.net", to: ["bob@example.org"] }, { idempotencyKey: "client-retry-1" });
    assert.deepEqual(again, first);
    assert.equal(upstream.messages.length, before + 1);
  });

  test("a key the cloud does not know is a HomerelayError 401 with the cloud's problem type", async () => {
    const stranger = makeKey("stranger");
    const client = new HomerelayClient({ url: `http://127.0.0.1:${cloud.port}`, keyId: stranger.id, privateKey: stranger.seed });
    await assert.rejects(client.sendRaw(Buffer.from("From: alice@example.net\r\n\r\nx\r\n"), { from: "alice@example.net", to: ["bob@example.org"] }), (err: HomerelayError) => {
      assert.equal(err.status, 401);
      assert.equal(err.problem?.type, "https://homerelay.dev/problems/unknown-key");
      return true;
    });
  });
});
