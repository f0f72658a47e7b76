// homerelay sendmail and the pickup service: drop files in maildrop/ (modes, -t/-i/-f/-F, sysexits),
// and their way into the queue (owner uid, Bcc removed, headers completed, corrupt files set aside).
import { after, describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chown, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { promisify } from "node:util";
import { stringify } from "yaml";
import type { MailLog } from "../../shared/log.js";
import { loadAgentConfig } from "../../agent/config.js";
import { Agent } from "../../agent/master.js";
import { HEADER_SIZE_LIMIT } from "../../agent/pickup/maildrop.js";
import { Pickup, type PickupOptions } from "../../agent/pickup/pickup.js";
import { openContent, readQueueFile, type QueuedMessage } from "../../agent/queue/queue-file.js";
import { Spool } from "../../agent/queue/spool.js";
import { runSendmail, sendmailConfigOption, type QueueCommand } from "../../agent/sendmail/sendmail.js";
import { maildirMessages, pollUntil } from "../support/queue-durability.js";

const run = promisify(execFile);
const HOSTNAME = "home.example.net";
const LIMITS = { messageSize: 10 * 1024 * 1024, lineLength: 998 };
const DATE = /[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000/g;
const isRoot = process.getuid?.() === 0;
/** The test process's login name: the default sender of what it drops. */
const ME = userInfo().username;

const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

/** A spool path in a new temporary directory; nothing exists there yet, as before the agent's first start. */
async function freshSpool(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "hr-sendmail-"));
  dirs.push(dir);
  return join(dir, "var", "spool");
}

interface SendmailRun {
  status: number;
  stderr: string;
}

/** Run `homerelay sendmail <args>` in-process with `message` on standard input. */
async function sendmail(spool: string, args: string[], message: string | Buffer = "", extra: { queue?: QueueCommand; env?: NodeJS.ProcessEnv; limits?: typeof LIMITS } = {}): Promise<SendmailRun> {
  let stderr = "";
  const status = await runSendmail(args, {
    stdin: Readable.from([Buffer.from(message)]),
    stderr: new Writable({
      write(chunk: Buffer, _enc, done) {
        stderr += chunk.toString();
        done();
      },
    }),
    env: extra.env ?? {},
    spool,
    hostname: HOSTNAME,
    limits: extra.limits ?? LIMITS,
    ...(extra.queue ? { queue: extra.queue } : {}),
  });
  return { status, stderr };
}

/** Every name in maildrop/, temporary files included. */
async function maildrop(spool: string): Promise<string[]> {
  return (await readdir(join(spool, "maildrop"))).sort();
}

/** The one drop file in maildrop/: its entry line and the message as stored. */
async function theDropFile(spool: string): Promise<{ name: string; entry: Record<string, unknown>; content: string }> {
  const names = await maildrop(spool);
  assert.equal(names.length, 1, `expected one drop file, found ${names.join(", ")}`);
  const text = await readFile(join(spool, "maildrop", names[0]!), "latin1");
  const nl = text.indexOf("\n");
  return { name: names[0]!, entry: JSON.parse(text.slice(0, nl)) as Record<string, unknown>, content: text.slice(nl + 1) };
}

/** A mail log that keeps its lines, Postfix style (`warning: ` before warnings). */
function memoryLog(): MailLog & { lines: string[] } {
  const lines: string[] = [];
  const log: MailLog & { lines: string[] } = {
    lines,
    debug: () => {},
    info: (m) => lines.push(m),
    warn: (m) => lines.push(`warning: ${m}`),
    error: (m) => lines.push(`error: ${m}`),
    component: () => log,
    flush: () => {},
  };
  return log;
}

interface PickedUp {
  spool: Spool;
  queued: QueuedMessage[];
  log: string[];
}

/** Run the pickup service once over the spool (as the agent does at start), then stop it. */
async function pickUp(root: string, options: Partial<PickupOptions> = {}): Promise<PickedUp> {
  const spool = new Spool(root);
  await spool.create();
  const log = memoryLog();
  const queued: QueuedMessage[] = [];
  const pickup = new Pickup({ spool, hostname: HOSTNAME, log, queued: (m) => queued.push(m), lineLength: 998, hopLimit: 50, headerSize: HEADER_SIZE_LIMIT, ...options });
  await pickup.start();
  await pickup.stop();
  await spool.close();
  return { spool, queued, log: log.lines };
}

