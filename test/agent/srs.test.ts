import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { loadOrCreateSrsSecret, SenderRewriter } from "../../agent/local/srs.js";

const DAY = 24 * 60 * 60 * 1000;
const SRS0 = /^SRS0=[0-9a-f]{4}=[A-Z2-7]{2}=example\.org=bob@relay\.example$/;

describe("SenderRewriter", () => {
  const rewriter = new SenderRewriter({ secret: "correct horse", domain: "Relay.Example" });

  test("forward gives an SRS0 address of ours that reverses to the sender", () => {
    const forwarded = rewriter.forward("bob@example.org");
    assert.match(forwarded, SRS0);
    assert.equal(rewriter.reverse(forwarded), "bob@example.org");
  });

  test("the null sender stays null; our own addresses are kept", () => {
    assert.equal(rewriter.forward(""), "");
    assert.equal(rewriter.forward("alice@relay.example"), "alice@relay.example");
    const ours = rewriter.forward("bob@example.org").replace("@relay.example", "@RELAY.example");
    assert.equal(rewriter.forward(ours), ours);
  });

  test("someone else's SRS0 address becomes SRS1 and reverses to it", () => {
    const theirs = "SRS0=abcd=AB=example.org=bob@forwarder.example";
    const forwarded = rewriter.forward(theirs);
    assert.match(forwarded, /^SRS1=[0-9a-f]{4}=forwarder\.example==abcd=AB=example\.org=bob@relay\.example$/);
    assert.equal(rewriter.reverse(forwarded), theirs);
  });

  test("the SRS tag, hash, timestamp and our domain are matched case-insensitively", () => {
    const forwarded = rewriter.forward("bob@example.org");
    assert.equal(rewriter.reverse(forwarded.toLowerCase()), "bob@example.org");
    const [local] = forwarded.split("@");
    assert.equal(rewriter.reverse(`${local!.replace("SRS0", "srs0")}@RELAY.EXAMPLE`), "bob@example.org");
  });

  test("a tampered hash or address is rejected", () => {
    const forwarded = rewriter.forward("bob@example.org");
    const hash = forwarded.slice(5, 9);
    const otherHash = hash.replace(/^./, (c) => (c === "0" ? "1" : "0"));
    assert.equal(rewriter.reverse(forwarded.replace(`=${hash}=`, `=${otherHash}=`)), null);
    assert.equal(rewriter.reverse(forwarded.replace("=bob@", "=eve@")), null);
    assert.equal(rewriter.reverse(forwarded.replace("=example.org=", "=example.net=")), null);
  });

  test("another secret, another domain or no SRS form is rejected", () => {
    const forwarded = rewriter.forward("bob@example.org");
    assert.equal(new SenderRewriter({ secret: "other", domain: "relay.example" }).reverse(forwarded), null);
    assert.equal(rewriter.reverse(forwarded.replace("@relay.example", "@other.example")), null);
    assert.equal(rewriter.reverse("bob@relay.example"), null);
    assert.equal(rewriter.reverse("SRS0=garbage@relay.example"), null);
    assert.equal(rewriter.reverse("no-domain"), null);
  });

  test("an address older than maxAgeDays is rejected", (t) => {
    const now = Date.now();
    const clock = t.mock.method(Date, "now", () => now - 30 * DAY);
    const monthOld = rewriter.forward("bob@example.org");
    clock.mock.mockImplementation(() => now - 10 * DAY);
    const tenDaysOld = rewriter.forward("bob@example.org");
    clock.mock.restore();

    assert.equal(rewriter.reverse(monthOld), null);
    assert.equal(rewriter.reverse(tenDaysOld), "bob@example.org");
    const strict = new SenderRewriter({ secret: "correct horse", domain: "relay.example", maxAgeDays: 5 });
    assert.equal(strict.reverse(tenDaysOld), null);
  });

  test("a sender without a domain cannot be rewritten", () => {
    assert.throws(() => rewriter.forward("bob"), TypeError);
  });
});

describe("loadOrCreateSrsSecret", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "hr-srs-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("creates a 0600 secret of 32 random bytes and reuses it", async () => {
    const spool = await mkdtemp(path.join(dir, "spool-"));
    const secret = await loadOrCreateSrsSecret(spool);
    assert.equal(Buffer.from(secret, "base64url").length, 32);
    assert.equal(Buffer.from(secret, "base64url").toString("base64url"), secret);
    const file = path.join(spool, "srs.secret");
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal(await readFile(file, "utf8"), secret);
    assert.equal(await loadOrCreateSrsSecret(spool), secret);
    assert.notEqual(await loadOrCreateSrsSecret(await mkdtemp(path.join(dir, "spool-"))), secret);
  });

  test("concurrent first uses agree on one secret and leave no draft behind", async () => {
    const spool = await mkdtemp(path.join(dir, "spool-"));
    const secrets = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateSrsSecret(spool)));
    assert.equal(new Set(secrets).size, 1);
    assert.deepEqual(await readdir(spool), ["srs.secret"]);
  });

  test("an existing secret is read as it is", async () => {
    const spool = await mkdtemp(path.join(dir, "spool-"));
    await writeFile(path.join(spool, "srs.secret"), "hand-made secret\n");
    assert.equal(await loadOrCreateSrsSecret(spool), "hand-made secret");
  });
});
