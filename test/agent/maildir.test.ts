import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { deliverToMaildir } from "../../agent/local/maildir.js";

/** An async iterable over `chunks`, as a stream of the queue file would give them. */
async function* chunksOf(...chunks: string[]): AsyncGenerator<Buffer> {
  for (const chunk of chunks) yield Buffer.from(chunk);
}

const PREPEND = "Return-Path: <bob@example.org>\nDelivered-To: alice@home.example\n";

describe("deliverToMaildir", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "hr-maildir-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("creates the Maildir with mode 0700 and stores prepend + content with LF line ends", async () => {
    const root = path.join(dir, "created", "mail");
    const receipt = await deliverToMaildir({
      root,
      mailbox: "alice",
      prepend: PREPEND,
      // The CRLF after "Subject" is split across two chunks; the bare CR in "a\rb" stays.
      content: chunksOf("Subject: hi\r", "\nFrom: bob@example.org\r\n\r\nline 1\r\na\rb\r\n", "last\r"),
      hostname: "mx.home.example",
    });

    const expected = Buffer.from(`${PREPEND}Subject: hi\nFrom: bob@example.org\n\nline 1\na\rb\nlast\r`);
    assert.deepEqual(await readFile(receipt.path), expected);
    assert.equal(receipt.size, expected.length);
    assert.equal(path.dirname(receipt.path), path.join(root, "alice", "new"));
    assert.match(path.basename(receipt.path), new RegExp(`^\\d+\\.M\\d{1,6}P${process.pid}Q\\d+\\.mx\\.home\\.example$`));

    for (const created of [path.join(dir, "created"), root, ...["", "tmp", "new", "cur"].map((d) => path.join(root, "alice", d))]) {
      assert.equal((await stat(created)).mode & 0o777, 0o700, created);
    }
    assert.equal((await stat(receipt.path)).mode & 0o777, 0o600);
    assert.deepEqual(await readdir(path.join(root, "alice", "tmp")), []);
    assert.deepEqual(await readdir(path.join(root, "alice", "cur")), []);
  });

  test("a CRLF split at every byte is still converted", async () => {
    const message = "A: 1\r\nB: 2\r\n\r\nbody\r\n";
    const receipt = await deliverToMaildir({
      root: dir,
      mailbox: "bytes",
      prepend: "",
      content: chunksOf(...message.split("")),
      hostname: "h",
    });
    assert.equal(await readFile(receipt.path, "utf8"), "A: 1\nB: 2\n\nbody\n");
  });

  test("reads a Node stream; every delivery gets its own file", async () => {
    const body = Buffer.alloc(300_000, "x\r\n");
    const first = await deliverToMaildir({ root: dir, mailbox: "bob", prepend: "", content: Readable.from([body]), hostname: "h" });
    const second = await deliverToMaildir({ root: dir, mailbox: "bob", prepend: "", content: Readable.from([body]), hostname: "h" });
    assert.notEqual(first.path, second.path);
    assert.deepEqual(await readFile(first.path), Buffer.alloc(200_000, "x\n"));
    assert.equal(second.size, 200_000);
    assert.equal((await readdir(path.join(dir, "bob", "new"))).length, 2);
  });

  test("escapes / and : in the host name", async () => {
    const receipt = await deliverToMaildir({ root: dir, mailbox: "host", prepend: "", content: chunksOf("x"), hostname: "a/b:c" });
    assert.ok(path.basename(receipt.path).endsWith(".a\\057b\\072c"), receipt.path);
  });

  test("a failing content stream rejects with its error and leaves nothing behind", async () => {
    const failure = Object.assign(new Error("queue file unreadable"), { code: "EIO" });
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.from("Subject: partial\r\n");
      throw failure;
    }
    await assert.rejects(deliverToMaildir({ root: dir, mailbox: "carol", prepend: PREPEND, content: failing(), hostname: "h" }), (error) => {
      assert.equal(error, failure);
      return true;
    });
    assert.deepEqual(await readdir(path.join(dir, "carol", "tmp")), []);
    assert.deepEqual(await readdir(path.join(dir, "carol", "new")), []);
  });

  test("a file system error keeps its errno code", async () => {
    const notADirectory = path.join(dir, "plain-file");
    await writeFile(notADirectory, "");
    await assert.rejects(
      deliverToMaildir({ root: notADirectory, mailbox: "alice", prepend: "", content: chunksOf("x"), hostname: "h" }),
      { code: "ENOTDIR" },
    );
  });

  test("invalid mailbox names are refused with EINVAL before anything is created", async () => {
    const root = path.join(dir, "untouched");
    for (const mailbox of ["", ".", "..", ".hidden", "a/b", "../escape", "nul\0byte"]) {
      await assert.rejects(deliverToMaildir({ root, mailbox, prepend: "", content: chunksOf("x"), hostname: "h" }), { code: "EINVAL" }, mailbox);
    }
    await assert.rejects(stat(root), { code: "ENOENT" });
  });
});
