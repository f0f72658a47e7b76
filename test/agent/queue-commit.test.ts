// Committing a queue file: durable in active/ when it resolves; when the directory cannot be
// synced, it rejects and leaves no copy behind that could be delivered beside the client's retry.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { IncomingQueueFile } from "../../agent/queue/queue-file.js";
import { Spool } from "../../agent/queue/spool.js";

/** A spool whose directory syncs fail, as on a disk that returns EIO. */
class FailingSyncSpool extends Spool {
  override syncDir(): Promise<void> {
    return Promise.reject(Object.assign(new Error("input/output error"), { code: "EIO" }));
  }
}

async function spoolFiles(spool: Spool): Promise<string[]> {
  const names: string[] = [];
  for (const state of ["incoming", "active", "deferred"] as const) for (const name of await readdir(spool.dir(state))) names.push(`${state}/${name}`);
  return names;
}

async function write(spool: Spool): Promise<IncomingQueueFile> {
  const file = await IncomingQueueFile.create(spool, { envelope: { sender: "a@example.net", recipients: [{ address: "b@example.org" }] }, origin: "local" });
  await pipeline(Readable.from([Buffer.from("Subject: commit\r\n\r\nbody\r\n")]), file.content());
  return file;
}

test("a committed queue file is in active/; one whose directory sync fails is nowhere, and abort after it is harmless", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "hr-commit-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const spool = new Spool(dir);
  await spool.create();
  const good = await (await write(spool)).commit();
  assert.deepEqual(await spoolFiles(spool), [`active/${good.record.id}`]);
  assert.equal(good.size, Buffer.byteLength("Subject: commit\r\n\r\nbody\r\n"));

  const failing = new FailingSyncSpool(dir);
  const file = await write(failing);
  await assert.rejects(file.commit(), { code: "EIO" });
  await file.abort();
  assert.deepEqual(await spoolFiles(spool), [`active/${good.record.id}`], "the unsynced copy was left in the queue");
  await spool.close();
});
