// cloud-route: the agent's cloud route against a loopback cloud that verifies every signature — signed headers, idempotency
// keys across retries, per-recipient results, a refused key held, throttling, no cloud, too large; config, keygen, and end to end through the real cloud app.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, createPrivateKey, createPublicKey, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { parseCloudConfig } from "../../cloud/config.js";
import type { CloudServer } from "../../cloud/serve.js";
import { serveCloudOnNamedPort } from "../support/cloud-client.js";
import { silentLog } from "../../shared/log.js";
import { contentDigest } from "../../shared/protocol/content-digest.js";
import { nodeCryptoEd25519, pkcs8PemFromSeed, publicKeyFromSeed } from "../../shared/protocol/ed25519.js";
import { parseEnvelopeTo } from "../../shared/protocol/envelope-fields.js";
import { parseSignatures } from "../../shared/protocol/message-signature.js";
import { MESSAGE_COMPONENTS, verifyRequest } from "../../shared/protocol/signed-request.js";
import { CLI, startAgent, type AgentProcess } from "../support/agent-process.js";
import { deliveryLines, deliveryStatus, startMxWorld, submit, submitText, waitForBounceNotice, waitForDelivery, waitForQueueFile, worldConfig, type MxHost, type MxWorld } from "../support/mx-world.js";
import { queueIdOf } from "../support/queue-durability.js";
import { SmtpDialog } from "../support/smtp-dialog.js";

const ALICE = "alice@home.example.net";
const KEY_ID = "home-1";
const SEED = randomBytes(32);
const PUBLIC_KEY = publicKeyFromSeed(SEED);
/** What the loopback cloud's GET /v1/info advertises. */
const MAX_MESSAGE_SIZE = 2000;

/** A POST /v1/messages as the loopback cloud received it, with its own verdict on the signature. */
interface CloudRequest {
  header(name: string): string | null;
  body: Buffer;
  verdict: Awaited<ReturnType<typeof verifyRequest>>;
  recipients: string[];
}

/** An answer of the loopback cloud. */
interface Answer {
  status: number;
  headers?: Record<string, string>;
  body: unknown;
}

/** 200 with the given outcome per recipient; recipients not named are sent. */
function results(outcomes: Record<string, { status: "sent" | "deferred" | "failed"; dsn: string; detail: string }> = {}): (r: CloudRequest, n: number) => Answer {
  return (r, n) => ({
    status: 200,
    body: {
      id: `cloud-${n}`,
      results: r.recipients.map((recipient) => ({ recipient, ...(outcomes[recipient] ?? { status: "sent", dsn: "2.0.0", detail: `250 2.0.0 Ok: queued as cloud-${n}` }) })),
    },
  });
}

/** An RFC 9457 problem answer, as the cloud's problems.ts makes them. */
function problem(status: number, type: string, title: string, detail: string, headers: Record<string, string> = {}): () => Answer {
  return () => ({ status, headers: { "content-type": "application/problem+json", ...headers }, body: { type: `https://homerelay.dev/problems/${type}`, title, status, detail } });
}

/**
 * A cloud on loopback: GET /v1/info, and POST /v1/messages verified with the agent's public key
 * and answered from a script per recipient domain (once the script is used up: every recipient sent).
 */
class LoopbackCloud {
  readonly requests: CloudRequest[] = [];
  private readonly scripts = new Map<string, ((r: CloudRequest, n: number) => Answer)[]>();
  private readonly server: Server;
  private served = 0;

  private constructor() {
    this.server = createServer((req, res) => {
      void this.handle(req).then(({ status, headers, body }) => {
        res.writeHead(status, { "content-type": "application/json", ...headers });
        res.end(JSON.stringify(body));
      });
    });
  }

