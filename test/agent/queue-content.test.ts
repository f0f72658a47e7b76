// How a queued message's content is read back: a small message just committed from the copy intake
// kept, anything else from its file; large messages release their memory as they stream (the
// young-generation collection really happens), come back byte for byte, fail when the file is gone
// and close the file when their reader stops early.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PerformanceObserver, constants, type PerformanceEntry } from "node:perf_hooks";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { BufferRelease, FIRST_RELEASE } from "../../agent/queue/buffer-release.js";
import { IncomingQueueFile, KEPT_CONTENT, openContent, readQueueFile, type QueuedMessage } from "../../agent/queue/queue-file.js";
import { Spool } from "../../agent/queue/spool.js";

/** Queue `content` in `spool` and return it as the queue manager would get it. */
async function queued(spool: Spool, content: Buffer): Promise<QueuedMessage> {
  const file = await IncomingQueueFile.create(spool, { envelope: { sender: "a@example.net", recipients: [{ address: "b@example.org" }] }, origin: "local" });
  await pipeline(Readable.from([content.subarray(0, 100_000), content.subarray(100_000)]), file.content());
  return file.commit();
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Young-generation collections that start while the synchronous `work` runs (not those of the test runner around it). */
async function minorCollections(work: () => void): Promise<number> {
  let seen = 0;
  let from = Infinity;
  let to = -Infinity;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const minor = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR;
      if (minor && entry.startTime >= from && entry.startTime <= to) seen++;
    }
  });
  observer.observe({ entryTypes: ["gc"] });
  from = performance.now();
  work();
  to = performance.now();
  // gc entries are reported asynchronously.
  await new Promise((r) => setTimeout(r, 50));
  observer.disconnect();
  return seen;
}

test("a stream past the first mark asks for young-generation collections; a small message does not", async () => {
  const small = await minorCollections(() => {
    const release = new BufferRelease();
    for (let i = 0; i < 15; i++) release.add(64 * 1024);
  });
  assert.equal(small, 0, "a message under FIRST_RELEASE collected");
  const large = await minorCollections(() => {
    const release = new BufferRelease();
    for (let moved = 0; moved < FIRST_RELEASE + 5 * 1024 * 1024; moved += 64 * 1024) release.add(64 * 1024);
  });
  assert.ok(large >= 3, `expected a collection at 1 MiB and every 2 MiB after it, saw ${large}`);
});

test("queue files read back whole through the releasing stream, fail when gone and close when the reader stops", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "hr-release-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const spool = new Spool(dir);
  await spool.create();
  const content = Buffer.from(Array.from({ length: 3 * 1024 * 1024 + 7 }, (_, i) => (i * 31 + 7) & 0xff));
  const large = await queued(spool, content);
  assert.ok(large.size > FIRST_RELEASE);
  assert.ok((await readAll(openContent(spool, large))).equals(content), "the large message changed on its way out");
  const small = await queued(spool, content.subarray(0, 5000));
  assert.ok((await readAll(openContent(spool, small))).equals(content.subarray(0, 5000)));

  const fds = async () => (await readdir("/proc/self/fd")).length;
  const before = await fds();
  const stopped = openContent(spool, large) as Readable;
  await new Promise((r) => stopped.once("data", r));
  stopped.destroy();
  for (let i = 0; i < 50 && (await fds()) > before; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(await fds(), before, "the queue file stayed open after its reader stopped");

  await unlink(spool.file("active", large.record.id));
  await assert.rejects(readAll(openContent(spool, large)), { code: "ENOENT" });
});

test("a small message just committed carries its content for the first delivery; a larger one and one read from the queue do not", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "hr-kept-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const spool = new Spool(dir);
  await spool.create();
  const text = Buffer.from(Array.from({ length: 150_000 }, (_, i) => 32 + ((i * 7) % 90)));

  const small = await queued(spool, text.subarray(0, KEPT_CONTENT));
  assert.ok(small.content?.equals(text.subarray(0, KEPT_CONTENT)), "the kept copy differs from what was written");
  await unlink(spool.file("active", small.record.id));
  assert.ok((await readAll(openContent(spool, small))).equals(text.subarray(0, KEPT_CONTENT)), "not read from the kept copy");

  const larger = await queued(spool, text.subarray(0, KEPT_CONTENT + 1));
  assert.equal(larger.content, undefined);
  const reread = await readQueueFile(spool, "active", larger.record.id);
  assert.equal(reread.content, undefined);
  assert.ok((await readAll(openContent(spool, reread))).equals(text.subarray(0, KEPT_CONTENT + 1)));
});
