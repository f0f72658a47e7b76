// mta-sts: MTA-STS (RFC 8461) for direct-to-MX delivery — policies read and matched; fetched from a loopback HTTPS
// policy host, cached in the spool (across restarts, until max_age, refreshed when the TXT id changes); enforce
// delivers only over verified TLS to listed MX hosts and defers otherwise, testing logs what enforce would refuse.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { rootCertificates } from "node:tls";
import { MtaStsPolicies } from "../../agent/mta-sts/policy-cache.js";
import { parseStsPolicy, policyListsMx, StsPolicyError, stsRecordId } from "../../agent/mta-sts/sts-policy.js";
import { MailResolver } from "../../shared/dns/resolver.js";
import { createMailLog } from "../../shared/log.js";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { escapeRegExp, mxRecords as mx, startMxWorld, submit, waitForDelivery, worldConfig, type DeliveryLine, type MxHost, type MxWorld } from "../support/mx-world.js";
import { PolicyServer, policyText } from "../support/mta-sts-server.js";

const ALICE = "alice@home.example.net";
/** Policy domains, one per test so that no test sees another's cached policy. */
const DOMAINS = ["enforce.example", "unlisted.example", "badcert.example", "testing.example", "none.example", "nofetch.example", "cached.example", "refresh.example", "unit.example"];

let world: MxWorld;
let mx1: MxHost;
let mx2: MxHost;
let server: PolicyServer;
let dir: string;
/** The world's CA and the policy host's certificate: the agent's `delivery.ca`. */
let caFile: string;

before(async () => {
  world = await startMxWorld(["mx1.example.org", "mx2.example.org"]);
  mx1 = world.host("mx1.example.org");
  mx2 = world.host("mx2.example.org");
  server = await PolicyServer.start(DOMAINS);
  dir = await mkdtemp(join(tmpdir(), "hr-mta-sts-"));
  caFile = join(dir, "ca.pem");
  await writeFile(caFile, `${await readFile(world.caFile, "utf8")}\n${server.certificate}`);
});
after(async () => {
  await server.close();
  await world.close();
  await rm(dir, { recursive: true, force: true });
});
afterEach(() => {
  world.reset();
  server.down = false;
});

/**
 * Publish a policy domain in the world: `exchange` its MX host, its `_mta-sts` record with `id`, the
 * policy host on loopback, and, when given, the policy file it serves (a domain never given one: 404).
 */
function publish(domain: string, id: string, exchange: string, policy?: string): void {
  world.setZone({
    [domain]: mx([exchange, 10]),
    [`_mta-sts.${domain}`]: { TXT: [["v=STSv1; ", `id=${id};`]] },
    [`mta-sts.${domain}`]: { A: ["127.0.0.1"] },
  });
  if (policy !== undefined) server.policies.set(domain, policy);
}

/** Submit a message from alice to `recipient`; its delivery line with `status`, its queue ID, and the log offset before it. */
async function attempt(agent: AgentProcess, recipient: string, status: "sent" | "deferred"): Promise<{ id: string; line: DeliveryLine; mark: number }> {
  const mark = agent.log().length;
  const id = await submit(agent, ALICE, [recipient], `to ${recipient}`);
  return { id, mark, line: await waitForDelivery(agent, id, recipient, status, mark) };
}

describe("policies, records and MX patterns", () => {
  test("a policy file is read with CRLF or LF line ends, unknown fields ignored; a bad one says what is wrong", () => {
    assert.deepEqual(parseStsPolicy("version: STSv1\nmode: enforce\nmx: MX1.example.org.\nmx: *.mail.example.org\nmax_age: 604800\nextension: ignored\n"), {
      mode: "enforce",
      mx: ["mx1.example.org", "*.mail.example.org"],
      maxAge: 604800,
    });
    assert.deepEqual(parseStsPolicy(policyText("none", [])), { mode: "none", mx: [], maxAge: 86400 });
    for (const [text, reason] of [
      ["version: STSv2\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 1\r\n", 'version is "STSv2", not STSv1'],
      ["version: STSv1\r\nmode: strict\r\nmx: a.example\r\nmax_age: 1\r\n", 'mode is "strict", not enforce, testing or none'],
      ["version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 31557601\r\n", 'max_age is "31557601", not a number of seconds up to 31557600'],
      ["version: STSv1\r\nmode: testing\r\nmax_age: 86400\r\n", "mode testing without any mx field"],
    ] as const) {
      assert.throws(() => parseStsPolicy(text), (err: Error) => err instanceof StsPolicyError && err.message === reason);
    }
  });

  test("the TXT record: strings joined, other records ignored; several v=STSv1 records or a bad id mean no policy", () => {
    assert.equal(stsRecordId([["v=spf1 -all"], ["v=STSv1; ", "id=20250106T0900;"]]), "20250106T0900");
    assert.equal(stsRecordId([["v=STSv1;id=abc"]]), "abc");
    assert.equal(stsRecordId([["v=STSv1; id=1;"], ["v=STSv1; id=2;"]]), null);
    assert.equal(stsRecordId([["v=STSv1; id=not-alphanumeric;"]]), null);
    assert.equal(stsRecordId([["v=STSv1;"]]), null);
    assert.equal(stsRecordId([["v=STSv10; id=1;"]]), null);
    assert.equal(stsRecordId([]), null);
  });

  test("a wildcard pattern stands for exactly one leftmost label", () => {
    const policy = parseStsPolicy(policyText("enforce", ["*.example.org", "mx.other.example"]));
    assert.equal(policyListsMx(policy, "mx1.example.org"), true);
    assert.equal(policyListsMx(policy, "MX1.Example.Org."), true);
    assert.equal(policyListsMx(policy, "a.mx1.example.org"), false);
    assert.equal(policyListsMx(policy, "example.org"), false);
    assert.equal(policyListsMx(policy, "mx.other.example"), true);
    assert.equal(policyListsMx(policy, "mx2.other.example"), false);
  });
});

