// The agent's local HTTP submission API over real HTTP on loopback: every refusal with its status and
// problem type, leaving nothing in the spool; 202 only once the message is committed, with its status;
// 503 with Retry-After when the queue cannot take mail; tokens from a file the agent makes; reload.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { loadAgentConfig } from "../../agent/config.js";
import { ConfigError } from "../../shared/config-file.js";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { SmallDisk } from "../support/small-disk.js";
import { OTHER_TOKEN, TOKEN, apiPort, apiRequest, assertNothingQueued, assertProblem, httpSection, postJson } from "../support/http-api.js";
import { LOCAL_CONFIG, LOCAL_RCPT, allQueueFiles, readQueueFile } from "../support/queue-durability.js";

const SENDER = "cron@home.example.net";
const MESSAGE = { from: SENDER, to: LOCAL_RCPT, subject: "backup done", text: "all fine\n" };
/** The message size limit of these agents, SMTP's and the API's alike. */
const LIMIT = 64 * 1024;

describe("configuration", () => {
  test("the embedded defaults turn the API on at 127.0.0.1:8025 with a token file in the spool; a file without http: does not", async () => {
    const embedded = loadAgentConfig(null);
    assert.deepEqual(embedded.http, {
      listen: { host: "127.0.0.1", port: 8025 },
      tokens: [{ name: "local", file: join(embedded.spool, "private", "http-token"), nullSender: false, senders: embedded.localDomains.map((d) => `*@${d}`) }],
    });
    const dir = await mkdtemp(join(tmpdir(), "hr-http-config-"));
    try {
      const file = join(dir, "homerelay.yaml");
      await writeFile(file, "hostname: home.example.net\n");
      assert.equal(loadAgentConfig(file).http, undefined);
      await writeFile(file, "hostname: home.example.net\nhttp: {}\n");
      assert.deepEqual(loadAgentConfig(file).http, { listen: { host: "127.0.0.1", port: 8025 }, tokens: [] });
      await writeFile(
        file,
        stringify({
          hostname: "home.example.net",
          http: {
            listen: "127.0.0.1:8025",
            tokens: [
              { token: "short" },
              { token: TOKEN, hash: `sha256:${"0".repeat(64)}` },
              { name: "twice", hash: "sha256:not-hex" },
              { name: "twice", file: "/etc/homerelay/token" },
            ],
          },
        }),
      );
      const problems = (() => {
        try {
          loadAgentConfig(file);
        } catch (err) {
          if (err instanceof ConfigError) return err.message;
          throw err;
        }
        return assert.fail("the configuration was accepted");
      })();
      assert.match(problems, /http\.tokens\.0\.token: expected a token of at least 16 letters/);
      assert.match(problems, /http\.tokens\.1: give exactly one of token, hash or file/);
      assert.match(problems, /http\.tokens\.2\.hash: expected sha256:<64 hex digits>/);
      assert.match(problems, /http\.tokens\.3\.name: token name twice is used twice/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("refusals", () => {
  let agent: AgentProcess;
  let port: number;
  before(async () => {
    agent = await startAgent({ ...LOCAL_CONFIG, http: httpSection(), limits: { messageSize: LIMIT, recipients: 3 } });
    port = apiPort(agent);
  });
  after(() => agent.cleanup());

  /** Each refusal leaves the spool as it was: empty. */
  const refused = async (answer: Awaited<ReturnType<typeof apiRequest>>, status: number, name: string) => {
    const problem = assertProblem(answer, status, name);
    await assertNothingQueued(agent.spool);
    return problem;
  };

  test("401 without a bearer token, with a bad one, with another scheme; WWW-Authenticate: Bearer", async () => {
    const none = await apiRequest(port, { type: "application/json", body: JSON.stringify(MESSAGE) });
    await refused(none, 401, "token-missing");
    assert.equal(none.headers["www-authenticate"], 'Bearer realm="homerelay"');
    const basic = await apiRequest(port, { type: "application/json", body: JSON.stringify(MESSAGE), headers: { authorization: `Basic ${Buffer.from(`u:${TOKEN}`).toString("base64")}` } });
    await refused(basic, 401, "token-missing");
    const wrong = await postJson(port, MESSAGE, `${TOKEN}x`);
    await refused(wrong, 401, "bad-token");
    assert.equal(wrong.headers["www-authenticate"], 'Bearer realm="homerelay", error="invalid_token"');
    await agent.waitForLog(/http\[\d+\]: warning: http\[127\.0\.0\.1\]: bearer token authentication failed$/m);
    // The status of a message needs the token too.
    await refused(await apiRequest(port, { method: "GET", path: "/v1/messages/0VJ3Q8M2ZK4T7R1A" }), 401, "token-missing");
  });

  test("415 for a body that is neither application/json nor message/rfc822", async () => {
    await refused(await apiRequest(port, { token: TOKEN, type: "text/plain", body: "hello" }), 415, "unsupported-media-type");
    await refused(await apiRequest(port, { token: TOKEN, body: JSON.stringify(MESSAGE) }), 415, "unsupported-media-type");
  });

  test("400 for invalid JSON, unknown members, bad addresses, no recipients, a malformed form", async () => {
    await refused(await apiRequest(port, { token: TOKEN, type: "application/json", body: '{"from": "cron@home.example.net",' }), 400, "invalid-json");
    const unknown = await refused(await postJson(port, { ...MESSAGE, attachments: [{ filename: "passwd", path: "/etc/passwd" }] }), 400, "unknown-field");
    assert.equal(unknown.field, "/attachments/0/path");
    const bad = await refused(await postJson(port, { ...MESSAGE, cc: ["ok@example.org", "not an address"] }), 400, "bad-address");
    assert.equal(bad.field, "/cc/1");
    await refused(await postJson(port, { from: SENDER, subject: "to nobody", text: "x" }), 400, "no-recipients");
    await refused(await postJson(port, { ...MESSAGE, to: 42 }), 400, "invalid-message");
    await refused(await postJson(port, { ...MESSAGE, to: ["a@example.org", "b@example.org", "c@example.org", "d@example.org"] }), 400, "too-many-recipients");
    await refused(await postJson(port, { ...MESSAGE, to: "nobody@home.example.net" }), 400, "unknown-recipient");
  });

  test("400 for CR, LF or NUL in any header value or address: header injection changes nothing in the spool", async () => {
    const attempts: [Record<string, unknown>, string][] = [
      [{ ...MESSAGE, subject: "done\r\nBcc: victim@example.com" }, "/subject"],
      [{ ...MESSAGE, to: `${LOCAL_RCPT}\nBcc: victim@example.com` }, "/to"],
      [{ ...MESSAGE, from: `${SENDER}\r\nSender: ceo@bank.example` }, "/from"],
      [{ ...MESSAGE, headers: { "X-Job": "nightly\0" } }, "/headers/X-Job"],
      [{ ...MESSAGE, headers: { "X-Job\r\nBcc": "victim@example.com" } }, "/headers/X-Job\r\nBcc"],
      [{ ...MESSAGE, attachments: [{ filename: "a.txt\r\nContent-Type: text/html", content: "aGk=" }] }, "/attachments/0/filename"],
      [{ ...MESSAGE, envelope: { from: SENDER, to: `${LOCAL_RCPT}\r\nRCPT TO:<victim@example.com>` } }, "/envelope/to"],
    ];
    for (const [json, field] of attempts) {
      const problem = await refused(await postJson(port, json), 400, "header-injection");
      assert.equal(problem.field, field);
    }
    // The log line of a refusal stays one line whatever the request held.
    assert.doesNotMatch(agent.log(), /^Bcc/m);
  });

  test("403 for a sender, a header From: or the null sender the token may not use", async () => {
    await refused(await postJson(port, { ...MESSAGE, from: "ceo@bank.example" }), 403, "sender-not-allowed");
    await agent.waitForLog(/NOQUEUE: reject: POST \/v1\/messages from http\[127\.0\.0\.1\]: 403 sender-not-allowed: <ceo@bank\.example>: Sender address rejected: not owned by token cron; token=cron proto=HTTP/);
    // An allowed envelope sender does not let a foreign From: through.
    await refused(await postJson(port, { ...MESSAGE, from: "ceo@bank.example", envelope: { from: SENDER, to: LOCAL_RCPT } }), 403, "from-not-allowed");
    await refused(await postJson(port, { ...MESSAGE, envelope: { from: "", to: LOCAL_RCPT } }), 403, "null-sender-not-allowed");
    await refused(await postJson(port, MESSAGE, OTHER_TOKEN), 403, "sender-not-allowed");
  });

  test("the raw form: its envelope fields, its From:, its lines", async () => {
    const raw = (body: string, headers: Record<string, string>) => apiRequest(port, { token: TOKEN, type: "message/rfc822", body, headers });
    const envelope = { "envelope-from": `<${SENDER}>`, "envelope-to": `<${LOCAL_RCPT}>` };
    await refused(await raw(`From: <${SENDER}>\r\n\r\nx\r\n`, { "envelope-from": `<${SENDER}>` }), 400, "missing-field");
    await refused(await raw(`From: <${SENDER}>\r\n\r\nx\r\n`, { ...envelope, "envelope-to": LOCAL_RCPT }), 400, "bad-envelope");
    // A line break percent-encoded into an envelope address is no way around the header field syntax.
    await refused(await raw(`From: <${SENDER}>\r\n\r\nx\r\n`, { ...envelope, "envelope-from": "<cron%0D%0A@home.example.net>" }), 400, "bad-envelope");
    await refused(await raw("Subject: no From\r\n\r\nx\r\n", envelope), 400, "bad-message");
    await refused(await raw("From: <ceo@bank.example>\r\n\r\nx\r\n", envelope), 403, "from-not-allowed");
    await refused(await raw(`From: <${SENDER}>\r\n\r\n${"x".repeat(1200)}\r\n`, envelope), 400, "line-too-long");
  });

  test("413 for more than the SMTP size limit: declared, chunked, or once composed", async () => {
    const big = JSON.stringify({ ...MESSAGE, text: "x".repeat(LIMIT) });
    await refused(await apiRequest(port, { token: TOKEN, type: "application/json", body: big }), 413, "too-large");
    await refused(await apiRequest(port, { token: TOKEN, type: "application/json", body: big, chunked: true }), 413, "too-large");
    // The JSON fits, the composed message (base64 in 76-column lines, MIME headers) does not.
    const attachment = Buffer.alloc(48_750, 0xa5).toString("base64");
    const body = JSON.stringify({ ...MESSAGE, attachments: [{ filename: "blob.bin", content: attachment }] });
    assert.ok(body.length < LIMIT);
    await refused(await apiRequest(port, { token: TOKEN, type: "application/json", body }), 413, "too-large");
  });

  test("404 for unknown resources and IDs, 405 with Allow for other methods", async () => {
    await refused(await apiRequest(port, { method: "GET", path: "/v1/messages/0VJ3Q8M2ZK4T7R1A", token: TOKEN }), 404, "not-found");
    await refused(await apiRequest(port, { method: "GET", path: "/v1/messages/..%2Fprivate%2Fhttp-token", token: TOKEN }), 404, "not-found");
    await refused(await apiRequest(port, { method: "GET", path: "/v2/messages", token: TOKEN }), 404, "not-found");
    const put = await apiRequest(port, { method: "PUT", token: TOKEN, type: "application/json", body: "{}" });
    await refused(put, 405, "method-not-allowed");
    assert.equal(put.headers.allow, "POST");
  });

  test("no token ever reaches the log", () => {
    for (const token of [TOKEN, OTHER_TOKEN]) assert.ok(!agent.log().includes(token.slice(0, 16)), "a token in the log");
  });
});

describe("accepted messages", () => {
  let agent: AgentProcess;
  let port: number;
  before(async () => {
    agent = await startAgent({ ...LOCAL_CONFIG, http: httpSection(), routes: [{ match: "hold.example", route: "hold" }] });
    port = apiPort(agent);
  });
  after(() => agent.cleanup());

  test("202 with the queue ID and a status URL, logged as Postfix logs a submission", async () => {
    const answer = await postJson(port, { ...MESSAGE, bcc: "postmaster@home.example.net" });
    assert.equal(answer.status, 202, answer.text);
    const { id, statusUrl, envelope } = answer.json as { id: string; statusUrl: string; envelope: unknown };
    assert.match(id, /^[0-9A-HJKMNP-TV-Z]{16}$/);
    assert.equal(statusUrl, `http://127.0.0.1:${port}/v1/messages/${id}`);
    assert.equal(answer.headers.location, statusUrl);
    assert.deepEqual(envelope, { from: SENDER, to: [LOCAL_RCPT, "postmaster@home.example.net"] });
    await agent.waitForLog(new RegExp(`http\\[\\d+\\]: ${id}: client=http\\[127\\.0\\.0\\.1\\], token=cron$`, "m"));
    await agent.waitForLog(new RegExp(`http\\[\\d+\\]: ${id}: from=<cron@home\\.example\\.net>, size=\\d+, nrcpt=2 \\(queue active\\)`));
    await agent.waitForLog(new RegExp(`${id}: removed`));
    const status = await apiRequest(port, { method: "GET", path: `/v1/messages/${id}`, token: TOKEN });
    assert.equal(status.status, 200, status.text);
    assert.equal(status.json?.state, "done");
    assert.deepEqual(
      (status.json?.recipients as { recipient: string; status: string; relay: string }[]).map((r) => [r.recipient, r.status, r.relay]),
      [
        [LOCAL_RCPT, "sent", "local"],
        ["postmaster@home.example.net", "sent", "local"],
      ],
    );
    // Another token's holder cannot tell the message exists.
    assertProblem(await apiRequest(port, { method: "GET", path: `/v1/messages/${id}`, token: OTHER_TOKEN }), 404, "not-found");
  });

  test("the raw form with LF line ends is queued with CRLF, our Received:, Message-ID: and Date:; held, it stays queued", async () => {
    const answer = await apiRequest(port, {
      token: OTHER_TOKEN,
      type: "message/rfc822",
      headers: { "envelope-from": "<>", "envelope-to": "<someone@hold.example>" },
      body: "From: Other <other@example.com>\nSubject: raw form\n\nline one\nline two",
    });
    assert.equal(answer.status, 202, answer.text);
    const id = answer.json?.id as string;
    await agent.waitForLog(new RegExp(`${id}: hold: routed to the hold queue`));
    const { record, content } = await readQueueFile(agent.spool, "hold", id);
    assert.equal(record.origin, "http");
    assert.deepEqual(record.envelope, { sender: "", recipients: [{ address: "someone@hold.example" }] });
    assert.equal(
      content,
      [
        "Received: from unknown (unknown [127.0.0.1])",
        `\tby home.example.net (homerelay) with HTTP id ${id}`,
        `\t; ${content.match(/\t; (.*)\r\n/)![1]}`,
        "From: Other <other@example.com>",
        "Subject: raw form",
        `Date: ${content.match(/\r\nDate: (.*)\r\n/)![1]}`,
        `Message-ID: <${id}@home.example.net>`,
        "",
        "line one",
        "line two",
        "",
      ].join("\r\n"),
    );
    const status = await apiRequest(port, { method: "GET", path: `/v1/messages/${id}`, token: OTHER_TOKEN });
    assert.deepEqual(status.json, { id, state: "hold", arrival: new Date(record.arrival as number).toISOString(), from: "", recipients: [{ recipient: "someone@hold.example", status: "queued" }] });
  });
});

describe("a queue that cannot take mail, tokens from a file, reload", () => {
  let agent: AgentProcess;
  let port: number;
  let tokenFile: string;
  const config = (queueMinFree: number, cronToken: string) => ({
    ...LOCAL_CONFIG,
    limits: { queueMinFree },
    http: { ...httpSection(), tokens: [{ name: "cron", token: cronToken, senders: ["*@home.example.net"] }, { name: "local", file: tokenFile }] },
  });
  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), "hr-agent-"));
    tokenFile = join(dir, "spool", "private", "http-token");
    agent = await startAgent(config(2 ** 52, TOKEN), { dir });
    port = apiPort(agent);
  });
  after(() => agent.cleanup());

  test("a token file is made on first start, mode 0600, and the log says where", async () => {
    await agent.waitForLog(new RegExp(`made API token local in ${tokenFile.replace(/[.]/g, "\\.")} \\(mode 0600\\)`));
    assert.equal((await stat(tokenFile)).mode & 0o777, 0o600);
    assert.match((await readFile(tokenFile, "utf8")).trim(), /^[A-Za-z0-9_-]{43}$/);
  });

  test("503 with Retry-After while the spool has less free space than queueMinFree", async () => {
    const answer = await postJson(port, MESSAGE);
    assertProblem(answer, 503, "queue-unavailable");
    assert.equal(answer.headers["retry-after"], "60");
    await agent.waitForLog(/warning: NOQUEUE: not enough free space in .* for http\[127\.0\.0\.1\] \(queueMinFree 4503599627370496 bytes\)/);
    await assertNothingQueued(agent.spool);
  });

  test("SIGHUP: the new token and limits apply, the old token is refused", async () => {
    const NEW = "new-cron-token-0123456789abcdef";
    await writeFile(agent.configFile, stringify({ ...config(1, NEW), hostname: "home.example.net", spool: agent.spool, mailboxes: agent.mailboxes, listeners: [{ role: "submission", listen: "127.0.0.1:0" }], dns: { servers: ["127.0.0.1:9"], timeout: 1 } }));
    const mark = agent.log().length;
    agent.child.kill("SIGHUP");
    await agent.waitForLog(/reload -- version/, 10_000, mark);
    assertProblem(await postJson(port, MESSAGE), 401, "bad-token");
    const answer = await postJson(port, MESSAGE, NEW);
    assert.equal(answer.status, 202, answer.text);
    await agent.waitForLog(new RegExp(`${answer.json?.id as string}: removed`));
  });

  test("an unwritable spool answers 503 and leaves nothing; once writable, mail is queued and delivered", async () => {
    const incoming = join(agent.spool, "incoming");
    await rm(incoming, { recursive: true });
    await writeFile(incoming, "not a directory");
    try {
      const answer = await postJson(port, MESSAGE, (await readFile(tokenFile, "utf8")).trim());
      assertProblem(answer, 503, "queue-unavailable");
      assert.equal(answer.headers["retry-after"], "60");
      await agent.waitForLog(/warning: NOQUEUE: queue file write error from http\[127\.0\.0\.1\]: ENOTDIR: /);
      assert.equal(agent.child.exitCode, null, "the agent exited");
    } finally {
      await rm(incoming);
      await mkdir(incoming, { mode: 0o700 });
    }
    assert.deepEqual(await allQueueFiles(agent.spool), []);
    const answer = await postJson(port, MESSAGE, (await readFile(tokenFile, "utf8")).trim());
    assert.equal(answer.status, 202, answer.text);
    await agent.waitForLog(new RegExp(`${answer.json?.id as string}: to=<alice@home\\.example\\.net>, relay=local, .*status=sent`));
  });

  test("after a restart the token file's token still works", async () => {
    await agent.stop();
    agent = await agent.restart();
    port = apiPort(agent);
    assert.doesNotMatch(agent.log(), /made API token/);
    const answer = await postJson(port, MESSAGE, (await readFile(tokenFile, "utf8")).trim());
    assert.equal(answer.status, 202, answer.text);
  });
});

test("a disk that fills while the message is written: 503 with Retry-After, nothing left behind, the agent runs on", async (t) => {
  const disk = await SmallDisk.mount(t, "1m");
  if (!disk) return;
  const agent = await startAgent({ ...LOCAL_CONFIG, spool: disk.path, http: httpSection(), limits: { queueMinFree: 1, messageSize: 4 * 1024 * 1024 } }, { dir: disk.dir });
  t.after(() => agent.stop());
  const port = apiPort(agent);
  const big = { ...MESSAGE, attachments: [{ filename: "disk-filler.bin", content: Buffer.alloc(2 * 1024 * 1024, 0x5a).toString("base64") }] };
  const full = await postJson(port, big);
  assertProblem(full, 503, "queue-unavailable");
  assert.equal(full.headers["retry-after"], "60");
  await agent.waitForLog(/warning: [0-9A-Z]{16}: queue file write error from http\[127\.0\.0\.1\]: ENOSPC: /);
  await assertNothingQueued(disk.path);
  const small = await postJson(port, MESSAGE);
  assert.equal(small.status, 202, small.text);
  await agent.waitForLog(new RegExp(`${small.json?.id as string}: removed`));
});
