import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { AliasError, loadAliases, parseAliases } from "../../agent/local/aliases.js";

/** The AliasError that parsing `text` throws. */
function parseError(text: string): AliasError {
  try {
    parseAliases(text, "aliases");
  } catch (error) {
    assert.ok(error instanceof AliasError, `expected an AliasError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected parseAliases to throw");
}

describe("parseAliases", () => {
  const table = parseAliases(
    [
      "# system aliases",
      "",
      "Postmaster: root",
      "root: Alice",
      "staff: alice, bob,",
      "   carol@Example.ORG,",
      "\t\"john doe\"@example.net",
      "  # a comment inside a list does not end it",
      "   dave",
      "alice: \\alice, alice@phone.example",
      "self: self, self@elsewhere.example",
      "ping: pong",
      "pong: ping, pong@elsewhere.example",
      "team: staff, root, bob",
      "direct: \\root",
    ].join("\r\n"),
    "aliases",
  );

  test("keys are case-insensitive and listed lowercase", () => {
    assert.deepEqual(table.names(), ["postmaster", "root", "staff", "alice", "self", "ping", "pong", "team", "direct"]);
    assert.ok(table.has("POSTMASTER"));
    assert.ok(table.has("Staff"));
    assert.ok(!table.has("bob"));
  });

  test("a list with continuation lines expands to mailboxes and external addresses", () => {
    assert.deepEqual(table.expand("staff"), {
      mailboxes: ["alice", "bob", "dave"],
      external: ["alice@phone.example", "carol@example.org", '"john doe"@example.net'],
    });
  });

  test("expansion is recursive, lowercase and without duplicates", () => {
    assert.deepEqual(table.expand("PostMaster"), { mailboxes: ["alice"], external: ["alice@phone.example"] });
    assert.deepEqual(table.expand("team"), {
      mailboxes: ["alice", "bob", "dave"],
      external: ["alice@phone.example", "carol@example.org", '"john doe"@example.net'],
    });
  });

  test("\\name delivers to the mailbox without expanding it", () => {
    assert.deepEqual(table.expand("alice"), { mailboxes: ["alice"], external: ["alice@phone.example"] });
    // root is an alias, but \root is the mailbox root.
    assert.deepEqual(table.expand("direct"), { mailboxes: ["root"], external: [] });
  });

  test("an alias that reaches itself delivers to its mailbox", () => {
    assert.deepEqual(table.expand("self"), { mailboxes: ["self"], external: ["self@elsewhere.example"] });
    assert.deepEqual(table.expand("ping"), { mailboxes: ["ping"], external: ["pong@elsewhere.example"] });
    assert.deepEqual(table.expand("pong"), { mailboxes: ["pong"], external: ["pong@elsewhere.example"] });
  });

  test("a local part that is no alias is its own mailbox", () => {
    assert.deepEqual(table.expand("Bob"), { mailboxes: ["bob"], external: [] });
  });

  test("mailboxNames lists every bare name an alias points at", () => {
    assert.deepEqual(table.mailboxNames().sort(), ["alice", "bob", "dave", "ping", "pong", "root", "self", "staff"]);
  });

  test("quoted bare names and values are accepted", () => {
    const quoted = parseAliases('info: "alice", "x,y"@example.org', "aliases");
    assert.deepEqual(quoted.expand("info"), { mailboxes: ["alice"], external: ['"x,y"@example.org'] });
  });

  test("a chain of 20 aliases is followed; one of 21 is refused at its line", () => {
    const chain = (n: number) => Array.from({ length: n }, (_, i) => `a${i}: ${i === n - 1 ? "box" : `a${i + 1}`}`).join("\n");
    assert.deepEqual(parseAliases(chain(20), "aliases").expand("a0"), { mailboxes: ["box"], external: [] });
    const error = parseError(chain(21));
    assert.deepEqual(error.problems, ['aliases:21: alias "a20" is nested more than 20 levels deep']);
  });
});

describe("parseAliases errors", () => {
  test("commands, files and includes are refused with their line numbers", () => {
    const error = parseError(
      [
        "ok: alice",
        "prog: |/usr/bin/procmail",
        'quoted: "|/usr/bin/vacation alice"',
        "file: /var/mail/archive",
        "list: bob,",
        "  :include:/etc/mail/list",
      ].join("\n"),
    );
    assert.equal(error.problems.length, 4);
    assert.match(error.problems[0]!, /^aliases:2: command delivery \|\/usr\/bin\/procmail is refused/);
    assert.match(error.problems[1]!, /^aliases:3: command delivery "\|\/usr\/bin\/vacation alice" is refused/);
    assert.match(error.problems[2]!, /^aliases:4: file delivery \/var\/mail\/archive is refused/);
    assert.match(error.problems[3]!, /^aliases:6: :include:\/etc\/mail\/list is refused/);
    assert.equal(error.message, error.problems.join("\n"));
  });

  test("a duplicate name names both lines", () => {
    const error = parseError("root: alice\nbob: carol\nROOT: dave\n");
    assert.deepEqual(error.problems, ['aliases:3: duplicate alias "root" (first defined at line 1)']);
  });

  test("every problem is reported, in line order", () => {
    const error = parseError(
      [
        "  orphan",
        "no colon here",
        "empty:",
        "bad name: alice",
        "good: alice, bob@, @example.org",
        "   \\.hidden, alice bob",
        'open: "unterminated@example.org',
      ].join("\n"),
    );
    assert.deepEqual(error.problems, [
      "aliases:1: continuation line (starts with whitespace) without an alias before it",
      'aliases:2: expected "name: value, ..."',
      'aliases:3: alias "empty" has no recipients',
      'aliases:4: invalid alias name "bad name"',
      'aliases:5: invalid address "bob@"',
      'aliases:5: invalid address "@example.org"',
      'aliases:6: invalid mailbox name "\\.hidden"',
      'aliases:6: invalid local name "alice bob"',
      "aliases:7: unterminated quote",
    ]);
  });
});

describe("loadAliases", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "hr-aliases-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("reads and parses the file, naming it in errors", async () => {
    const file = path.join(dir, "aliases");
    await writeFile(file, "postmaster: alice\n");
    assert.deepEqual((await loadAliases(file)).expand("postmaster"), { mailboxes: ["alice"], external: [] });
    await writeFile(file, "postmaster: alice\nweb: |/bin/true\n");
    await assert.rejects(loadAliases(file), (error: unknown) => {
      assert.ok(error instanceof AliasError);
      assert.match(error.message, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:2: command delivery`));
      return true;
    });
  });

  test("a missing file is an AliasError", async () => {
    const file = path.join(dir, "missing");
    await assert.rejects(loadAliases(file), (error: unknown) => {
      assert.ok(error instanceof AliasError);
      assert.equal(error.message, `${file}: cannot read (ENOENT)`);
      return true;
    });
  });
});
