// The embedded file store of `cloud serve`: nonces and idempotency records survive a restart (also through the
// Node entry), expired entries are ignored and compacted away at start, a torn last journal line is tolerated.
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCloudConfig } from "../../cloud/config.js";
import { PROBLEM_BASE } from "../../shared/problem-details.js";
import { serveCloud } from "../../cloud/serve.js";
import { FileStore } from "../../cloud/store/file-store.js";
import { silentLog } from "../../shared/log.js";
import { makeKey, send, signed, submission } from "../support/cloud-client.js";
import { SmtpUpstream } from "../support/smtp-upstream.js";

const NOW = 1_800_000_000;
const done = { state: "done", fingerprint: "f1", expiresAt: NOW + 100, status: 200, body: `{"id":"r1","results":[]}` } as const;

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "hr-cloud-store-"));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const journal = () => readFile(join(dir, "store", "journal.jsonl"), "utf8");

describe("the file store", () => {
  test("a nonce claimed before a restart is still refused after it; another nonce is not", async () => {
    const store = await FileStore.open(join(dir, "store"), NOW);
    assert.equal(await store.claimNonce("home-1", "n1", NOW + 300, NOW), true);
    assert.equal(await store.claimNonce("home-1", "n1", NOW + 300, NOW), false);
    await store.close();
    const again = await FileStore.open(join(dir, "store"), NOW + 10);
    assert.equal(await again.claimNonce("home-1", "n1", NOW + 310, NOW + 10), false);
    assert.equal(await again.claimNonce("home-2", "n1", NOW + 310, NOW + 10), true, "nonces are per key");
    assert.equal(await again.claimNonce("home-1", "n2", NOW + 310, NOW + 10), true);
    await again.close();
  });

  test("of two concurrent claims of one nonce exactly one wins", async () => {
    const store = await FileStore.open(join(dir, "store"), NOW);
    const claims = await Promise.all([1, 2, 3].map(() => store.claimNonce("home-1", "same", NOW + 300, NOW)));
    assert.deepEqual(claims.sort(), [false, false, true]);
    await store.close();
  });

  test("idempotency records survive a restart: done answers stay, forgotten keys stay forgotten, and the dead process's in-progress claims are dropped", async () => {
    const store = await FileStore.open(join(dir, "store"), NOW);
    assert.equal(await store.beginIdempotent("home-1", "k-done", "f1", NOW + 100, NOW), null);
    await store.finishIdempotent("home-1", "k-done", done);
    assert.equal(await store.beginIdempotent("home-1", "k-busy", "f2", NOW + 100, NOW), null);
    assert.equal(await store.beginIdempotent("home-1", "k-gone", "f3", NOW + 100, NOW), null);
    await store.abandonIdempotent("home-1", "k-gone");
    await store.close();
    const again = await FileStore.open(join(dir, "store"), NOW + 1);
    assert.deepEqual(await again.beginIdempotent("home-1", "k-done", "f9", NOW + 200, NOW + 1), done);
    assert.equal(await again.beginIdempotent("home-1", "k-busy", "f2", NOW + 200, NOW + 1), null, "a relay cut off by the restart may be retried at once");
    assert.equal(await again.beginIdempotent("home-1", "k-gone", "f9", NOW + 200, NOW + 1), null);
    await again.close();
  });

  test("expired entries are ignored on read and dropped from the journal at the next start", async () => {
    const store = await FileStore.open(join(dir, "store"), NOW);
    await store.claimNonce("home-1", "short-lived", NOW + 5, NOW);
    await store.claimNonce("home-1", "long-lived", NOW + 500, NOW);
    await store.beginIdempotent("home-1", "k-short", "f1", NOW + 5, NOW);
    assert.equal(await store.claimNonce("home-1", "short-lived", NOW + 20, NOW + 10), true, "an expired nonce may be used again");
    assert.equal(await store.beginIdempotent("home-1", "k-short", "f2", NOW + 20, NOW + 10), null, "an expired record is no record");
    await store.close();
    assert.equal((await journal()).trim().split("\n").length, 5);
    const later = await FileStore.open(join(dir, "store"), NOW + 100);
    const lines = (await journal()).trim().split("\n").map((l) => JSON.parse(l) as { op: string; nonce?: string });
    assert.deepEqual(lines, [{ op: "nonce", keyid: "home-1", nonce: "long-lived", expiresAt: NOW + 500 }]);
    assert.equal(await later.claimNonce("home-1", "long-lived", NOW + 400, NOW + 100), false);
    await later.close();
  });

  test("a journal grown past 100000 lines is compacted while running", async () => {
    const store = await FileStore.open(join(dir, "store"), NOW);
    const claims = await Promise.all(Array.from({ length: 100_000 }, (_, i) => store.claimNonce("home-1", `n${i}`, NOW + 5, NOW)));
    assert.ok(claims.every(Boolean));
    assert.equal((await journal()).trim().split("\n").length, 100_000);
    assert.equal(await store.claimNonce("home-1", "later", NOW + 400, NOW + 100), true);
    assert.deepEqual((await journal()).trim().split("\n").map((l) => (JSON.parse(l) as { nonce: string }).nonce), ["later"]);
    assert.equal(await store.claimNonce("home-1", "later", NOW + 400, NOW + 100), false);
    await store.close();
  });

  test("every change is in the journal (out of the process) when its call resolves, before any fsync", async () => {
    const store = await FileStore.open(join(dir, "store"), NOW);
    await store.claimNonce("home-1", "n-early", NOW + 300, NOW);
    await store.beginIdempotent("home-1", "k-next", "fp2", NOW + 600, NOW);
    await store.finishIdempotent("home-1", "k-done", { state: "done", fingerprint: "fp", expiresAt: NOW + 600, status: 200, body: `{"id":"x","results":[]}` });
    await store.abandonIdempotent("home-1", "k-next");
    // Read back as a restart after the process was killed would, without closing the store first.
    const lines = (await journal()).trim().split("\n").map((l) => JSON.parse(l) as { op: string; nonce?: string; key?: string });
    assert.deepEqual(lines.map((l) => `${l.op} ${l.nonce ?? l.key}`), ["nonce n-early", "idempotency k-next", "idempotency k-done", "forget k-next"]);
    await store.close();
  });

  test("an answer kept as a JSON object by an earlier version is read back as the text to send", async () => {
    const answer = { id: "r0", results: [{ recipient: "bob@example.org", status: "sent", dsn: "2.0.0", detail: "250 ok" }] };
    const record = { state: "done", fingerprint: "f0", expiresAt: NOW + 100, status: 200, body: answer };
    await FileStore.open(join(dir, "store"), NOW).then((s) => s.close());
    await writeFile(join(dir, "store", "journal.jsonl"), `${JSON.stringify({ op: "idempotency", keyid: "home-1", key: "k-old", record })}\n`);
    const store = await FileStore.open(join(dir, "store"), NOW);
    assert.deepEqual(await store.beginIdempotent("home-1", "k-old", "f9", NOW + 200, NOW), { ...record, body: JSON.stringify(answer) });
    await store.close();
  });

  test("the directory is 0700 and the journal 0600", async () => {
    const store = await FileStore.open(join(dir, "store"), NOW);
    await store.claimNonce("home-1", "n1", NOW + 300, NOW);
    await store.close();
    assert.equal((await stat(join(dir, "store"))).mode & 0o777, 0o700);
    assert.equal((await stat(join(dir, "store", "journal.jsonl"))).mode & 0o777, 0o600);
  });

  test("a torn last line (a crash during an append) is skipped; a damaged line before it refuses to open", async () => {
    const store = await FileStore.open(join(dir, "store"), NOW);
    await store.claimNonce("home-1", "n1", NOW + 300, NOW);
    await store.close();
    await appendFile(join(dir, "store", "journal.jsonl"), '{"op":"nonce","keyid":"home-1","non');
    const again = await FileStore.open(join(dir, "store"), NOW);
    assert.equal(await again.claimNonce("home-1", "n1", NOW + 300, NOW), false);
    await again.close();
    await writeFile(join(dir, "store", "journal.jsonl"), 'garbage\n{"op":"forget","keyid":"a","key":"b"}\n');
    await assert.rejects(FileStore.open(join(dir, "store"), NOW), /journal\.jsonl:1: journal line is not JSON/);
  });
});

