// delivery-mx: the agent delivering straight to MX hosts in a loopback world — MX order and failover,
// implicit/null MX and DNS failures, TLS policies, EHLO name, partial delivery, DSN transactions, session reuse, log lines.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import {
  deliveryLines,
  deliveryStatus,
  escapeRegExp,
  mxRecords as mx,
  queueFiles,
  startMxWorld,
  submit,
  waitForBounceNotice,
  waitForDelivery,
  waitForQueueFile,
  worldConfig,
  type MxHost,
  type MxWorld,
} from "../support/mx-world.js";

const ALICE = "alice@home.example.net";
const HOSTNAME = "relay.home.example.net";

/** Wait until the agent has removed message `id` (every recipient done), and check no queue file is left. */
async function waitForRemoval(agent: AgentProcess, id: string, from: number): Promise<void> {
  await agent.waitForLog(new RegExp(`${id}: removed`), 15_000, from);
  for (const state of ["active", "deferred", "hold"] as const) assert.ok(!(await queueFiles(agent, state)).includes(id), `${id} left in ${state}/`);
}

let world: MxWorld;
let mx1: MxHost;
let mx2: MxHost;

before(async () => {
  world = await startMxWorld(["mx1.example.org", "mx2.example.org"]);
  mx1 = world.host("mx1.example.org");
  mx2 = world.host("mx2.example.org");
});
after(() => world.close());
afterEach(() => world.reset());