  static async start(host = "127.0.0.1", port = 0): Promise<LoopbackCloud> {
    const cloud = new LoopbackCloud();
    await new Promise<void>((resolve, reject) => {
      cloud.server.once("error", reject);
      cloud.server.listen(port, host, () => resolve());
    });
    return cloud;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /** Answer the requests for recipients in `domain` with `answers`, in turn. */
  script(domain: string, answers: ((r: CloudRequest, n: number) => Answer)[]): void {
    this.scripts.set(domain, answers);
  }

  /** The message requests whose first recipient is in `domain`. */
  requestsFor(domain: string): CloudRequest[] {
    return this.requests.filter((r) => r.recipients[0]?.endsWith(`@${domain}`));
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage): Promise<Answer> {
    const url = new URL(req.url!, `http://${req.headers.host}`);
    if (req.method === "GET" && url.pathname === "/v1/info") return { status: 200, body: { protocol: 1, maxMessageSize: MAX_MESSAGE_SIZE } };
    if (req.method !== "POST" || url.pathname !== "/v1/messages") return problem(404, "not-found", "No such resource", url.pathname)();
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const header = (name: string) => {
      const v = req.headers[name];
      return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
    };
    const verdict = await verifyRequest(
      { method: req.method, url, header },
      { ed25519: await nodeCryptoEd25519(), publicKey: (id) => (id === KEY_ID ? PUBLIC_KEY : null), required: MESSAGE_COMPONENTS, now: Math.floor(Date.now() / 1000), window: 300 },
    );
    const request: CloudRequest = { header, body: Buffer.concat(chunks), verdict, recipients: parseEnvelopeTo(header("envelope-to") ?? "").map((r) => r.address) };
    this.requests.push(request);
    const n = ++this.served;
    if (!verdict.ok) return problem(401, "bad-signature", "The signature does not match the request", verdict.detail)();
    if (header("content-digest") !== contentDigest(request.body)) return problem(400, "digest-mismatch", "The body does not match its Content-Digest", "")();
    const domain = request.recipients[0]!.slice(request.recipients[0]!.indexOf("@") + 1);
    const script = this.scripts.get(domain) ?? [];
    const answer = script[this.requestsFor(domain).length - 1] ?? results();
    return answer(request, n);
  }
}

/** A complete message (Date: and Message-ID: included, so the agent adds nothing but its Received: field). */
function message(to: string[], subject: string, body: string): string {
  return `From: <${ALICE}>\r\nTo: ${to.map((a) => `<${a}>`).join(", ")}\r\nSubject: ${subject}\r\nDate: Mon, 06 Jan 2025 09:00:00 +0000\r\nMessage-ID: <${subject.replace(/\W/g, "")}@home.example.net>\r\n\r\n${body}`;
}

/** A message of about 4 kB, twice what the loopback cloud accepts. */
function largeMessage(to: string): string {
  const line = "0123456789".repeat(8);
  return message([to], "holiday photos", `${Array.from({ length: 50 }, () => line).join("\r\n")}\r\n`);
}

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 15_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

let world: MxWorld;
let isp: MxHost;
let cloud: LoopbackCloud;
let keyDir: string;
let keyFile: string;

before(async () => {
  world = await startMxWorld(["smtp.isp.example"]);
  isp = world.host("smtp.isp.example");
  cloud = await LoopbackCloud.start();
  keyDir = await mkdtemp(join(tmpdir(), "hr-cloud-key-"));
  keyFile = join(keyDir, `${KEY_ID}.key`);
  await writeFile(keyFile, pkcs8PemFromSeed(SEED), { mode: 0o600 });
});
after(async () => {
  await cloud.close();
  await world.close();
  await rm(keyDir, { recursive: true, force: true });
});

/** The agent's configuration: everything goes to the cloud, fallback.example falls back to the ISP's smarthost. */
function cloudConfig(url: string): Record<string, unknown> {
  return worldConfig(world, {
    cloud: { url, keyId: KEY_ID, keyFile, timeout: 5 },
    smarthosts: { isp: { host: "smtp.isp.example", port: world.port, tls: "none" } },
    routes: [
      { match: "*", route: "cloud" },
      { match: "fallback.example", route: "cloud", fallback: ["smarthost:isp"] },
    ],
  });
}

describe("the cloud route", () => {
  let agent: AgentProcess;
  let relay: string;
  before(async () => {
    agent = await startAgent(cloudConfig(`http://127.0.0.1:${cloud.port}`));
    relay = `cloud[http://127.0.0.1:${cloud.port}]`;
  });
  after(() => agent.cleanup());
  afterEach(() => world.reset());

  test("a message goes out as one POST signed over every required component, with the envelope, digest and an idempotency key", async () => {
    const mark = agent.log().length;
    const to = ["bob@signed.example", "carol@signed.example"];
    const { dialog } = await SmtpDialog.open(agent.ports[0]!);
    assert.equal((await dialog.command("EHLO laptop.home.example.net")).code, 250);
    assert.equal((await dialog.command(`MAIL FROM:<${ALICE}> RET=HDRS ENVID=QQ314159`)).code, 250);
    assert.equal((await dialog.command(`RCPT TO:<${to[0]}>`)).code, 250);
    assert.equal((await dialog.command(`RCPT TO:<${to[1]}> NOTIFY=FAILURE,DELAY ORCPT=rfc822;carol@signed.example`)).code, 250);
    const text = message(to, "signed", "signed: body\r\n");
    const id = queueIdOf(await dialog.data(text));
    await dialog.quit();

    for (const rcpt of to) {
      const sent = await waitForDelivery(agent, id, rcpt, "sent", mark);
      assert.equal(sent.relay, relay);
      assert.equal(sent.dsn, "2.0.0");
      assert.match(sent.detail, /^250 2\.0\.0 Ok: queued as cloud-\d+$/);
    }
    await agent.waitForLog(new RegExp(`${id}: removed`), 5000, mark);

    const [request, ...more] = cloud.requestsFor("signed.example");
    assert.equal(more.length, 0, "one request for both recipients");
    assert.ok(request!.verdict.ok, `the signature verifies with the agent's public key: ${JSON.stringify(request!.verdict)}`);
    assert.equal(request!.verdict.signature.keyid, KEY_ID);
    const [signature] = parseSignatures(request!.header("signature-input")!, request!.header("signature")!);
    assert.deepEqual(signature!.components, MESSAGE_COMPONENTS);
    assert.equal(signature!.params.alg, "ed25519");
    assert.match(signature!.params.nonce ?? "", /^[A-Za-z0-9_-]{16,}$/);
    assert.ok(Math.abs(signature!.params.created! - Date.now() / 1000) < 60, "created is now");

    assert.equal(request!.header("content-type"), "message/rfc822");
    assert.equal(request!.header("content-digest"), `sha-256=:${createHash("sha256").update(request!.body).digest("base64")}:`);
    assert.equal(request!.header("envelope-from"), `<${ALICE}>; ret=hdrs; envid=QQ314159`);
    assert.equal(request!.header("envelope-to"), "<bob@signed.example>, <carol@signed.example>; notify=failure,delay; orcpt=rfc822;carol@signed.example");
    assert.match(request!.header("idempotency-key")!, /^"[A-Za-z0-9_-]{43}"$/);

    const body = request!.body.toString("latin1");
    assert.match(body, new RegExp(`^Received: from laptop\\.home\\.example\\.net [^]*id ${id}\r\n\t; [^\r\n]+\r\nFrom: `), "the agent's Received: field, then the message");
    assert.ok(body.endsWith(`\r\n${text}`), "the rest is the submitted message, byte for byte");
    assert.ok(!/[^\r]\n/.test(body), "CRLF line ends only");
  });

  test("each recipient gets its own result: sent, deferred and retried under a new idempotency key, bounced with the cloud's DSN", async () => {
    cloud.script("results.example", [
      results({
        "carol@results.example": { status: "deferred", dsn: "4.7.1", detail: "host mx.results.example[192.0.2.7] said: 451 4.7.1 Greylisted, try again later (in reply to RCPT TO command)" },
        "dave@results.example": { status: "failed", dsn: "5.1.1", detail: "host mx.results.example[192.0.2.7] said: 550 5.1.1 <dave@results.example>: User unknown (in reply to RCPT TO command)" },
      }),
    ]);
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@results.example", "carol@results.example", "dave@results.example"], "results");

    const bob = await waitForDelivery(agent, id, "bob@results.example", "sent", mark);
    assert.equal(bob.dsn, "2.0.0");
    const carol = await waitForDelivery(agent, id, "carol@results.example", "deferred", mark);
    assert.equal(carol.dsn, "4.7.1");
    assert.equal(carol.relay, relay);
    assert.equal(carol.detail, "host mx.results.example[192.0.2.7] said: 451 4.7.1 Greylisted, try again later (in reply to RCPT TO command)");
    const dave = await waitForDelivery(agent, id, "dave@results.example", "bounced", mark);
    assert.equal(dave.dsn, "5.1.1");
    assert.equal(dave.relay, relay);

    const notice = await waitForBounceNotice(agent, id, "alice", mark);
    const [block, ...others] = deliveryStatus(notice);
    assert.equal(others.length, 0, "only dave bounced");
    assert.equal(block!.get("final-recipient"), "rfc822; dave@results.example");
    assert.equal(block!.get("status"), "5.1.1");
    assert.equal(block!.get("diagnostic-code"), "smtp; 550 5.1.1 <dave@results.example>: User unknown");

    await waitForDelivery(agent, id, "carol@results.example", "sent", mark);
    await agent.waitForLog(new RegExp(`${id}: removed`), 5000, mark);
    const [first, retry, ...more] = cloud.requestsFor("results.example");
    assert.equal(more.length, 0);
    assert.deepEqual(first!.recipients, ["bob@results.example", "carol@results.example", "dave@results.example"]);
    assert.deepEqual(retry!.recipients, ["carol@results.example"], "the retry names only the deferred recipient");
    assert.ok(retry!.verdict.ok);
    assert.notEqual(retry!.header("idempotency-key"), first!.header("idempotency-key"), "a new recipient set, a new key");
  });

  test("503 and 429 defer every recipient; the retries carry the same idempotency key with fresh nonces, and nobody is bounced", async () => {
    cloud.script("busy.example", [
      problem(503, "ses-unavailable", "Amazon SES did not take the message", "SES answered ServiceUnavailable", { "retry-after": "1" }),
      problem(429, "rate-limited", "Too many requests for this key", "key home-1 may send 600 requests per minute", { "retry-after": "1" }),
    ]);
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["erin@busy.example"], "busy");
    const first = await waitForDelivery(agent, id, "erin@busy.example", "deferred", mark);
    assert.equal(first.dsn, "4.3.2");
    assert.equal(first.relay, relay);
    assert.equal(
      first.detail,
      "cloud is busy (503 Amazon SES did not take the message: SES answered ServiceUnavailable [https://homerelay.dev/problems/ses-unavailable]; Retry-After: 1)",
    );
    await waitForQueueFile(agent, "deferred", id);
    const second = await waitForDelivery(agent, id, "erin@busy.example", "deferred", agent.log().indexOf(first.line) + first.line.length);
    assert.match(second.detail, /^cloud is busy \(429 Too many requests for this key: key home-1 may send 600 requests per minute/);
    await waitForDelivery(agent, id, "erin@busy.example", "sent", mark);

    const requests = cloud.requestsFor("busy.example");
    assert.equal(requests.length, 3);
    assert.ok(requests.every((r) => r.verdict.ok));
    assert.equal(new Set(requests.map((r) => r.header("idempotency-key"))).size, 1, "one key for every try of the same request");
    assert.equal(new Set(requests.map((r) => (r.verdict.ok ? r.verdict.signature.nonce : ""))).size, 3, "a new nonce for every try");
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`));
  });

  test("401: the key is refused — the message waits in hold/, nobody is bounced, the log says what to fix; released, it is delivered", async () => {
    cloud.script("refused.example", [problem(401, "unknown-key", "The signing key is not known to this relay", "unknown key home-1")]);
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["frank@refused.example"], "refused");
    const deferred = await waitForDelivery(agent, id, "frank@refused.example", "deferred", mark);
    assert.equal(deferred.dsn, "4.7.0");
    assert.equal(deferred.relay, relay);
    const reason = `cloud refused the agent's key (401 The signing key is not known to this relay: unknown key home-1 [https://homerelay.dev/problems/unknown-key]); check that key home-1 with the public key of ${keyFile} is in the cloud's keys: list and that this machine's clock is right, then: homerelay queue release ${id}`;
    assert.equal(deferred.detail, reason);
    await agent.waitForLog(new RegExp(`${id}: hold: ${reason.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`, "m"), 5000, mark);
    await waitForQueueFile(agent, "hold", id);

    // Held, not deferred: no retry comes by itself, and only a held message can be released.
    assert.equal(cloud.requestsFor("refused.example").length, 1);
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`), "no bounce for the owner's configuration problem");
    const release = cli(["queue", "release", id, "--config", agent.configFile]);
    assert.equal(release.status, 0, release.stderr);
    const sent = await waitForDelivery(agent, id, "frank@refused.example", "sent", mark);
    assert.equal(sent.relay, relay);
    assert.equal(cloud.requestsFor("refused.example").length, 2);
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`));
  });