describe("the policy cache", () => {
  let log = "";
  let clock = Date.now();
  const mailLog = createMailLog({ format: "text", level: "info", destination: new Writable({ write: (chunk: Buffer, _encoding, done) => done(void (log += chunk.toString())) }) });

  /** A cache in `cacheDir` on the world's DNS, trusting the policy host unless `trusted` is false. */
  function policies(cacheDir: string, trusted = true): MtaStsPolicies {
    return new MtaStsPolicies({
      dir: cacheDir,
      resolver: new MailResolver({ servers: [world.dns.server], timeoutSeconds: 1 }),
      addressPreference: "ipv4",
      port: server.port,
      ...(trusted ? { ca: [...rootCertificates, server.certificate] } : {}),
      timeout: 5,
      log: mailLog,
      now: () => clock,
    });
  }

  test("a policy is fetched once, kept in the spool, and applied after a restart without fetching again", async () => {
    publish("unit.example", "1", "mx1.example.org", policyText("enforce", ["mx1.example.org"], 3600));
    const cacheDir = join(dir, "unit-cache");
    const fetches = server.fetchesOf("unit.example");
    const first = policies(cacheDir);
    const policy = await first.policyFor("unit.example");
    assert.deepEqual({ ...policy, expires: undefined }, { domain: "unit.example", id: "1", mode: "enforce", mx: ["mx1.example.org"], maxAge: 3600, expires: undefined });
    assert.equal(policy!.expires, clock + 3600_000);
    assert.deepEqual(await first.policyFor("unit.example"), policy);
    assert.equal(server.fetchesOf("unit.example"), fetches + 1, "one fetch for both deliveries");
    assert.deepEqual(JSON.parse(await readFile(join(cacheDir, "unit.example.json"), "utf8")), { id: "1", fetched: clock, policy: policyText("enforce", ["mx1.example.org"], 3600) });

    server.down = true;
    assert.deepEqual(await policies(cacheDir).policyFor("unit.example"), policy, "read back from the spool");
    assert.equal(server.fetchesOf("unit.example"), fetches + 1);
  });

  test("max_age: an expired policy is fetched again; expired and unfetchable, it no longer applies", async () => {
    publish("unit.example", "1", "mx1.example.org", policyText("enforce", ["mx1.example.org"], 60));
    const cache = policies(join(dir, "expiry-cache"));
    const fetches = server.fetchesOf("unit.example");
    assert.equal((await cache.policyFor("unit.example"))?.mode, "enforce");
    clock += 59_000;
    server.down = true;
    assert.equal((await cache.policyFor("unit.example"))?.mode, "enforce", "still within max_age");
    assert.equal(server.fetchesOf("unit.example"), fetches + 1);

    server.down = false;
    clock += 2_000;
    assert.equal((await cache.policyFor("unit.example"))?.expires, clock + 60_000, "fetched again once expired");
    assert.equal(server.fetchesOf("unit.example"), fetches + 2);

    clock += 61_000;
    server.down = true;
    const mark = log.length;
    assert.equal(await cache.policyFor("unit.example"), null);
    assert.match(log.slice(mark), /warning: unit\.example: MTA-STS policy id=1 not fetched: result-type=sts-policy-fetch-error, https:\/\/mta-sts\.unit\.example:\d+\/\.well-known\/mta-sts\.txt: .+; delivering as without MTA-STS\n/);
  });

  test("a policy host whose certificate is not trusted gives no policy (sts-webpki-invalid)", async () => {
    publish("unit.example", "1", "mx1.example.org", policyText("enforce", ["mx1.example.org"]));
    const mark = log.length;
    assert.equal(await policies(join(dir, "untrusted-cache"), false).policyFor("unit.example"), null);
    assert.match(log.slice(mark), /unit\.example: MTA-STS policy id=1 not fetched: result-type=sts-webpki-invalid, .*: self[- ]signed certificate; delivering as without MTA-STS/);
  });
});

