/**
 * qmgr-harness — an in-process queue manager on a temporary spool for the qmgr-timing and notices
 * tests: a fake clock, scripted transports, and the real config defaults, Router, Notifier and status log.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { TestContext } from "node:test";
import { simpleParser, type ParsedMail } from "mailparser";
import { stringify } from "yaml";
import { Notifier } from "../../agent/bounce/notifier.js";
import { loadAgentConfig, type AgentConfig } from "../../agent/config.js";
import { QueueManager, type QmgrOptions } from "../../agent/qmgr/qmgr.js";
import type { DeliveryRequest, DeliveryResult, Transport } from "../../agent/qmgr/transport.js";
import { IncomingQueueFile, type QueueRecord, type QueuedMessage } from "../../agent/queue/queue-file.js";
import { Spool, type QueueState } from "../../agent/queue/spool.js";
import { Router, routeName } from "../../agent/router/router.js";
import type { Envelope } from "../../shared/envelope.js";
import type { MailLog } from "../../shared/log.js";

export const HOSTNAME = "home.example.net";
export const SENDER = "alice@home.example.net";
/** The fake clock starts here: Monday 6 January 2025, 09:00 UTC. */
export const T0 = Date.UTC(2025, 0, 6, 9, 0, 0);

/** What a scripted transport says for one recipient in one attempt; `throw` makes the whole attempt throw. */
export type Outcome = ((address: string) => Omit<DeliveryResult, "recipient">) | "throw";

const MX_RELAY = "mx.example.org[192.0.2.10]:25";

/** Accepted by a next hop that does (or does not) offer DSN. */
export function sent(options: { dsnOffered?: boolean; relay?: string } = {}): Outcome {
  return () => ({ status: "sent", dsn: "2.0.0", relay: options.relay ?? MX_RELAY, detail: "250 2.0.0 Ok: queued as 4YkL2m0Zz", dsnOffered: options.dsnOffered ?? false });
}

/** Greylisted at RCPT TO: a temporary failure. */
export function deferred(): Outcome {
  return (address) => ({
    status: "deferred",
    dsn: "4.7.1",
    relay: MX_RELAY,
    detail: `host mx.example.org[192.0.2.10] said: 451 4.7.1 <${address}>: Recipient address rejected: Greylisted, try again later (in reply to RCPT TO command)`,
  });
}

/** Refused at RCPT TO as an unknown user: a permanent failure. */
export function bounced(): Outcome {
  return (address) => ({
    status: "bounced",
    dsn: "5.1.1",
    relay: MX_RELAY,
    detail: `host mx.example.org[192.0.2.10] said: 550 5.1.1 <${address}>: Recipient address rejected: User unknown (in reply to RCPT TO command)`,
  });
}

/** The reply text that bounced() puts in the Diagnostic-Code. */
export function unknownUserReply(address: string): string {
  return `550 5.1.1 <${address}>: Recipient address rejected: User unknown`;
}

/** One call of a scripted transport. */
export interface TransportCall {
  queueId: string;
  recipients: string[];
  route: string;
  content: string;
}

/**
 * A transport that answers from a script: each recipient address has a list of outcomes, one per
 * attempt of one message (the last repeats); recipients not in the script are sent.
 */
export class ScriptedTransport implements Transport {
  readonly calls: TransportCall[] = [];
  private readonly tries = new Map<string, number>();

  constructor(
    readonly name: string,
    private readonly script: Record<string, Outcome[]> = {},
  ) {}

  async deliver(request: DeliveryRequest): Promise<DeliveryResult[]> {
    const queueId = request.message.record.id;
    const chunks: Buffer[] = [];
    for await (const chunk of request.content()) chunks.push(Buffer.from(chunk));
    this.calls.push({ queueId, recipients: request.recipients.map((r) => r.address), route: routeName(request.step), content: Buffer.concat(chunks).toString("utf8") });
    const outcomes = request.recipients.map((r) => {
      const key = `${queueId} ${r.address}`;
      const n = this.tries.get(key) ?? 0;
      this.tries.set(key, n + 1);
      const list = this.script[r.address] ?? [sent()];
      return list[Math.min(n, list.length - 1)]!;
    });
    if (outcomes.includes("throw")) throw new Error("scripted transport crashed");
    return request.recipients.map((r, i) => ({ recipient: r.address, ...(outcomes[i] as Exclude<Outcome, "throw">)(r.address) }));
  }