describe("through the Node entry", () => {
  const key = makeKey("home-1");
  let upstream: SmtpUpstream;
  before(async () => {
    upstream = await SmtpUpstream.start({ user: "u", pass: "p" });
  });
  after(() => upstream.close());

  test("after a restart a replayed request is still refused and an idempotent retry gets the kept answer", async () => {
    const config = parseCloudConfig(
      JSON.stringify({
        listen: "127.0.0.1:0",
        authority: ["relay.example.net"],
        keys: [{ id: key.id, publicKey: key.publicKey, senders: ["*@example.net"] }],
        onward: { transport: "smtp", host: "127.0.0.1", port: upstream.port, tls: "starttls", verify: false, auth: { user: "u", password: "p" } },
        store: join(dir, "store"),
      }),
      "file-store.test.yaml",
    );
    const s = { body: Buffer.from("From: alice@example.net\r\n\r\nhello\r\n"), envelopeFrom: "<alice@example.net>", envelopeTo: "<bob@example.org>", idempotencyKey: '"restart-1"' };
    const request = await signed(submission("relay.example.net", s), key);
    const first = await serveCloud(config, silentLog);
    const answer = await send(first.port, request);
    assert.equal(answer.status, 200, answer.text);
    await first.close();

    const second = await serveCloud(config, silentLog);
    try {
      const replay = await send(second.port, request);
      assert.equal(replay.status, 401);
      assert.equal(replay.json?.type, `${PROBLEM_BASE}replayed`);
      const retry = await send(second.port, await signed(submission("relay.example.net", s), key));
      assert.equal(retry.status, 200, retry.text);
      assert.deepEqual(retry.json, answer.json);
      assert.equal(upstream.messages.length, 1, "relayed once across the restart");
    } finally {
      await second.close();
    }
  });
});