  test("403: the key may not send for this sender — held too, and the log names the sender to allow", async () => {
    cloud.script("forbidden.example", [problem(403, "sender-not-allowed", "The key may not send for this envelope sender", `key home-1 may not send for <${ALICE}>`)]);
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["gina@forbidden.example"], "forbidden");
    const deferred = await waitForDelivery(agent, id, "gina@forbidden.example", "deferred", mark);
    assert.equal(deferred.dsn, "4.7.0");
    assert.match(deferred.detail, /^cloud refused the agent's key \(403 The key may not send for this envelope sender: key home-1 may not send for <alice@home\.example\.net> /);
    assert.match(deferred.detail, /allow key home-1 to send as <alice@home\.example\.net> .* in its senders: in the cloud's configuration/);
    await agent.waitForLog(new RegExp(`${id}: hold: cloud refused the agent's key \\(403 `), 5000, mark);
    await waitForQueueFile(agent, "hold", id);
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`));
  });

  test("larger than the cloud's advertised maximum and no fallback: bounced with 5.3.4 and the reason, nothing posted", async () => {
    const mark = agent.log().length;
    const id = await submitText(agent, ALICE, ["hank@big.example"], largeMessage("hank@big.example"));
    const bounced = await waitForDelivery(agent, id, "hank@big.example", "bounced", mark);
    assert.equal(bounced.dsn, "5.3.4");
    assert.equal(bounced.relay, relay);
    assert.match(bounced.detail, new RegExp(`^message size \\d{4} exceeds the cloud's maximum message size of ${MAX_MESSAGE_SIZE} bytes$`));
    const notice = await waitForBounceNotice(agent, id, "alice", mark);
    const [block] = deliveryStatus(notice);
    assert.equal(block!.get("status"), "5.3.4");
    assert.equal(block!.get("diagnostic-code"), `X-Homerelay; ${bounced.detail}`);
    assert.equal(cloud.requestsFor("big.example").length, 0, "the cloud was not sent what it cannot take");
  });

  test("413 from the cloud and no fallback: bounced with 5.3.4 and the cloud's reason", async () => {
    cloud.script("limit.example", [problem(413, "too-large", "The message is larger than this relay accepts", "the body is larger than 300 octets, the most this relay accepts")]);
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["ivan@limit.example"], "limit");
    const bounced = await waitForDelivery(agent, id, "ivan@limit.example", "bounced", mark);
    assert.equal(bounced.dsn, "5.3.4");
    assert.match(
      bounced.detail,
      /^message size \d+ is too large for the cloud \(413 The message is larger than this relay accepts: the body is larger than 300 octets, the most this relay accepts \[https:\/\/homerelay\.dev\/problems\/too-large\]\)$/,
    );
    await waitForBounceNotice(agent, id, "alice", mark);
    assert.equal(deliveryLines(agent, id, "ivan@limit.example").length, 1, "bounced at the first attempt, not retried");
  });