  /** The recipient lists of the calls made for message `queueId`, in order. */
  attemptsFor(queueId: string): string[][] {
    return this.calls.filter((c) => c.queueId === queueId).map((c) => c.recipients);
  }
}

/** A mail log that keeps its lines. */
export class CapturedLog implements MailLog {
  constructor(
    readonly lines: string[] = [],
    private readonly name = "master",
  ) {}
  debug(): void {}
  info(message: string): void {
    this.lines.push(`${this.name}: ${message}`);
  }
  warn(message: string): void {
    this.lines.push(`${this.name}: warning: ${message}`);
  }
  error(message: string): void {
    this.lines.push(`${this.name}: error: ${message}`);
  }
  component(name: string): MailLog {
    return new CapturedLog(this.lines, name);
  }
  flush(): void {}
  /** The lines matching `pattern`. */
  matching(pattern: RegExp): string[] {
    return this.lines.filter((l) => pattern.test(l));
  }
}

export interface HarnessOptions {
  /** `queue:` keys of the configuration (the defaults apply to the rest). */
  queue?: Record<string, unknown>;
  /** Remote mail (route `mx`, the default route); a ScriptedTransport named `smtp` by default. */
  remote?: Transport;
  /** Mail for home.example.net (route `local`); a ScriptedTransport named `local` by default. */
  local?: Transport | ((config: AgentConfig, spool: Spool, log: MailLog) => Promise<Transport>);
  /** Hand every notice to the queue manager for delivery too (otherwise notices stay in active/). */
  deliverNotices?: boolean;
}

/** A queue manager on a temporary spool with its fake clock, transports, notices and log. */
export class QmgrHarness {
  /** The fake clock, milliseconds since the epoch. */
  now = T0;
  qmgr!: QueueManager;
  /** Every notice the Notifier queued, in order. */
  readonly notices: QueuedMessage[] = [];
  private options!: QmgrOptions;

  private constructor(
    readonly dir: string,
    readonly spool: Spool,
    readonly config: AgentConfig,
    readonly remote: Transport,
    readonly local: Transport,
    readonly log: CapturedLog,
  ) {}

  /** Build the harness; everything it made is removed after the test. */
  static async create(t: TestContext, o: HarnessOptions = {}): Promise<QmgrHarness> {
    const dir = await mkdtemp(join(tmpdir(), "hr-qmgr-"));
    const configFile = join(dir, "homerelay.yaml");
    await writeFile(
      configFile,
      stringify({
        hostname: HOSTNAME,
        spool: join(dir, "spool"),
        mailboxes: join(dir, "mail"),
        localDomains: [HOSTNAME],
        users: { carol: { cramMd5Secret: "unused by these tests" } },
        ...(o.queue ? { queue: o.queue } : {}),
      }),
    );
    const config = loadAgentConfig(configFile);
    const spool = new Spool(config.spool);
    await spool.create();
    const log = new CapturedLog();
    const local = typeof o.local === "function" ? await o.local(config, spool, log.component("local")) : (o.local ?? new ScriptedTransport("local"));
    const h = new QmgrHarness(dir, spool, config, o.remote ?? new ScriptedTransport("smtp"), local, log);
    const router = new Router(config);
    const notifier = new Notifier({
      spool,
      hostname: config.hostname,
      log: log.component("bounce"),
      notifyPostmaster: config.queue.notifyPostmaster,
      queued: (m) => {
        h.notices.push(m);
        if (o.deliverNotices) h.qmgr.enqueue(m.record.id, m);
      },
    });
    h.options = {
      spool,
      log: log.component("qmgr"),
      route: (recipient, sender) => router.resolve(recipient, sender),
      transports: { mx: h.remote, local: h.local },
      notifier,
      timing: config.queue,
      concurrency: 10,
      now: () => h.now,
    };
    h.qmgr = new QueueManager(h.options);
    t.after(async () => {
      await h.qmgr.stop();
      await spool.close();
      await rm(dir, { recursive: true, force: true });
    });
    return h;
  }

  /** Queue a message as intake does (written, committed to active/, handed over fresh) and wait for its first attempt. */
  async submit(envelope: Envelope, content = messageText("<first@home.example.net>"), origin: QueueRecord["origin"] = "smtp"): Promise<string> {
    const file = await IncomingQueueFile.create(this.spool, { envelope, origin }, this.now);
    await pipeline(Readable.from([Buffer.from(content)]), file.content());
    const queued = await file.commit();
    this.qmgr.enqueue(queued.record.id, queued);
    await this.qmgr.idle();
    return queued.record.id;
  }