describe("direct-to-MX delivery under a policy", () => {
  let agent: AgentProcess;
  before(async () => {
    // DNS and MX hosts in the world; the world's CA and the policy host trusted; policies fetched from the loopback server.
    agent = await startAgent(worldConfig(world, { delivery: { ca: caFile, mtaSts: { port: server.port } } }));
  });
  after(() => agent.cleanup());

  test("enforce, a listed MX (by wildcard) with a valid certificate: delivered over TLS", async () => {
    publish("enforce.example", "1", "mx1.example.org", policyText("enforce", ["*.example.org"]));
    mx1.behave({ tls: "ca-signed" });
    const { line, mark } = await attempt(agent, "bob@enforce.example", "sent");
    assert.equal(line.relay, `mx1.example.org[127.0.0.2]:${world.port}`);
    assert.equal(mx1.messages.length, 1);
    assert.equal(mx1.messages[0]!.secure, true);
    assert.match(agent.log().slice(mark), /smtp\[\d+\]: enforce\.example: MTA-STS policy id=1: mode=enforce, max_age=86400, mx=\*\.example\.org\n/);
  });

  test("enforce, an MX the policy does not list: deferred with 4.7.5, never contacted", async () => {
    publish("unlisted.example", "1", "mx2.example.org", policyText("enforce", ["mx1.example.org"]));
    mx2.behave({ tls: "ca-signed" });
    const { line } = await attempt(agent, "bob@unlisted.example", "deferred");
    assert.equal(line.relay, "none");
    assert.equal(line.dsn, "4.7.5");
    assert.equal(line.detail, "MX host mx2.example.org is not listed in the MTA-STS policy of unlisted.example");
    assert.equal(mx2.connections, 0);
  });

  test("enforce, a certificate that does not verify or no STARTTLS at all: deferred, naming the policy; a valid one delivers", async () => {
    publish("badcert.example", "1", "mx1.example.org", policyText("enforce", ["mx1.example.org"]));
    mx1.behave({ tls: "self-signed" });
    const { id, line: untrusted, mark } = await attempt(agent, "bob@badcert.example", "deferred");
    assert.equal(untrusted.dsn, "4.7.5");
    assert.match(
      untrusted.detail,
      new RegExp(`^TLS handshake with mx1\\.example\\.org\\[127\\.0\\.0\\.2\\]:${world.port} failed: self[- ]signed certificate \\(the MTA-STS policy of badcert\\.example requires verified TLS\\)$`),
    );

    mx1.behave({ tls: "none" });
    const plain = await waitForDelivery(agent, id, "bob@badcert.example", "deferred", agent.log().indexOf(untrusted.line) + untrusted.line.length);
    assert.equal(plain.dsn, "4.7.4");
    assert.equal(plain.detail, `TLS is required, but was not offered by host mx1.example.org[127.0.0.2]:${world.port} (the MTA-STS policy of badcert.example requires verified TLS)`);
    assert.equal(mx1.messages.length, 0);

    mx1.behave({ tls: "ca-signed" });
    await waitForDelivery(agent, id, "bob@badcert.example", "sent", mark);
    assert.equal(mx1.messages.length, 1);
    assert.equal(mx1.messages[0]!.secure, true);
  });

  test("testing: delivered as usual, and the log says what enforce would have refused (TLSRPT result types)", async () => {
    publish("testing.example", "1", "mx1.example.org", policyText("testing", ["mx1.example.org"]));
    mx1.behave({ tls: "wrong-name" });
    const first = await attempt(agent, "bob@testing.example", "sent");
    assert.equal(mx1.messages[0]!.secure, true, "encrypted, as the may policy allows");
    assert.equal(mx1.connections, 2, "a verified handshake tried first, then the usual one");
    assert.match(
      agent.log().slice(first.mark),
      new RegExp(
        `smtp\\[\\d+\\]: warning: ${first.id}: MTA-STS policy of testing\\.example \\(id=1\\) in testing mode: result-type=certificate-host-mismatch, receiving-mx-hostname=mx1\\.example\\.org: TLS handshake with mx1\\.example\\.org\\[127\\.0\\.0\\.2\\]:${world.port} failed: Hostname/IP does not match certificate's altnames: .*; enforce mode would defer this delivery\\n`,
      ),
    );

    publish("testing.example", "1", "mx2.example.org");
    mx2.behave({ tls: "ca-signed" });
    const second = await attempt(agent, "carol@testing.example", "sent");
    assert.equal(second.line.relay, `mx2.example.org[127.0.0.3]:${world.port}`);
    assert.match(
      agent.log().slice(second.mark),
      new RegExp(`${second.id}: MTA-STS policy of testing\\.example \\(id=1\\) in testing mode: result-type=validation-failure, receiving-mx-hostname=mx2\\.example\\.org: MX host mx2\\.example\\.org is not listed in the MTA-STS policy of testing\\.example; enforce mode would defer this delivery\\n`),
    );
  });

  test("none: delivered as without a policy, to an unlisted MX with a self-signed certificate, and nothing to report", async () => {
    publish("none.example", "1", "mx2.example.org", policyText("none", ["mx1.example.org"]));
    const { id, mark } = await attempt(agent, "bob@none.example", "sent");
    assert.equal(mx2.messages.length, 1);
    assert.match(agent.log().slice(mark), /none\.example: MTA-STS policy id=1: mode=none/);
    assert.doesNotMatch(agent.log().slice(mark), new RegExp(`${id}: MTA-STS`));
  });

  test("a record but no policy to be had, and none cached: delivered as without MTA-STS, the failure logged", async () => {
    publish("nofetch.example", "1", "mx1.example.org");
    const { mark } = await attempt(agent, "bob@nofetch.example", "sent");
    assert.equal(mx1.messages.length, 1);
    assert.match(
      agent.log().slice(mark),
      new RegExp(`warning: nofetch\\.example: MTA-STS policy id=1 not fetched: result-type=sts-policy-fetch-error, ${escapeRegExp(`https://mta-sts.nofetch.example:${server.port}/.well-known/mta-sts.txt`)}: HTTP 404; delivering as without MTA-STS\\n`),
    );
  });

  test("a policy cached in the spool outlives a restart and applies while the policy host is down, even under a new id", async () => {
    publish("cached.example", "1", "mx1.example.org", policyText("enforce", ["mx1.example.org"]));
    mx1.behave({ tls: "ca-signed" });
    await attempt(agent, "bob@cached.example", "sent");
    assert.equal(JSON.parse(await readFile(join(agent.spool, "private", "mta-sts", "cached.example.json"), "utf8")).id, "1");

    assert.equal(await agent.stop(), 0);
    agent = await agent.restart();
    server.down = true;
    publish("cached.example", "2", "mx2.example.org");
    mx2.behave({ tls: "ca-signed" });
    const { line } = await attempt(agent, "carol@cached.example", "deferred");
    assert.equal(line.dsn, "4.7.5");
    assert.equal(line.detail, "MX host mx2.example.org is not listed in the MTA-STS policy of cached.example");
    assert.equal(mx2.connections, 0);
    assert.match(agent.log(), /warning: cached\.example: MTA-STS policy id=2 not fetched: result-type=sts-policy-fetch-error, .*; using the cached policy id=1 \(mode enforce, until \d{4}-\d\d-\d\dT[\d:.]+Z\)\n/);
  });

  test("a new policy behind the same id is not fetched; once the TXT id changes it is, and applies", async () => {
    publish("refresh.example", "1", "mx1.example.org", policyText("enforce", ["mx1.example.org"]));
    mx1.behave({ tls: "ca-signed" });
    mx2.behave({ tls: "ca-signed" });
    await attempt(agent, "bob@refresh.example", "sent");

    // The domain moves to mx2 and says so in its policy, but forgets to change the id.
    publish("refresh.example", "1", "mx2.example.org", policyText("enforce", ["mx2.example.org"]));
    const { id, line, mark } = await attempt(agent, "carol@refresh.example", "deferred");
    assert.equal(line.detail, "MX host mx2.example.org is not listed in the MTA-STS policy of refresh.example");
    assert.equal(server.fetchesOf("refresh.example"), 1);

    publish("refresh.example", "2", "mx2.example.org");
    const sent = await waitForDelivery(agent, id, "carol@refresh.example", "sent", mark);
    assert.equal(sent.relay, `mx2.example.org[127.0.0.3]:${world.port}`);
    assert.equal(server.fetchesOf("refresh.example"), 2);
    assert.match(agent.log().slice(mark), /refresh\.example: MTA-STS policy id=2: mode=enforce, max_age=86400, mx=mx2\.example\.org\n/);
  });
});
