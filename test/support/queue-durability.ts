/**
 * queue-durability — what the durability tests look at on disk (queue state directories, Maildirs)
 * and the SMTP transactions they make, shared by queue-durability.test.ts and disk-full.test.ts.
 */
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { SmtpDialog, type SmtpReply } from "./smtp-dialog.js";

/** Configuration for the tests: mail for home.example.net is local, and alice has a mailbox there. */
export const LOCAL_CONFIG = {
  localDomains: ["home.example.net"],
  users: { alice: { cramMd5Secret: "unused by these tests" } },
};

export const SENDER = "carol@home.example.net";
export const LOCAL_RCPT = "alice@home.example.net";
export const REMOTE_RCPT = "bob@example.org";

const QUEUE_ID = /^2\.0\.0 Ok: queued as ([0-9A-HJKMNP-TV-Z]{16})$/;

/** The queue ID of a `250 2.0.0 Ok: queued as <ID>` reply; fails the test for any other reply. */
export function queueIdOf(reply: SmtpReply): string {
  assert.equal(reply.code, 250, `expected 250 after DATA, got ${reply.text}`);
  const m = reply.lines[0]!.match(QUEUE_ID);
  assert.ok(m, `expected "2.0.0 Ok: queued as <QUEUEID>", got ${reply.text}`);
  return m[1]!;
}

/** Names of the files in a spool state directory (incoming, active, deferred, ...), sorted. */
export async function queueFiles(spool: string, state: string): Promise<string[]> {
  return (await readdir(join(spool, state))).sort();
}

/** Every queue file in every state of the spool, as `state/ID`. */
export async function allQueueFiles(spool: string): Promise<string[]> {
  const all: string[] = [];
  for (const state of ["incoming", "active", "deferred", "hold", "corrupt"]) {
    for (const name of await queueFiles(spool, state)) all.push(`${state}/${name}`);
  }
  return all;
}

/** The envelope record (first line, JSON) and the message content of a queue file. */
export async function readQueueFile(spool: string, state: string, id: string): Promise<{ record: Record<string, unknown>; content: string }> {
  const text = await readFile(join(spool, state, id), "latin1");
  const nl = text.indexOf("\n");
  assert.ok(nl > 0, `${state}/${id} has no envelope line`);
  return { record: JSON.parse(text.slice(0, nl)) as Record<string, unknown>, content: text.slice(nl + 1) };
}

/** The messages in `mailboxes/<mailbox>/new`, by file name; empty when the Maildir does not exist. */
export async function maildirMessages(mailboxes: string, mailbox: string): Promise<Map<string, string>> {
  const dir = join(mailboxes, mailbox, "new");
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return new Map();
    throw err;
  }
  const messages = new Map<string, string>();
  for (const name of names) messages.set(name, await readFile(join(dir, name), "latin1"));
  return messages;
}

/** The Maildir copies of queued message `id`: our Received: header names the queue ID. */
export function copiesOf(messages: Map<string, string>, id: string): string[] {
  return [...messages.values()].filter((m) => m.includes(` id ${id}\n`));
}

/** Poll `check` until it returns true, failing with `what` after `ms`. */
export async function pollUntil(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A message with `token` in its Subject and body, padded with 76-character lines to about `size` bytes. */
export function message(token: string, size = 0): string {
  const head = `From: <${SENDER}>\r\nSubject: ${token}\r\n\r\n${token}\r\n`;
  const line = "0123456789".repeat(7) + "abcdef\r\n";
  return head + line.repeat(Math.max(0, Math.ceil((size - head.length) / line.length)));
}

/** EHLO, MAIL FROM and RCPT TO on an open dialog, each expected to be accepted. */
export async function startTransaction(dialog: SmtpDialog, recipients: string[], greeted = false): Promise<void> {
  if (!greeted) assert.equal((await dialog.command("EHLO client.home.example.net")).code, 250);
  const mail = await dialog.command(`MAIL FROM:<${SENDER}>`);
  assert.equal(mail.code, 250, `MAIL FROM: ${mail.text}`);
  for (const rcpt of recipients) {
    const r = await dialog.command(`RCPT TO:<${rcpt}>`);
    assert.equal(r.code, 250, `RCPT TO:<${rcpt}>: ${r.text}`);
  }
}

/** A whole transaction on a new connection; returns the reply to the end of DATA. */
export async function sendMail(port: number, recipients: string[], content: string): Promise<SmtpReply> {
  const { dialog } = await SmtpDialog.open(port);
  try {
    await startTransaction(dialog, recipients);
    return await dialog.data(content);
  } finally {
    await dialog.quit();
  }
}