  /** Set the clock to `seconds` after T0, run a deferred-queue scan and wait for what it started; returns how many messages it moved. */
  async scanAt(seconds: number, force = false): Promise<number> {
    this.now = T0 + seconds * 1000;
    const moved = await this.qmgr.scanDeferred(force);
    await this.qmgr.idle();
    return moved;
  }

  /** The next attempt time of deferred message `id` (its file's mtime), in seconds after T0. */
  async nextAttempt(id: string): Promise<number> {
    const { mtimeMs } = await stat(this.spool.file("deferred", id));
    return Math.round(mtimeMs - T0) / 1000;
  }

  /** Stop this queue manager and build a new one on the same spool (an agent restart); with `start`, it recovers active/ as at boot. */
  async restart(start = false): Promise<void> {
    await this.qmgr.stop();
    this.qmgr = new QueueManager(this.options);
    if (start) {
      await this.qmgr.start();
      await this.qmgr.idle();
    }
  }

  /** The queue files in every state, as `state/ID`, sorted. */
  async queueFiles(): Promise<string[]> {
    const all: string[] = [];
    for (const state of ["incoming", "active", "deferred", "hold", "corrupt"] satisfies QueueState[]) {
      for (const name of (await readdir(this.spool.dir(state))).sort()) all.push(`${state}/${name}`);
    }
    return all;
  }

  /** Whether message `id` still has a status log. */
  async hasStatusLog(id: string): Promise<boolean> {
    return stat(this.spool.statusFile(id)).then(
      () => true,
      () => false,
    );
  }

  /** Notice number `index` read back from its queue file in active/ and taken apart. */
  async notice(index: number): Promise<Notice> {
    const queued = this.notices[index];
    assert.ok(queued, `notice ${index} was queued (${this.notices.length} queued)`);
    const raw = await readFile(this.spool.file("active", queued.record.id));
    const nl = raw.indexOf(10);
    const record = JSON.parse(raw.subarray(0, nl).toString("utf8")) as QueueRecord;
    return { record, ...(await parseDsn(raw.subarray(nl + 1))) };
  }
}

/** A DSN as queued: its envelope record and its parts. */
export interface Notice extends ParsedDsn {
  record: QueueRecord;
}

export interface ParsedDsn {
  mail: ParsedMail;
  contentType: { value: string; params: Record<string, string> };
  /** The delivery-status part: the per-message fields, then one map per recipient (names in lower case). */
  report: Map<string, string>[];
  /** The third part: the returned message or its header. */
  returned: { contentType: string; text: string };
}

/** Take a DSN apart with mailparser; the delivery-status fields are split into groups per RFC 3464. */
export async function parseDsn(raw: Buffer | string): Promise<ParsedDsn> {
  const mail = await simpleParser(raw, { keepDeliveryStatus: true });
  const contentType = mail.headers.get("content-type") as ParsedDsn["contentType"];
  const [status, returned, ...more] = mail.attachments;
  assert.equal(more.length, 0, "no parts besides notice, report and returned message");
  assert.ok(status && returned, "a delivery-status part and a returned part");
  assert.equal(status.contentType, "message/delivery-status");
  const report = status.content
    .toString("utf8")
    .replace(/\r\n(?=[ \t])/g, "")
    .split(/\r\n\r\n/)
    .filter((group) => group.trim() !== "")
    .map((group) => {
      const fields = new Map<string, string>();
      for (const line of group.trim().split("\r\n")) {
        const colon = line.indexOf(":");
        fields.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
      }
      return fields;
    });
  return { mail, contentType, report, returned: { contentType: returned.contentType, text: returned.content.toString("utf8") } };
}

/** A small message from alice with Message-ID `messageId`. */
export function messageText(messageId: string, subject = "Lunch on Friday"): string {
  return (
    `From: Alice <${SENDER}>\r\nTo: Bob <bob@example.org>\r\nSubject: ${subject}\r\nMessage-ID: ${messageId}\r\nDate: Mon, 6 Jan 2025 09:00:00 +0000\r\n\r\n` +
    "Shall we meet at noon?\r\n"
  );
}