  test("too large for the cloud with a smarthost fallback: delivered through the smarthost", async () => {
    const mark = agent.log().length;
    const text = largeMessage("judy@fallback.example");
    const id = await submitText(agent, ALICE, ["judy@fallback.example"], text);
    const sent = await waitForDelivery(agent, id, "judy@fallback.example", "sent", mark);
    assert.equal(sent.relay, `smtp.isp.example[${isp.address}]:${world.port}`);
    assert.equal(deliveryLines(agent, id, "judy@fallback.example").length, 1, "delivered in the first attempt");
    const [received] = isp.messagesFor("judy@fallback.example");
    assert.ok(received!.raw.toString("latin1").endsWith(text), "the smarthost got the whole message");
    assert.equal(cloud.requestsFor("fallback.example").length, 0);
  });
});

describe("a cloud that cannot be reached", () => {
  let agent: AgentProcess;
  let late: LoopbackCloud | null = null;
  // Nothing listens on this address until the test starts a cloud there.
  const host = "127.0.0.77";
  before(async () => {
    agent = await startAgent(cloudConfig(`http://${host}:${cloud.port}`));
  });
  after(async () => {
    await agent.cleanup();
    await late?.close();
  });

  test("connection refused defers with 4.4.1 and bounces nothing; once the cloud answers, the message goes out", async () => {
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["kate@down.example"], "down");
    const deferred = await waitForDelivery(agent, id, "kate@down.example", "deferred", mark);
    assert.equal(deferred.dsn, "4.4.1");
    assert.equal(deferred.relay, `cloud[http://${host}:${cloud.port}]`);
    assert.equal(deferred.detail, `cannot reach the cloud at http://${host}:${cloud.port}: connect ECONNREFUSED ${host}:${cloud.port}`);
    await waitForQueueFile(agent, "deferred", id);

    late = await LoopbackCloud.start(host, cloud.port);
    const sent = await waitForDelivery(agent, id, "kate@down.example", "sent", mark);
    assert.equal(sent.relay, `cloud[http://${host}:${cloud.port}]`);
    const [request] = late.requestsFor("down.example");
    assert.ok(request!.verdict.ok, "signed over @authority " + host);
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`));
  });
});

describe("configuration and keys", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hr-cloud-config-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function checkConfig(config: Record<string, unknown>): Promise<{ status: number | null; stdout: string; stderr: string }> {
    const file = join(dir, "homerelay.yaml");
    await writeFile(file, stringify({ spool: join(dir, "spool"), mailboxes: join(dir, "mail"), ...config }));
    return cli(["agent", "--check-config", "--config", file]);
  }

  test("a cloud route or fallback without a cloud: section is refused with file:line:column", async () => {
    const r = await checkConfig({ routes: [{ match: "*", route: "mx", fallback: ["cloud"] }] });
    assert.equal(r.status, 78);
    assert.match(r.stderr, /homerelay\.yaml:\d+:\d+: routes\.0\.fallback\.0: the cloud route needs a cloud: section \(url, keyId, keyFile; see homerelay keygen\)/);
  });

  test("plain http is refused unless the cloud is on loopback", async () => {
    const section = (url: string) => ({ cloud: { url, keyId: KEY_ID, keyFile }, routes: [{ match: "*", route: "cloud" }] });
    const remote = await checkConfig(section("http://relay.example.net"));
    assert.equal(remote.status, 78);
    assert.match(remote.stderr, /homerelay\.yaml:\d+:\d+: cloud\.url: the cloud must be reached over https:\/\/ \(plain http:\/\/ only to a loopback host\)/);
    for (const url of ["https://relay.example.net", "http://127.0.0.1:8443", "http://[::1]:8443", "http://localhost:8443"]) {
      const ok = await checkConfig(section(url));
      assert.equal(ok.status, 0, `${url}: ${ok.stderr}`);
    }
  });

  test("the agent refuses to start with a key file others can read, or one that is not an Ed25519 PKCS#8 key (exit 78)", async () => {
    const readable = join(dir, "readable.key");
    await writeFile(readable, pkcs8PemFromSeed(SEED), { mode: 0o644 });
    const notKey = join(dir, "not-a-key.key");
    await writeFile(notKey, "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n", { mode: 0o600 });
    for (const [file, message] of [
      [readable, `cloud.keyFile ${readable} has mode 644; others must not read or write it (chmod 600 ${readable})`],
      [notKey, `cloud.keyFile ${notKey}: not an Ed25519 private key in PKCS#8 PEM form (make one with homerelay keygen)`],
    ] as const) {
      const config = join(dir, "start.yaml");
      await writeFile(
        config,
        stringify({ spool: join(dir, "spool"), mailboxes: join(dir, "mail"), listeners: [{ role: "submission", listen: "127.0.0.1:0" }], cloud: { url: "https://relay.example.net", keyId: KEY_ID, keyFile: file } }),
      );
      const r = cli(["agent", "--config", config]);
      assert.equal(r.status, 78, r.stderr);
      assert.ok(r.stderr.includes(`fatal: ${message}`), r.stderr);
    }
  });

  test("keygen writes a 0600 PKCS#8 key, prints its public key and YAML the cloud and the agent accept, and never overwrites", async () => {
    const out = join(dir, "keys");
    const r = cli(["keygen", "--id", "home-2", "--out", out]);
    assert.equal(r.status, 0, r.stderr);
    const file = join(out, "home-2.key");
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const pem = await readFile(file, "utf8");
    const jwk = createPublicKey(createPrivateKey(pem)).export({ format: "jwk" });
    const publicKey = Buffer.from(jwk.x!, "base64url").toString("base64");
    assert.match(r.stdout, new RegExp(`^public key: ${publicKey.replace(/[+/]/g, "\\$&")}$`, "m"));

    const keysEntry = r.stdout.split("\n").find((l) => l.trimStart().startsWith("- { id: home-2"));
    assert.ok(keysEntry, r.stdout);
    const cloudConfigText = `authority: [relay.example.net]\nkeys:\n${keysEntry}\nonward: { transport: mx, helo: relay.example.net }\nstore: /var/lib/homerelay-cloud\n`;
    const cloudKeys = parseCloudConfig(cloudConfigText, "cloud.yaml").keys;
    assert.deepEqual(cloudKeys.map((k) => [k.id, k.publicKey]), [["home-2", publicKey]]);

    const agentSection = r.stdout.slice(r.stdout.indexOf("cloud:\n"));
    const agentFile = join(dir, "agent.yaml");
    await writeFile(agentFile, `spool: ${join(dir, "spool")}\nmailboxes: ${join(dir, "mail")}\n${agentSection}routes:\n  - { match: "*", route: cloud }\n`);
    const check = cli(["agent", "--check-config", "--config", agentFile]);
    assert.equal(check.status, 0, check.stderr);

    const again = cli(["keygen", "--id", "home-2", "--out", out]);
    assert.equal(again.status, 73);
    assert.match(again.stderr, /home-2\.key: already exists; not overwritten/);
    assert.equal(await readFile(file, "utf8"), pem, "the first key is untouched");
  });
});