/** The content of a queued message as stored in its queue file. */
async function contentOf(spool: Spool, message: QueuedMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of openContent(spool, message) as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString("latin1");
}

/** The one message pickup queued: read back from active/, with its content (dates replaced by DATE). */
async function theQueuedMessage(picked: PickedUp): Promise<{ message: QueuedMessage; content: string }> {
  assert.equal(picked.queued.length, 1, `expected one queued message; log:\n${picked.log.join("\n")}`);
  const message = await readQueueFile(picked.spool, "active", picked.queued[0]!.record.id);
  return { message, content: (await contentOf(picked.spool, message)).replace(DATE, "DATE") };
}

/** Skip a test that needs root (to own files as another user, or to mount a file system). */
function needsRoot(t: TestContext): boolean {
  if (!isRoot) t.skip("needs root");
  return isRoot;
}

describe("homerelay sendmail", () => {
  test("on a spool the agent never created, it makes the spool 0755 and maildrop 1733 despite umask 077, and drops a 0644 file", async () => {
    const spool = await freshSpool();
    const before = Date.now();
    const previous = process.umask(0o077);
    let result: SendmailRun;
    try {
      result = await sendmail(spool, ["alice", "bob@example.org"], "Subject: hello\n\nbody\n");
    } finally {
      process.umask(previous);
    }
    assert.deepEqual(result, { status: 0, stderr: "" });
    assert.equal((await stat(join(spool, ".."))).mode & 0o7777, 0o755, "directories created on the way get 0755");
    assert.equal((await stat(spool)).mode & 0o7777, 0o755);
    assert.equal((await stat(join(spool, "maildrop"))).mode & 0o7777, 0o1733);
    const drop = await theDropFile(spool);
    assert.match(drop.name, /^[0-9a-f]{32}$/, "a complete file has its final, unguessable name (no .tmp. left)");
    assert.equal((await stat(join(spool, "maildrop", drop.name))).mode & 0o7777, 0o644);
    const { time, ...entry } = drop.entry;
    assert.deepEqual(entry, { v: 1, recipients: ["alice", "bob@example.org"], extractRecipients: false });
    assert.ok(typeof time === "number" && time >= before && time <= Date.now());
    assert.equal(drop.content, "Subject: hello\n\nbody\n", "the message is stored as read, LF line ends included");
  });

  test("without -i a line with a single dot ends the message, LF or CRLF; with -i or -oi it is kept", async () => {
    const cases: [string[], string, string][] = [
      [[], "Subject: a\n\nline\n.\nafter\n", "Subject: a\n\nline\n"],
      [[], "Subject: a\r\n\r\nline\r\n.\r\nafter\r\n", "Subject: a\r\n\r\nline\r\n"],
      [[], "Subject: a\n\nlast line\n.", "Subject: a\n\nlast line\n"],
      [["-i"], "Subject: a\n\nline\n.\nafter\n", "Subject: a\n\nline\n.\nafter\n"],
      [["-oi"], "Subject: a\r\n\r\nline\r\n.\r\nafter\r\n", "Subject: a\r\n\r\nline\r\n.\r\nafter\r\n"],
      [[], "Subject: a\n\n..\n. \nend", "Subject: a\n\n..\n. \nend"],
    ];
    for (const [options, input, stored] of cases) {
      const spool = await freshSpool();
      assert.equal((await sendmail(spool, [...options, "alice"], input)).status, 0);
      assert.equal((await theDropFile(spool)).content, stored, `${options.join(" ")} ${JSON.stringify(input)}`);
    }
  });

  test("leading mbox From_ lines are dropped, a From_ line in the body is kept", async () => {
    const spool = await freshSpool();
    assert.equal((await sendmail(spool, ["alice"], "From alice Mon Jan  1 00:00:00 2024\n>From x\nSubject: s\n\nFrom me\n")).status, 0);
    assert.equal((await theDropFile(spool)).content, "Subject: s\n\nFrom me\n");
  });

  test("no recipients: 64 with Postfix's message, and nothing is created", async () => {
    const spool = await freshSpool();
    assert.deepEqual(await sendmail(spool, ["-i", "-f", "alice@example.org"], "Subject: x\n\nbody\n"), {
      status: 64,
      stderr: "homerelay sendmail: Recipient addresses must be specified on the command line or via the -t option\n",
    });
    await assert.rejects(stat(spool), { code: "ENOENT" });
  });

  test("-t without recipient headers: 64, and the partial drop file is removed", async () => {
    const spool = await freshSpool();
    assert.deepEqual(await sendmail(spool, ["-t", "-i"], "From: alice@example.org\nSubject: x\n\nTo: bob@example.org\n"), {
      status: 64,
      stderr: "homerelay sendmail: No recipient addresses found in message header\n",
    });
    assert.deepEqual(await maildrop(spool), []);
  });

  test("malformed addresses: 65 EX_DATAERR, nothing dropped", async () => {
    const spool = await freshSpool();
    assert.deepEqual(await sendmail(spool, ["bob@example.org", "two words"], "x\n"), {
      status: 65,
      stderr: 'homerelay sendmail: bad recipient address syntax: "two words"\n',
    });
    assert.deepEqual(await sendmail(spool, ["-f", "not an address", "bob@example.org"], "x\n"), {
      status: 65,
      stderr: 'homerelay sendmail: bad sender address syntax: "not an address"\n',
    });
    assert.deepEqual(await sendmail(spool, ["-t"], "To: bob@@example.org\n\nx\n"), {
      status: 65,
      stderr: 'homerelay sendmail: bad recipient address syntax in message header: "bob@@example.org"\n',
    });
    assert.deepEqual(await maildrop(spool), []);
  });

  test("a line longer than the limit or a message larger than it: 65, nothing dropped", async () => {
    const spool = await freshSpool();
    const long = await sendmail(spool, ["alice"], `Subject: x\n\n${"a".repeat(999)}\n`);
    assert.equal(long.status, 65);
    assert.equal(long.stderr, "homerelay sendmail: message line longer than 998 characters; encode the body (quoted-printable or base64)\n");
    const big = await sendmail(spool, ["alice"], `Subject: x\n\n${"0123456789\n".repeat(200)}`, { limits: { messageSize: 1000, lineLength: 998 } });
    assert.deepEqual(big, { status: 65, stderr: "homerelay sendmail: message larger than the limit of 1000 bytes\n" });
    assert.deepEqual(await maildrop(spool), []);
  });

  test("unknown options are refused with 64; the options cron, mutt and PHP pass are accepted", async () => {
    const spool = await freshSpool();
    assert.deepEqual(await sendmail(spool, ["-z", "alice"], "x\n"), {
      status: 64,
      stderr: "homerelay sendmail: invalid option -- 'z'\nusage: sendmail [options] [recipient ...]\n",
    });
    assert.deepEqual(await sendmail(spool, ["-B", "9BIT", "alice"], "x\n"), { status: 64, stderr: "homerelay sendmail: -B option needs 8BITMIME or 7BIT\n" });
    assert.deepEqual(await sendmail(spool, ["alice", "-f"], "x\n"), { status: 0, stderr: "" }, "options end at the first recipient");
    assert.deepEqual(await sendmail(spool, ["-f"], "x\n"), { status: 64, stderr: "homerelay sendmail: option requires an argument -- 'f'\n" });
    const invocations = [
      ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], // Debian cron
      ["-oem", "-oi", "--", "bob@example.org"], // mutt
      ["-t", "-i", "-fwww@example.org"], // PHP mail() with sendmail_path = "sendmail -t -i" and -f
      ["-odi", "-U", "-v", "-G", "-R", "hdrs", "-h", "30", "-L", "git", "-Am", "-ti", "-N", "never", "-V", "env-1", "bob@example.org"],
    ];
    assert.equal(sendmailConfigOption(["-C", "/etc/homerelay/homerelay.yaml", "-t"]), "/etc/homerelay/homerelay.yaml", "-C names the configuration for the CLI");
    assert.equal(sendmailConfigOption(["-i", "-C/srv/hr.yaml", "alice"]), "/srv/hr.yaml");
    assert.equal(sendmailConfigOption(["-i", "alice", "-C/srv/hr.yaml"]), undefined, "after the first recipient it is a recipient");
    invocations.push(["-C", "/etc/homerelay/homerelay.yaml", "-oi", "bob@example.org"]);
    for (const args of invocations) assert.deepEqual(await sendmail(spool, args, "To: bob@example.org\n\nx\n"), { status: 0, stderr: "" }, args.join(" "));
    assert.equal((await maildrop(spool)).length, 6);
  });

  test("-N, -V and -B reach the queued envelope", async () => {
    const root = await freshSpool();
    assert.equal((await sendmail(root, ["-N", "success,failure", "-V", "env-42", "-B", "8BITMIME", "bob@example.org", "carol@example.org"], "Subject: x\n\nx\n")).status, 0);
    const { message } = await theQueuedMessage(await pickUp(root));
    assert.deepEqual(message.record.envelope, {
      sender: `${ME}@${HOSTNAME}`,
      recipients: [
        { address: "bob@example.org", notify: ["SUCCESS", "FAILURE"] },
        { address: "carol@example.org", notify: ["SUCCESS", "FAILURE"] },
      ],
      envid: "env-42",
      body: "8BITMIME",
    });
  });

  test("-bp and -q go to the running agent; without it they exit 69", async () => {
    const spool = await freshSpool();
    const asked: string[] = [];
    const queue: QueueCommand = async (mode) => {
      asked.push(mode);
      return mode === "list" ? 0 : 3;
    };
    assert.deepEqual(await sendmail(spool, ["-bp"], "", { queue }), { status: 0, stderr: "" });
    assert.deepEqual(await sendmail(spool, ["-q"], "", { queue }), { status: 3, stderr: "" });
    assert.deepEqual(asked, ["list", "flush"]);
    assert.deepEqual(await sendmail(spool, ["-bp"]), { status: 69, stderr: "homerelay sendmail: the agent is not running (queue listing needs it)\n" });
    assert.deepEqual(await sendmail(spool, ["-q"]), { status: 69, stderr: "homerelay sendmail: the agent is not running (queue flushing needs it)\n" });
    assert.deepEqual(await sendmail(spool, ["-bp", "alice"], "", { queue }), { status: 64, stderr: "homerelay sendmail: display queue mode requires no recipient\n" });
    assert.deepEqual(await sendmail(spool, ["-q30m"]), { status: 0, stderr: "" }, "a queue run interval is the agent's business");
    assert.deepEqual(asked, ["list", "flush"]);
  });

  test("a spool that cannot be created: 73 EX_CANTCREAT", async () => {
    const spool = await freshSpool();
    await mkdir(join(spool, ".."), { recursive: true });
    await writeFile(spool, "a file where a directory should be");
    const result = await sendmail(join(spool, "spool"), ["alice"], "x\n");
    assert.equal(result.status, 73);
    assert.match(result.stderr, /^homerelay sendmail: cannot write the message to .*\/maildrop: ENOTDIR: /);
  });

  test("a full disk: 75 EX_TEMPFAIL, and no partial drop file is left", async (t) => {
    if (!needsRoot(t)) return;
    const spool = await freshSpool();
    await mkdir(spool, { recursive: true });
    try {
      await run("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", spool]);
    } catch (err) {
      t.skip(`cannot mount a tmpfs here: ${(err as { stderr?: string }).stderr ?? err}`);
      return;
    }
    t.after(() => run("umount", [spool]));
    const result = await sendmail(spool, ["alice"], `Subject: big\n\n${`${"x".repeat(76)}\n`.repeat(30_000)}`);
    assert.equal(result.status, 75);
    assert.match(result.stderr, /^homerelay sendmail: cannot write the message to .*\/maildrop: ENOSPC: /);
    assert.deepEqual(await maildrop(spool), []);
    assert.equal((await sendmail(spool, ["alice"], "Subject: small\n\nfits\n")).status, 0, "mail is taken again once it fits");
  });
});

