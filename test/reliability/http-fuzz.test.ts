// Property-based abuse of the cloud's signed API over real HTTP (fast-check, the Node entry): valid
// submissions changed before signing (the signature holds, later checks must catch it) and after (the
// signature must fail) — bodies, gzip, digests, signature fields, envelope fields, idempotency keys, media
// types, methods, paths, authorities — and raw bytes that are no HTTP. Every answer is 200 with a relay
// result or a documented problem (type, title and status as problems.ts lists them), never a 500; the
// server keeps serving. HR_FUZZ_RUNS sets the number of requests (a third of them for raw bytes).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import fc from "fast-check";
import { PROBLEMS } from "../../cloud/problems.js";
import { PROBLEM_BASE } from "../../shared/problem-details.js";
import type { CloudServer } from "../../cloud/serve.js";
import { makeKey, send, signed, submission, type Answer } from "../support/cloud-client.js";
import { startCloudToSink, type CloudToSink } from "../support/cloud-to-sink.js";
import { applyChange, requestChanges } from "../support/cloud-request-fuzz.js";
import { mebibytes } from "../support/process-memory.js";

const RUNS = Number(process.env.HR_FUZZ_RUNS ?? 1500);
const SEED = process.env.HR_FUZZ_SEED === undefined ? undefined : Number(process.env.HR_FUZZ_SEED);
const KEY = makeKey("home-1");
const MESSAGE = Buffer.from("From: <alice@home.example.net>\r\nTo: <bob@example.org>\r\nSubject: fuzz\r\n\r\nhello\r\n");

let far: CloudToSink;
let cloud: CloudServer;
let host: string;

before(async () => {
  far = await startCloudToSink({
    // A rate the fuzzer cannot use up, so 429 does not hide the checks behind it.
    keys: [{ id: KEY.id, publicKey: KEY.publicKey, senders: ["*@home.example.net"], ratePerMinute: 10_000_000 }],
    // The store's fsyncs (three per relayed request) are not under test here: in memory where Linux offers that.
    ...(existsSync("/dev/shm") ? { storeIn: "/dev/shm" } : {}),
    extra: { maxMessageSize: 200_000 },
  });
  cloud = far.cloud;
  host = `127.0.0.1:${cloud.port}`;
});

after(() => far?.close());

/** 200 with a relay result (or, for /v1/whoami, the caller), or a problem exactly as documented; never a 500. */
function assertDocumentedAnswer(answer: Answer, path: string): void {
  assert.notEqual(answer.status, 500, `500: ${answer.text}`);
  if (answer.status === 200 && path === "/v1/whoami") {
    assert.deepEqual(answer.json, { ip: "127.0.0.1", keyid: KEY.id });
    return;
  }
  if (answer.status === 200) {
    assert.ok(Array.isArray(answer.json?.results), `a 200 carries a relay result: ${answer.text}`);
    return;
  }
  assert.equal(answer.headers["content-type"], "application/problem+json", `${answer.status}: ${answer.text}`);
  const type = String(answer.json?.type);
  assert.ok(type.startsWith(PROBLEM_BASE), type);
  const name = type.slice(PROBLEM_BASE.length) as keyof typeof PROBLEMS;
  const documented = PROBLEMS[name];
  assert.ok(documented, `undocumented problem type ${type}`);
  assert.equal(answer.status, documented.status, `${name} with HTTP ${answer.status}`);
  assert.equal(answer.json?.status, documented.status);
  assert.equal(answer.json?.title, documented.title);
  assert.equal(typeof answer.json?.detail, "string");
  if (answer.status === 401) assert.ok(answer.headers["accept-signature"], "a 401 carries Accept-Signature");
  if (answer.status === 405) assert.ok(answer.headers.allow, "a 405 carries Allow");
}