describe("MX hosts and DNS", () => {
  let agent: AgentProcess;
  before(async () => {
    agent = await startAgent(worldConfig(world));
  });
  after(() => agent.cleanup());

  test("the most preferred MX gets the message; the log line names it with dsn=2.0.0 and its reply", async () => {
    world.setZone({ "example.org": mx(["mx2.example.org", 20], ["mx1.example.org", 10]) });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org"], "MX preference");
    const sent = await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    assert.match(
      sent.line,
      new RegExp(
        `: ${id}: to=<bob@example\\.org>, relay=mx1\\.example\\.org\\[127\\.0\\.0\\.2\\]:${world.port}, delay=\\d+\\.\\d\\d, delays=\\d+(\\.\\d+)?/\\d+(\\.\\d+)?/\\d+(\\.\\d+)?/\\d+(\\.\\d+)?, dsn=2\\.0\\.0, status=sent \\(250 2\\.0\\.0 Ok: queued as mx1-1\\)$`,
      ),
    );
    await waitForRemoval(agent, id, mark);
    assert.equal(mx1.messages.length, 1);
    assert.equal(mx2.connections, 0, "the less preferred MX was not even contacted");
    const [received] = mx1.messages;
    assert.equal(received!.mailFrom, ALICE);
    assert.deepEqual(received!.rcptTo.map((r) => r.address), ["bob@example.org"]);
    assert.match(received!.raw.toString("latin1"), /\r\nSubject: MX preference\r\n/);
    assert.match(received!.raw.toString("latin1"), new RegExp(`^Received: from laptop\\.home\\.example\\.net .*\\r\\n\\tby ${escapeRegExp(HOSTNAME)} \\(homerelay\\) with E?SMTP\\w* id ${id}`, "s"));
  });

  test("the EHLO name the MX sees is the configured hostname", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org"], "EHLO name");
    await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    assert.equal(mx1.messages[0]?.helo, HOSTNAME);
  });

  test("a refused connection goes on to the next MX", async () => {
    world.setZone({ "example.org": mx(["down.example.org", 10], ["mx2.example.org", 20]), "down.example.org": { A: [world.deadAddress] } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org"], "failover after refusal");
    const sent = await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    assert.equal(sent.relay, `mx2.example.org[127.0.0.3]:${world.port}`);
    assert.equal(mx2.messages.length, 1);
  });

  test("a 4xx at RCPT goes on to the next MX, which gets the message once", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10], ["mx2.example.org", 20]) });
    mx1.behave({ rcpt: { "*": { code: 451, text: "4.7.1 Greylisted, try again in 5 minutes" } } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org"], "failover after 4xx at RCPT");
    const sent = await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    assert.equal(sent.relay, `mx2.example.org[127.0.0.3]:${world.port}`);
    assert.equal(mx1.connections, 1, "the first MX was tried");
    assert.equal(mx1.messages.length, 0);
    assert.equal(mx2.messages.length, 1);
  });

  test("a 4xx at the end of DATA goes on to the next MX", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10], ["mx2.example.org", 20]) });
    mx1.behave({ data: { code: 452, text: "4.3.1 Insufficient system storage" } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org"], "failover after 4xx at DATA");
    const sent = await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    assert.equal(sent.relay, `mx2.example.org[127.0.0.3]:${world.port}`);
    assert.equal(mx1.connections, 1);
    assert.equal(mx2.messages.length, 1);
  });

  test("an MX that never greets is given up after the command timeout and the next MX delivers", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10], ["mx2.example.org", 20]) });
    mx1.behave({ session: "hang" });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org"], "failover after silence");
    const sent = await waitForDelivery(agent, id, "bob@example.org", "sent", mark, 20_000);
    assert.equal(sent.relay, `mx2.example.org[127.0.0.3]:${world.port}`);
    assert.equal(mx1.connections, 1);
    assert.equal(mx2.messages.length, 1);
  });

  test("when the only MX refuses connections the message is deferred with Postfix's reason, and retried until it goes", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]), "mx1.example.org": { A: [world.deadAddress] } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org"], "deferred after refusal");
    const deferred = await waitForDelivery(agent, id, "bob@example.org", "deferred", mark);
    assert.equal(deferred.relay, "none");
    assert.equal(deferred.dsn, "4.4.1");
    assert.equal(deferred.detail, `connect to mx1.example.org[${world.deadAddress}]:${world.port}: Connection refused`);
    // The MX comes back at its real address; the retry schedule (1 s, scanned every second) delivers it.
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    const sent = await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    assert.equal(sent.relay, `mx1.example.org[127.0.0.2]:${world.port}`);
    await waitForRemoval(agent, id, mark);
    assert.equal(mx1.messages.length, 1);
  });

  test("a connection lost in the middle of DATA defers the message; the retry delivers exactly one copy", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    mx1.behave({ session: "drop-in-data" });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org"], "dropped in DATA");
    const deferred = await waitForDelivery(agent, id, "bob@example.org", "deferred", mark);
    assert.equal(deferred.dsn, "4.4.2");
    assert.match(deferred.detail, /^lost connection with mx1\.example\.org\[127\.0\.0\.2\] while sending message/);
    await waitForQueueFile(agent, "deferred", id);
    mx1.behave({ session: "talk" });
    await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    await waitForRemoval(agent, id, mark);
    assert.equal(mx1.messages.length, 1);
  });

  test("a domain without MX records is its own MX (implicit MX, A record only)", async () => {
    world.setZone({ "implicit.example": { A: ["127.0.0.3"] } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["carol@implicit.example"], "implicit MX");
    const sent = await waitForDelivery(agent, id, "carol@implicit.example", "sent", mark);
    assert.equal(sent.relay, `implicit.example[127.0.0.3]:${world.port}`);
    assert.deepEqual(mx2.messages.map((m) => m.rcptTo[0]?.address), ["carol@implicit.example"]);
  });

  test("a null MX bounces at once with 5.1.10, and the sender gets a multipart/report naming the recipient", async () => {
    world.setZone({ "nullmx.example": mx([".", 0]) });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["carol@nullmx.example"], "to a null MX");
    const bounced = await waitForDelivery(agent, id, "carol@nullmx.example", "bounced", mark);
    assert.equal(bounced.dsn, "5.1.10");
    assert.equal(bounced.detail, "Domain nullmx.example does not accept mail (nullMX)");
    assert.equal(deliveryLines(agent, id, "carol@nullmx.example").length, 1, "one attempt, no retry");
    const notice = await waitForBounceNotice(agent, id, "alice", mark);
    const contentType = notice.headers.get("content-type") as { value: string; params: Record<string, string> };
    assert.equal(contentType.value, "multipart/report");
    assert.equal(contentType.params["report-type"], "delivery-status");
    const [recipient, ...others] = deliveryStatus(notice);
    assert.equal(others.length, 0);
    assert.equal(recipient!.get("final-recipient"), "rfc822; carol@nullmx.example");
    assert.equal(recipient!.get("action"), "failed");
    assert.equal(recipient!.get("status"), "5.1.10");
    await waitForRemoval(agent, id, mark);
    assert.equal(mx1.connections + mx2.connections, 0);
    // Our own reason, not a server's reply: RFC 3464 diagnostic type X-Homerelay, given once.
    assert.equal(recipient!.get("diagnostic-code"), "X-Homerelay; Domain nullmx.example does not accept mail (nullMX)");
  });

  test("a domain that does not exist (NXDOMAIN) bounces with 5.4.4", async () => {
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["carol@nowhere.example"], "to NXDOMAIN");
    const bounced = await waitForDelivery(agent, id, "carol@nowhere.example", "bounced", mark);
    assert.equal(bounced.dsn, "5.4.4");
    assert.equal(bounced.detail, "Host or domain name not found. Name service error for name=nowhere.example type=MX: Host not found");
    const notice = await waitForBounceNotice(agent, id, "alice", mark);
    assert.equal(deliveryStatus(notice)[0]?.get("status"), "5.4.4");
    await waitForRemoval(agent, id, mark);
  });

  test("a DNS server failure (SERVFAIL) defers, attempt after attempt, never bounces, and delivers once DNS answers", async () => {
    world.setZone({ "servfail.example": { servfail: true } });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["carol@servfail.example"], "to SERVFAIL");
    const first = await waitForDelivery(agent, id, "carol@servfail.example", "deferred", mark);
    assert.equal(first.dsn, "4.4.3");
    assert.equal(first.detail, "Host or domain name not found. Name service error for name=servfail.example type=MX: Host not found, try again");
    // The retry finds DNS still failing: still deferred, no bounce logged, no notice sent, the message back in deferred/.
    const second = await waitForDelivery(agent, id, "carol@servfail.example", "deferred", agent.log().indexOf(first.line, mark) + first.line.length);
    assert.equal(second.dsn, "4.4.3");
    assert.deepEqual(new Set(deliveryLines(agent, id, "carol@servfail.example").map((l) => l.status)), new Set(["deferred"]));
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`));
    await waitForQueueFile(agent, "deferred", id);
    // Once DNS answers, the next attempt delivers.
    world.setZone({ "servfail.example": mx(["mx2.example.org", 10]) });
    await waitForDelivery(agent, id, "carol@servfail.example", "sent", mark);
    assert.equal(mx2.messages.length, 1);
  });
});

describe("partial delivery, DSN parameters and session reuse", () => {
  let agent: AgentProcess;
  before(async () => {
    agent = await startAgent(worldConfig(world));
  });
  after(() => agent.cleanup());

  test("of three recipients one is delivered, one bounced, one retried until it goes — and the first is not sent again", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    mx1.behave({
      rcpt: {
        "dave@example.org": { code: 550, text: "5.1.1 <dave@example.org>: Recipient address rejected: User unknown in virtual mailbox table" },
        "erin@example.org": { code: 450, text: "4.2.0 <erin@example.org>: Recipient address rejected: Greylisted" },
      },
    });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org", "dave@example.org", "erin@example.org"], "three recipients");
    await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    const bounced = await waitForDelivery(agent, id, "dave@example.org", "bounced", mark);
    assert.equal(bounced.dsn, "5.1.1");
    assert.equal(bounced.relay, `mx1.example.org[127.0.0.2]:${world.port}`);
    assert.equal(
      bounced.detail,
      "host mx1.example.org[127.0.0.2] said: 550 5.1.1 <dave@example.org>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)",
    );
    const deferred = await waitForDelivery(agent, id, "erin@example.org", "deferred", mark);
    assert.equal(deferred.dsn, "4.2.0");
    assert.equal(deferred.detail, "host mx1.example.org[127.0.0.2] said: 450 4.2.0 <erin@example.org>: Recipient address rejected: Greylisted (in reply to RCPT TO command)");

    mx1.behave({ rcpt: {} });
    await waitForDelivery(agent, id, "erin@example.org", "sent", mark);
    await waitForRemoval(agent, id, mark);
    assert.equal(mx1.messagesFor("bob@example.org").length, 1, "bob got exactly one copy");
    assert.equal(mx1.messagesFor("erin@example.org").length, 1);
    assert.equal(mx1.messagesFor("dave@example.org").length, 0);
    assert.deepEqual(mx1.messages[1]?.rcptTo.map((r) => r.address), ["erin@example.org"], "the retry names only the recipient still pending");
    assert.equal(deliveryLines(agent, id, "bob@example.org").length, 1);
    assert.equal(deliveryLines(agent, id, "dave@example.org").length, 1);

    const notice = await waitForBounceNotice(agent, id, "alice", mark);
    const recipients = deliveryStatus(notice);
    assert.deepEqual(recipients.map((r) => r.get("final-recipient")), ["rfc822; dave@example.org"]);
    assert.equal(recipients[0]!.get("status"), "5.1.1");
    // The server's reply: diagnostic type smtp, and Postfix's "host … said:" in the notice.
    assert.equal(recipients[0]!.get("diagnostic-code"), "smtp; 550 5.1.1 <dave@example.org>: Recipient address rejected: User unknown in virtual mailbox table");
    assert.ok(
      (notice.text ?? "").replace(/\s+/g, " ").includes("<dave@example.org>: host mx1.example.org said: 550 5.1.1 <dave@example.org>: Recipient address rejected: User unknown in virtual mailbox table"),
      notice.text,
    );
  });

  test("recipients with different NOTIFY parameters go in separate transactions of one session, each with its own NOTIFY", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    const mark = agent.log().length;
    const id = await submit(
      agent,
      ALICE,
      [
        { address: "bob@example.org", notify: "SUCCESS,FAILURE" },
        { address: "dave@example.org", notify: "NEVER" },
        { address: "erin@example.org", notify: "SUCCESS,FAILURE" },
        "frank@example.org",
      ],
      "DSN parameters",
    );
    await waitForRemoval(agent, id, mark);
    const transactions = mx1.messages.map((m) => m.rcptTo.map((r) => `${r.address} ${r.args.NOTIFY ?? "-"}`).join(", ")).sort();
    assert.deepEqual(transactions, [
      "bob@example.org SUCCESS,FAILURE, erin@example.org SUCCESS,FAILURE",
      "dave@example.org NEVER",
      "frank@example.org -",
    ]);
    assert.equal(new Set(mx1.messages.map((m) => m.raw.toString("latin1"))).size, 1, "the same message in every transaction");
    assert.equal(new Set(mx1.messages.map((m) => m.connection)).size, 1, "all transactions in one session");
  });

  test("messages in quick succession to one MX reuse the session: fewer connections than messages", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    const mark = agent.log().length;
    const count = 4;
    for (let i = 1; i <= count; i++) {
      const id = await submit(agent, ALICE, ["bob@example.org"], `burst ${i}`);
      await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    }
    assert.equal(mx1.messages.length, count);
    assert.ok(mx1.connections < count, `${mx1.connections} connections for ${count} messages`);
  });

  test("when one transaction of a message ends at RCPT, the next transaction on the session still delivers", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    mx1.behave({ rcpt: { "dave@example.org": { code: 450, text: "4.7.1 <dave@example.org>: Recipient address rejected: try again later" } } });
    const mark = agent.log().length;
    // Different NOTIFY parameters: two transactions, dave's first.
    const id = await submit(agent, ALICE, [{ address: "dave@example.org", notify: "NEVER" }, "bob@example.org"], "two transactions");
    const bob = await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    assert.equal(bob.dsn, "2.0.0");
    assert.equal(deliveryLines(agent, id, "bob@example.org").length, 1, "bob delivered at the first attempt, not bounced or deferred");
    await waitForDelivery(agent, id, "dave@example.org", "deferred", mark);
    mx1.behave({ rcpt: {} });
    await waitForDelivery(agent, id, "dave@example.org", "sent", mark);
  });

  test("a session whose transaction ended at RCPT is reset before it carries the next message", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    mx1.behave({ rcpt: { "dave@example.org": { code: 550, text: "5.1.1 <dave@example.org>: Recipient address rejected: User unknown" } } });
    const mark = agent.log().length;
    const refused = await submit(agent, ALICE, ["dave@example.org"], "refused at RCPT");
    await waitForDelivery(agent, refused, "dave@example.org", "bounced", mark);
    // Without RSET the server would still be inside the first transaction and refuse this MAIL (503).
    const id = await submit(agent, ALICE, ["bob@example.org"], "after the refusal");
    await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    assert.equal(deliveryLines(agent, id, "bob@example.org").length, 1, "delivered at the first attempt");
    assert.ok(mx1.connections <= 1, `${mx1.connections} connections: the session was not reused`);
  });
});

describe("TLS policies", () => {
  let agent: AgentProcess;
  before(async () => {
    // There is no configuration key for the CAs of MX hosts: the agent trusts the test CA through Node's environment.
    agent = await startAgent(worldConfig(world, { delivery: { tlsPolicy: "may", tlsPolicies: { "encrypt.example": "encrypt", "verify.example": "verify" } } }), {
      env: { NODE_EXTRA_CA_CERTS: world.caFile },
    });
  });
  after(() => agent.cleanup());

  test("may: STARTTLS is used when the MX offers it", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org"], "opportunistic TLS");
    await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    assert.equal(mx1.messages[0]?.secure, true);
  });

  test("may: when the TLS handshake fails the agent connects again in plaintext and delivers", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    mx1.behave({ tls: "broken" });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org"], "TLS broken");
    const sent = await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    assert.equal(sent.relay, `mx1.example.org[127.0.0.2]:${world.port}`);
    assert.equal(mx1.connections, 2, "one connection for the failed handshake, one in plaintext");
    assert.equal(mx1.messages.length, 1);
    assert.equal(mx1.messages[0]!.secure, false);
  });

  test("encrypt (per domain): an MX without STARTTLS defers that domain only, with reason 4.7.4; with STARTTLS it delivers", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]), "encrypt.example": mx(["mx1.example.org", 10]) });
    mx1.behave({ tls: "none" });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["bob@example.org", "carol@encrypt.example"], "TLS required");
    await waitForDelivery(agent, id, "bob@example.org", "sent", mark);
    const deferred = await waitForDelivery(agent, id, "carol@encrypt.example", "deferred", mark);
    assert.deepEqual(mx1.messages.map((m) => [m.rcptTo[0]?.address, m.secure]), [["bob@example.org", false]], "nothing for encrypt.example went out in plaintext");
    assert.ok(!agent.log().slice(mark).includes(`${id}: sender non-delivery notification`));

    mx1.behave({ tls: "self-signed" });
    await waitForDelivery(agent, id, "carol@encrypt.example", "sent", mark);
    const carol = mx1.messagesFor("carol@encrypt.example");
    assert.equal(carol.length, 1);
    assert.equal(carol[0]!.secure, true, "encrypt accepts any certificate, but only over TLS");
    // Postfix: "TLS is required, but was not offered by host …" (smtp-client.ts has this very check).
    assert.equal(deferred.dsn, "4.7.4");
    assert.equal(deferred.detail, `TLS is required, but was not offered by host mx1.example.org[127.0.0.2]:${world.port}`);
  });

  test("encrypt: a failed TLS handshake defers without a plaintext retry, in a log line of its own", async () => {
    world.setZone({ "encrypt.example": mx(["mx1.example.org", 10]) });
    mx1.behave({ tls: "broken" });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["carol@encrypt.example"], "TLS required, handshake fails");
    const [loose] = await agent.waitForLog(new RegExp(`${id}: to=<carol@encrypt\\.example>, .*status=deferred \\(TLS handshake with mx1\\.example\\.org\\[127\\.0\\.0\\.2\\]:${world.port} failed: .*`), 15_000, mark);
    assert.equal(mx1.connections, 1, "no second connection in plaintext");
    assert.match(loose, /dsn=4\.7\.5/);

    mx1.behave({ tls: "self-signed" });
    await waitForDelivery(agent, id, "carol@encrypt.example", "sent", mark);
    assert.equal(mx1.messages.length, 1);
    assert.equal(mx1.messages[0]!.secure, true);
    // OpenSSL's message ends in a newline; a log line must not (one event, one line).
    const deferred = deliveryLines(agent, id, "carol@encrypt.example").filter((l) => l.status === "deferred");
    assert.ok(deferred.length > 0, `the deferral is not one well-formed log line:\n${agent.log().slice(agent.log().indexOf(loose))}`);
  });

  test("verify (per domain): a certificate for another name or an untrusted one defers; a CA-signed one for the MX name delivers", async () => {
    world.setZone({ "verify.example": mx(["mx1.example.org", 10]) });
    mx1.behave({ tls: "wrong-name" });
    const mark = agent.log().length;
    const id = await submit(agent, ALICE, ["carol@verify.example"], "TLS verified");
    const mismatch = await waitForDelivery(agent, id, "carol@verify.example", "deferred", mark);
    assert.equal(mismatch.dsn, "4.7.5");
    assert.match(mismatch.detail, new RegExp(`^TLS handshake with mx1\\.example\\.org\\[127\\.0\\.0\\.2\\]:${world.port} failed: Hostname/IP does not match certificate's altnames`));

    mx1.behave({ tls: "self-signed" });
    const untrusted = await waitForDelivery(agent, id, "carol@verify.example", "deferred", agent.log().indexOf(mismatch.line) + mismatch.line.length);
    assert.equal(untrusted.dsn, "4.7.5");
    assert.match(untrusted.detail, new RegExp(`^TLS handshake with mx1\\.example\\.org\\[127\\.0\\.0\\.2\\]:${world.port} failed: self[- ]signed certificate`));
    assert.equal(mx1.messages.length, 0);

    mx1.behave({ tls: "ca-signed" });
    await waitForDelivery(agent, id, "carol@verify.example", "sent", mark);
    assert.equal(mx1.messages.length, 1);
    assert.equal(mx1.messages[0]!.secure, true);
  });
});