describe("pickup", () => {
  test("-t: recipients from To:, Cc: and Bcc: added to the command line's, Bcc: removed, CRLF, headers completed", async (t) => {
    if (!needsRoot(t)) return;
    const root = await freshSpool();
    const message = [
      "From: Alice <alice@home.example.net>",
      "To: Bob <bob@example.org>, dave",
      'Cc: "Eve, E." <eve@example.net>',
      "Bcc: secret@example.com,",
      " bob@example.org",
      "Subject: team",
      "",
      "body line",
      ".",
      "last",
      "",
    ].join("\n");
    assert.equal((await sendmail(root, ["-t", "-i", "carol@example.org"], message)).status, 0);
    const picked = await pickUp(root);
    const { message: queued, content } = await theQueuedMessage(picked);
    const id = queued.record.id;
    assert.deepEqual(queued.record.envelope, {
      sender: `root@${HOSTNAME}`,
      recipients: ["carol@example.org", "bob@example.org", `dave@${HOSTNAME}`, "eve@example.net", "secret@example.com"].map((address) => ({ address })),
    });
    assert.equal(queued.record.origin, "pickup");
    assert.equal(
      content,
      [
        `Received: by ${HOSTNAME} (homerelay, from userid 0)`,
        `\tid ${id}; DATE`,
        "From: Alice <alice@home.example.net>",
        "To: Bob <bob@example.org>, dave",
        'Cc: "Eve, E." <eve@example.net>',
        "Subject: team",
        "Date: DATE",
        `Message-ID: <${id}@${HOSTNAME}>`,
        "",
        "body line",
        ".",
        "last",
        "",
      ].join("\r\n"),
    );
    assert.equal(queued.size, Buffer.byteLength(await contentOf(picked.spool, queued)));
    assert.deepEqual(picked.log, [`${id}: uid=0 from=<root>`, `${id}: from=<root@${HOSTNAME}>, size=${queued.size}, nrcpt=5 (queue active)`]);
    assert.deepEqual(await maildrop(root), [], "the drop file is removed once queued");
    assert.deepEqual(await readdir(join(root, "incoming")), []);
  });

  test("-f sets the envelope sender; -F names it in a From: header added when there is none; a From: present is kept", async () => {
    const cases: { args: string[]; message: string; env?: NodeJS.ProcessEnv; sender: string; from: string }[] = [
      { args: ["-f", "alice@example.org", "-F", "Alice Example"], message: "Subject: x\n\nhi\n", sender: "alice@example.org", from: "From: Alice Example <alice@example.org>" },
      { args: ["-fbob@example.org", "-F", 'Bob "the builder" B.'], message: "Subject: x\n\nhi\n", sender: "bob@example.org", from: 'From: "Bob \\"the builder\\" B." <bob@example.org>' },
      { args: ["-r", "Jörg <joerg@example.org>", "-F", "Jörg"], message: "Subject: x\n\nhi\n", sender: "joerg@example.org", from: "From: =?UTF-8?Q?J=C3=B6rg?= <joerg@example.org>" },
      { args: ["-f", "<>"], message: "Subject: x\n\nhi\n", env: { NAME: "Mail System" }, sender: "", from: `From: Mail System <MAILER-DAEMON@${HOSTNAME}>` },
      { args: ["-f", "postmaster", "-F", "Ignored"], message: "From: Real <real@example.org>\nSubject: x\n\nhi\n", sender: `postmaster@${HOSTNAME}`, from: "From: Real <real@example.org>" },
    ];
    for (const c of cases) {
      const root = await freshSpool();
      assert.equal((await sendmail(root, [...c.args, "bob@example.org"], c.message, c.env ? { env: c.env } : {})).status, 0);
      const { message, content } = await theQueuedMessage(await pickUp(root));
      assert.equal(message.record.envelope.sender, c.sender, c.args.join(" "));
      assert.deepEqual(content.split("\r\n").filter((l) => /^from:/i.test(l)), [c.from], c.args.join(" "));
    }
  });

  test("a message without a header block gets From:, Date:, Message-ID: and a blank line before its body", async (t) => {
    if (!needsRoot(t)) return;
    const root = await freshSpool();
    assert.equal((await sendmail(root, ["root"], "hi, this is cron\nsecond line")).status, 0);
    const { message, content } = await theQueuedMessage(await pickUp(root));
    const id = message.record.id;
    assert.deepEqual(message.record.envelope.recipients, [{ address: `root@${HOSTNAME}` }]);
    assert.equal(
      content,
      `Received: by ${HOSTNAME} (homerelay, from userid 0)\r\n\tid ${id}; DATE\r\nFrom: root <root@${HOSTNAME}>\r\nDate: DATE\r\nMessage-ID: <${id}@${HOSTNAME}>\r\n\r\nhi, this is cron\r\nsecond line\r\n`,
    );
  });

  test("the drop file's owner decides: its uid in the log and Received:, its address by default, its sender rule for -f", async (t) => {
    if (!needsRoot(t)) return;
    const passwd = await readFile("/etc/passwd", "utf8");
    const wwwData = passwd.match(/^www-data:[^:]*:(\d+):(\d+):/m);
    if (!wwwData) return t.skip("no www-data user here");
    const [uid, gid] = [Number(wwwData[1]), Number(wwwData[2])];
    const root = await freshSpool();
    assert.equal((await sendmail(root, ["-f", "boss@example.org", "bob@example.org"], "Subject: forged\n\nx\n")).status, 0);
    const forged = (await theDropFile(root)).name;
    await chown(join(root, "maildrop", forged), uid, gid);
    const asked: unknown[] = [];
    const picked = await pickUp(root, {
      mayUseSender: (...args) => {
        asked.push(args);
        return false;
      },
    });
    const { message, content } = await theQueuedMessage(picked);
    const id = message.record.id;
    assert.deepEqual(asked, [[uid, "www-data", "boss@example.org"]]);
    assert.equal(message.record.envelope.sender, `www-data@${HOSTNAME}`);
    assert.ok(content.startsWith(`Received: by ${HOSTNAME} (homerelay, from userid ${uid})\r\n`), content);
    assert.deepEqual(picked.log, [
      `warning: maildrop/${forged}: uid=${uid} (www-data) may not send as <boss@example.org>; sender set to <www-data@${HOSTNAME}>`,
      `${id}: uid=${uid} from=<boss@example.org>`,
      `${id}: from=<www-data@${HOSTNAME}>, size=${message.size}, nrcpt=1 (queue active)`,
    ]);

    const plain = await freshSpool();
    assert.equal((await sendmail(plain, ["bob@example.org"], "Subject: plain\n\nx\n")).status, 0);
    await chown(join(plain, "maildrop", (await theDropFile(plain)).name), uid, gid);
    const byDefault = await pickUp(plain, { mayUseSender: () => assert.fail("no -f, no sender rule to ask") });
    assert.equal((await theQueuedMessage(byDefault)).message.record.envelope.sender, `www-data@${HOSTNAME}`);
  });

  test("a corrupt drop file goes to corrupt/, a symlink is removed unread, a .tmp. file is left to its writer", async () => {
    const root = await freshSpool();
    assert.equal((await sendmail(root, ["bob@example.org"], "Subject: ok\n\nx\n")).status, 0);
    const drop = join(root, "maildrop");
    await writeFile(join(drop, "garbage"), "not json\nSubject: x\n\nbody\n");
    await writeFile(join(drop, "incomplete"), '{"v":1,"recipients":"bob@example.org"}\nSubject: x\n\nbody\n');
    const secret = join(root, "..", "secret");
    await writeFile(secret, '{"v":1,"recipients":["eve@example.org"],"extractRecipients":false,"time":0}\nSubject: secret\n\n', { mode: 0o600 });
    await symlink(secret, join(drop, "link"));
    await writeFile(join(drop, ".tmp.0123"), "being written");

    const picked = await pickUp(root);
    assert.equal(picked.queued.length, 1, "the good drop file is still queued");
    assert.deepEqual(picked.queued[0]!.record.envelope.recipients, [{ address: "bob@example.org" }]);
    assert.deepEqual(await maildrop(root), [".tmp.0123"]);
    assert.deepEqual((await readdir(join(root, "corrupt"))).sort(), ["garbage", "incomplete"]);
    assert.equal(await readFile(join(root, "corrupt", "garbage"), "utf8"), "not json\nSubject: x\n\nbody\n");
    assert.ok((await readFile(secret, "utf8")).includes("Subject: secret"), "the symlink's target is untouched");
    const warnings = picked.log.filter((l) => l.startsWith("warning:")).sort();
    assert.deepEqual(warnings, [
      "warning: maildrop/garbage: corrupt drop file: entry line is not JSON; moved to corrupt/",
      "warning: maildrop/incomplete: corrupt drop file: entry line is incomplete; moved to corrupt/",
      "warning: maildrop/link: symbolic link, removed unread",
    ]);
  });

  test("a message that cleanup refuses (a mail loop) goes to corrupt/ and leaves nothing in the queue", async (t) => {
    if (!needsRoot(t)) return;
    const root = await freshSpool();
    const loop = "Received: by a\nReceived: by b\nReceived: by c\nSubject: loop\n\nx\n";
    assert.equal((await sendmail(root, ["bob@example.org"], loop)).status, 0);
    const name = (await theDropFile(root)).name;
    const picked = await pickUp(root, { hopLimit: 3 });
    assert.deepEqual(picked.queued, []);
    for (const state of ["incoming", "active"]) assert.deepEqual(await readdir(join(root, state)), [], state);
    assert.deepEqual(await readdir(join(root, "corrupt")), [name]);
    assert.equal(picked.log.length, 2, picked.log.join("\n"));
    assert.match(picked.log[1]!, new RegExp(`^warning: maildrop/${name}: [0-9A-Z]{16}: uid=0 from=<root>: mail forwarding loop \\(more than 3 Received: headers\\); moved to corrupt/$`));
  });

  test("a running pickup notices a new drop file without waiting for its periodic scan", async () => {
    const root = await freshSpool();
    const spool = new Spool(root);
    await spool.create();
    const queued: QueuedMessage[] = [];
    const pickup = new Pickup({ spool, hostname: HOSTNAME, log: memoryLog(), queued: (m) => queued.push(m), lineLength: 998, hopLimit: 50, headerSize: HEADER_SIZE_LIMIT, scanInterval: 3600 });
    await pickup.start();
    try {
      assert.equal((await sendmail(root, ["bob@example.org"], "Subject: while running\n\nx\n")).status, 0);
      await pollUntil("pickup queued the new drop file", async () => queued.length === 1, 5_000);
      await pollUntil("the drop file is removed", async () => (await maildrop(root)).length === 0, 5_000);
    } finally {
      await pickup.stop();
      await spool.close();
    }
    assert.equal(queued.length, 1);
  });

  test("mail dropped while the agent is stopped is delivered to the Maildir once it starts", async () => {
    const root = await freshSpool();
    const dir = join(root, "..", "..");
    const mailboxes = join(dir, "mail");
    assert.equal((await sendmail(root, ["-i", "alice"], "Subject: while stopped\n\nqueued by nobody yet\n")).status, 0);
    assert.equal((await maildrop(root)).length, 1);

    // The agent's queue manager and local delivery in this process, with pickup handing it what it queues.
    const configFile = join(dir, "homerelay.yaml");
    await writeFile(configFile, stringify({ hostname: HOSTNAME, spool: root, mailboxes, localDomains: [HOSTNAME], users: { alice: { cramMd5Secret: "unused here" } } }));
    const config = loadAgentConfig(configFile);
    const log = memoryLog();
    const agent = await Agent.start(config, log, { intake: false, announce: false });
    const pickup = new Pickup({
      spool: agent.spool,
      hostname: config.hostname,
      log,
      queued: (m) => agent.qmgr.enqueue(m.record.id, m),
      lineLength: config.limits.lineLength,
      hopLimit: config.limits.hopCount,
      headerSize: HEADER_SIZE_LIMIT,
    });
    try {
      await pickup.start();
      await agent.qmgr.idle();
    } finally {
      await pickup.stop();
      await agent.stop();
    }

    const delivered = [...(await maildirMessages(mailboxes, "alice")).values()];
    assert.equal(delivered.length, 1, log.lines.join("\n"));
    assert.match(delivered[0]!, new RegExp(`^Return-Path: <${ME}@${HOSTNAME}>\nDelivered-To: alice@${HOSTNAME}\nReceived: by ${HOSTNAME} \\(homerelay, from userid \\d+\\)\n`));
    assert.match(delivered[0]!, /\nSubject: while stopped\n/);
    assert.ok(delivered[0]!.endsWith("\n\nqueued by nobody yet\n"));
    assert.deepEqual(await maildrop(root), []);
    assert.deepEqual(await readdir(join(root, "active")), []);
  });
});