describe("end to end: agent → cloud app (Node entry) → SMTP upstream", () => {
  let agent: AgentProcess;
  let server: CloudServer;
  let store: string;
  before(async () => {
    store = await mkdtemp(join(tmpdir(), "hr-cloud-store-"));
    server = await serveCloudOnNamedPort(
      (port) =>
        parseCloudConfig(
      stringify({
        listen: `127.0.0.1:${port}`,
        authority: [`127.0.0.1:${port}`],
        keys: [{ id: KEY_ID, publicKey: Buffer.from(PUBLIC_KEY).toString("base64"), senders: ["*@home.example.net"] }],
        onward: { transport: "smtp", host: isp.address, port: world.port, tls: "none" },
        store,
      }),
      "cloud.yaml",
    ),
      silentLog,
    );
    agent = await startAgent(worldConfig(world, { cloud: { url: `http://127.0.0.1:${server.port}`, keyId: KEY_ID, keyFile, timeout: 10 }, routes: [{ match: "*", route: "cloud" }] }));
  });
  after(async () => {
    await agent.cleanup();
    await server.close();
    await rm(store, { recursive: true, force: true });
  });

  test("the message reaches the upstream byte for byte, with the envelope the agent queued", async () => {
    const mark = agent.log().length;
    const to = ["liam@example.org", "mia@example.org"];
    const text = message(to, "through the cloud", "through the cloud: body\r\n");
    const id = await submitText(agent, ALICE, to, text);
    for (const rcpt of to) {
      const sent = await waitForDelivery(agent, id, rcpt, "sent", mark);
      assert.equal(sent.relay, `cloud[http://127.0.0.1:${server.port}]`);
      assert.equal(sent.dsn, "2.0.0");
    }
    await agent.waitForLog(new RegExp(`${id}: removed`), 5000, mark);
    const [received, ...more] = isp.messagesFor("liam@example.org");
    assert.equal(more.length, 0);
    assert.equal(received!.mailFrom, ALICE);
    assert.deepEqual(received!.rcptTo.map((r) => r.address), to);
    const raw = received!.raw.toString("latin1");
    assert.match(raw, new RegExp(`^Received: from laptop\\.home\\.example\\.net [^]*id ${id}\r\n\t; [^\r\n]+\r\nFrom: `), "the agent's Received: field, nothing added by the cloud");
    assert.ok(raw.endsWith(`\r\n${text}`), "then the submitted message, byte for byte");
  });
});