describe("the signed API", () => {
  test(`${RUNS} changed submissions: each answered 200 or with a documented problem, never 500`, { timeout: 600_000 }, async (t) => {
    const rssBefore = process.memoryUsage().rss;
    const statuses = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(requestChanges, async ({ beforeSigning, afterSigning }) => {
        let request = submission(host, { body: MESSAGE, envelopeFrom: "<alice@home.example.net>", envelopeTo: "<bob@example.org>" });
        for (const change of beforeSigning) request = applyChange(request, change);
        // A request whose covered fields are gone cannot be signed: it goes out unsigned.
        request = await signed(request, KEY).catch(() => request);
        for (const change of afterSigning) request = applyChange(request, change);
        // A GET with a body is pinned below; at random it would only find that one answer again.
        if (request.method === "GET") request = { ...request, body: undefined, chunked: false };
        const answer = await send(cloud.port, request);
        assertDocumentedAnswer(answer, request.path);
        const key = answer.status === 200 ? "200" : `${answer.status} ${String(answer.json?.type).slice(PROBLEM_BASE.length)}`;
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
      }),
      { numRuns: RUNS, includeErrorInReport: true, ...(SEED !== undefined ? { seed: SEED } : {}) },
    );
    t.diagnostic(`answers: ${[...statuses].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ×${n}`).join(", ")}`);
    t.diagnostic(`test process RSS grew by ${mebibytes(process.memoryUsage().rss - rssBefore)}`);
    const health = await send(cloud.port, { method: "GET", path: "/healthz", host, headers: {} });
    assert.equal(health.status, 200);
  });

  test(`${Math.ceil(RUNS / 3)} streams of raw bytes: answered with an HTTP 4xx or closed, and the server keeps serving`, { timeout: 600_000 }, async () => {
    const raw = fc.oneof(
      fc.uint8Array({ maxLength: 4000 }).map((b) => Buffer.from(b)),
      fc.tuple(fc.constantFrom("POST", "GET", "PRI", "POST  ", "\0"), fc.string({ maxLength: 200 })).map(([m, rest]) => Buffer.from(`${m} /v1/messages HTTP/1.1\r\nHost: ${host}\r\n${rest}\r\n\r\n`)),
      fc.string({ maxLength: 300 }).map((s) => Buffer.from(`POST /v1/messages HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${s.length * 7}\r\nTransfer-Encoding: chunked\r\n\r\n${s}`)),
    );
    await fc.assert(
      fc.asyncProperty(raw, async (bytes) => {
        const answer = await rawExchange(cloud.port, bytes);
        assert.ok(answer === "" || /^HTTP\/1\.1 4\d\d /.test(answer), `answered: ${JSON.stringify(answer.slice(0, 200))}`);
      }),
      { numRuns: Math.ceil(RUNS / 3), includeErrorInReport: true, ...(SEED !== undefined ? { seed: SEED } : {}) },
    );
    const health = await send(cloud.port, { method: "GET", path: "/healthz", host, headers: {} });
    assert.equal(health.status, 200);
  });
});

describe("found by the fuzzer, pinned", () => {
  test("an Envelope-To of 1000 recipients (the protocol's and the agent's limit) is relayed, not refused by the HTTP layer", async () => {
    const recipients = Array.from({ length: 1000 }, (_, i) => `<recipient-${i}@example.org>`).join(", ");
    const request = await signed(submission(host, { body: MESSAGE, envelopeFrom: "<alice@home.example.net>", envelopeTo: recipients }), KEY);
    const answer = await send(cloud.port, request);
    assert.equal(answer.status, 200, `HTTP ${answer.status} ${answer.headers["content-type"] ?? "(no content type)"}: ${answer.text.slice(0, 200)}`);
    assert.equal((answer.json?.results as unknown[]).length, 1000);
  });

  test("a GET with a body to /v1/messages gets the documented 405 problem, not a bare 400", async () => {
    const request = { ...(await signed(submission(host, { body: MESSAGE, envelopeFrom: "<alice@home.example.net>", envelopeTo: "<bob@example.org>" }), KEY)), method: "GET", chunked: true };
    const answer = await send(cloud.port, request);
    assertDocumentedAnswer(answer, request.path);
    assert.equal(answer.status, 405);
  });
});

/** Write `bytes`, half-close, and read what comes back until the server closes (or 5 s pass: that fails). */
function rawExchange(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: "127.0.0.1" });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer and no close within 5 s for ${JSON.stringify(bytes.subarray(0, 80).toString("latin1"))}`));
    }, 5000);
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString("latin1"));
    });
    socket.once("connect", () => socket.end(bytes));
  });
}
