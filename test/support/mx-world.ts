/**
 * mx-world — a loopback mail world for the agent's remote delivery tests: MX hosts (smtp-server) on
 * 127.0.0.2, 127.0.0.3, … sharing one port, each switchable at run time (accept, defer, reject,
 * hang, drop mid-DATA, STARTTLS with a self-signed, CA-signed or misnamed certificate or a failing handshake,
 * AUTH CRAM-MD5 required), a DNS zone served by dns-server.ts, a test CA, and the helpers to
 * submit mail to an agent and read its delivery log, its spool and its Maildirs.
 */
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSecureContext, type SecureContext } from "node:tls";
import { simpleParser, type ParsedMail } from "mailparser";
import { generate } from "selfsigned";
import { SMTPServer, type SMTPServerAddress, type SMTPServerSession } from "smtp-server";
import type { AgentProcess } from "./agent-process.js";
import { startDnsServer, type DnsServer, type DnsZone } from "./dns-server.js";
import { queueIdOf } from "./queue-durability.js";
import { SmtpDialog } from "./smtp-dialog.js";

/** An SMTP reply an MX host gives instead of accepting: `{ code: 550, text: "5.1.1 <x@y>: User unknown" }`. */
export interface Reply {
  code: number;
  text: string;
}

/**
 * STARTTLS as an MX host offers it: not at all, with a self-signed certificate for its name, with
 * one signed by the world's CA for its name, with a CA-signed one for another name, or offered
 * but every handshake failing (the host speaks only TLS 1.0 and 1.1, which the agent refuses).
 */
export type TlsMode = "none" | "self-signed" | "ca-signed" | "wrong-name" | "broken";

/** How an MX host behaves; every field can be switched while the world runs. */
export interface MxBehaviour {
  /** `hang`: accept the TCP connection and never say a word; `drop-in-data`: close the connection once DATA bytes arrive. */
  session: "talk" | "hang" | "drop-in-data";
  /** Replies to RCPT TO by recipient address (lower case), `*` for every other one; unlisted recipients are accepted. */
  rcpt: Record<string, Reply>;
  /** The reply to the end of DATA instead of accepting the message. */
  data: Reply | null;
  tls: TlsMode;
  /** Require AUTH CRAM-MD5 with this account before MAIL FROM. */
  auth: { user: string; secret: string } | null;
}

/** A message an MX host accepted: its envelope as sent, the session it came in, and its bytes. */
export interface ReceivedMessage {
  host: string;
  /** Which TCP connection at this host carried it: 1, 2, … counted since the world started. */
  connection: number;
  /** The EHLO name the client gave. */
  helo: string;
  secure: boolean;
  /** The AUTH account, when the client authenticated. */
  user: string | null;
  mailFrom: string;
  rcptTo: { address: string; args: Record<string, string | true> }[];
  raw: Buffer;
}

const ACCEPT: MxBehaviour = { session: "talk", rcpt: {}, data: null, tls: "self-signed", auth: null };

/** The certificates of the world: a CA, and per host name a self-signed and a CA-signed certificate. */
interface Pem {
  key: string;
  cert: string;
}

const VALIDITY = { notBeforeDate: new Date(Date.now() - 3600_000), notAfterDate: new Date(Date.now() + 7 * 86400_000) };

async function makeCa(): Promise<Pem> {
  const pems = await generate([{ name: "commonName", value: "homerelay test CA" }], {
    keyType: "ec",
    curve: "P-256",
    algorithm: "sha256",
    ...VALIDITY,
    extensions: [
      { name: "basicConstraints", cA: true, critical: true },
      { name: "keyUsage", keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  return { key: pems.private, cert: pems.cert };
}

/** A server certificate for `name`, signed by `ca` or self-signed. */
async function makeServerCert(name: string, ca?: Pem): Promise<Pem> {
  const pems = await generate([{ name: "commonName", value: name }], {
    keyType: "ec",
    curve: "P-256",
    algorithm: "sha256",
    ...VALIDITY,
    ...(ca ? { ca } : {}),
    extensions: [
      { name: "basicConstraints", cA: false },
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames: [{ type: 2, value: name }] },
    ],
  });
  return { key: pems.private, cert: pems.cert };
}

/** One MX host of the world. */
export class MxHost {
  private current: MxBehaviour = structuredClone(ACCEPT);
  /** Messages accepted, in order. */
  readonly messages: ReceivedMessage[] = [];
  /** TCP connections accepted since the last reset. */
  connections = 0;
  private accepted = 0;
  private readonly ordinals = new Map<string, { ordinal: number; socket: Socket }>();
  private readonly contexts: Record<TlsMode, SecureContext>;
  readonly server: SMTPServer;

  constructor(
    readonly name: string,
    readonly address: string,
    certs: { selfSigned: Pem; caSigned: Pem; wrongName: Pem },
  ) {
    this.contexts = {
      none: createSecureContext(certs.selfSigned), // not used: STARTTLS is not even offered
      "self-signed": createSecureContext(certs.selfSigned),
      "ca-signed": createSecureContext(certs.caSigned),
      "wrong-name": createSecureContext(certs.wrongName),
      // Only TLS 1.0 and 1.1, which no client of ours speaks: every handshake fails.
      broken: createSecureContext({ ...certs.selfSigned, minVersion: "TLSv1", maxVersion: "TLSv1.1" }),
    };
    this.server = new SMTPServer({
      name,
      key: certs.selfSigned.key,
      cert: certs.selfSigned.cert,
      authMethods: ["CRAM-MD5"],
      authOptional: true,
      hideDSN: false,
      disableReverseLookup: true,
      closeTimeout: 100,
      onConnect: (session, callback) => this.onConnect(session, callback),
      onAuth: (auth, _session, callback) => {
        const account = this.behaviour.auth;
        if (account && auth.method === "CRAM-MD5" && auth.username === account.user && auth.validatePassword(account.secret)) callback(null, { user: auth.username });
        else callback(null, { responseCode: 535, message: "5.7.8 Error: authentication failed: authentication failure" });
      },
      onMailFrom: (_address, session, callback) => {
        if (this.behaviour.auth && !session.user) callback(smtpError({ code: 530, text: "5.7.0 Authentication required" }));
        else callback();
      },
      onRcptTo: (address, _session, callback) => {
        const rule = this.behaviour.rcpt[address.address.toLowerCase()] ?? this.behaviour.rcpt["*"];
        callback(rule ? smtpError(rule) : undefined);
      },
      onData: (stream, session, callback) => this.onData(stream, session, callback),
    });
    this.server.on("error", () => {});
    this.server.server.on("connection", (socket: Socket) => {
      this.connections++;
      const key = `${socket.remoteAddress}:${socket.remotePort}`;
      this.ordinals.set(key, { ordinal: ++this.accepted, socket });
      socket.once("close", () => this.ordinals.delete(key));
    });
  }

  get behaviour(): Readonly<MxBehaviour> {
    return this.current;
  }

  /** Change some of the behaviour. */
  behave(change: Partial<MxBehaviour>): void {
    this.current = { ...this.current, ...change };
    // smtp-server takes the default context for each STARTTLS (no SNI context is configured).
    this.server.secureContext.set("*", this.contexts[this.current.tls]);
  }

  /**
   * Accept everything again, with STARTTLS and no AUTH, and forget what was received. Open
   * connections are closed, so that no session the agent keeps for reuse outlives a test.
   */
  reset(): void {
    this.behave(structuredClone(ACCEPT));
    this.messages.length = 0;
    this.connections = 0;
    for (const { socket } of this.ordinals.values()) socket.destroy();
  }

  /** The messages that reached `recipient`. */
  messagesFor(recipient: string): ReceivedMessage[] {
    return this.messages.filter((m) => m.rcptTo.some((r) => r.address === recipient));
  }

  listen(port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.server.once("error", reject);
      this.server.listen(port, this.address, () => {
        this.server.server.off("error", reject);
        resolve((this.server.server.address() as { port: number }).port);
      });
    });
  }

  close(): Promise<void> {
    for (const { socket } of this.ordinals.values()) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private onConnect(session: SMTPServerSession, callback: (err?: Error | null) => void): void {
    const { tls, auth, session: mode } = this.behaviour;
    session.disabledCommands = [...(tls === "none" ? ["STARTTLS"] : []), ...(auth ? [] : ["AUTH"])];
    if (mode === "hang") return; // no greeting, ever
    callback();
  }

  private onData(stream: NodeJS.ReadableStream, session: SMTPServerSession, callback: (err?: Error | null, message?: string) => void): void {
    const connection = this.ordinals.get(`${session.remoteAddress}:${session.remotePort}`);
    if (this.behaviour.session === "drop-in-data") {
      stream.once("data", () => connection?.socket.destroy());
      stream.resume();
      return;
    }
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      const { data } = this.behaviour;
      if (data) return callback(smtpError(data));
      const envelope = session.envelope;
      this.messages.push({
        host: this.name,
        connection: connection?.ordinal ?? 0,
        helo: session.hostNameAppearsAs,
        secure: session.secure,
        user: session.user ? String(session.user) : null,
        mailFrom: envelope.mailFrom ? envelope.mailFrom.address : "",
        rcptTo: envelope.rcptTo.map((r: SMTPServerAddress) => ({ address: r.address, args: r.args || {} })),
        raw: Buffer.concat(chunks),
      });
      callback(null, `2.0.0 Ok: queued as ${this.name.split(".")[0]}-${this.messages.length}`);
    });
  }
}

function smtpError(reply: Reply): Error & { responseCode: number } {
  return Object.assign(new Error(reply.text), { responseCode: reply.code });
}

/** The running world: MX hosts, DNS, and the CA that signed the hosts' certificates. */
export interface MxWorld {
  /** The one port every MX host listens on (the agent's `delivery.mxPort`). */
  port: number;
  dns: DnsServer;
  /** A PEM file with the test CA (for `smarthosts.<name>.ca` and NODE_EXTRA_CA_CERTS). */
  caFile: string;
  /** An address in the world where nothing listens: connections to it are refused. */
  deadAddress: string;
  host(name: string): MxHost;
  /** Serve the A records of every host plus `zone`. */
  setZone(zone: DnsZone): void;
  /** Every host back to accepting, nothing received, zone back to the hosts' A records only. */
  reset(): void;
  close(): Promise<void>;
}

/** The CA and its PEM, made once per test process. */
let caPromise: Promise<Pem> | null = null;

/** Start MX hosts named `names` on 127.0.0.2, 127.0.0.3, … (one port for all) and a DNS server. */
export async function startMxWorld(names: string[]): Promise<MxWorld> {
  caPromise ??= makeCa();
  const ca = await caPromise;
  const wrongName = await makeServerCert("wrong-name.example.com", ca);
  const certs = await Promise.all(names.map(async (name) => ({ selfSigned: await makeServerCert(name), caSigned: await makeServerCert(name, ca), wrongName })));
  const dir = await mkdtemp(join(tmpdir(), "hr-mx-world-"));
  const caFile = join(dir, "ca.pem");
  await writeFile(caFile, ca.cert);

  let hosts: MxHost[] = [];
  let port = 0;
  for (let attempt = 1; ; attempt++) {
    hosts = names.map((name, i) => new MxHost(name, `127.0.0.${i + 2}`, certs[i]!));
    try {
      port = await hosts[0]!.listen(0);
      for (const h of hosts.slice(1)) await h.listen(port);
      break;
    } catch (err) {
      await Promise.all(hosts.map((h) => h.close().catch(() => {})));
      // Another program holds the port on one of the addresses: try another port.
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE" || attempt === 10) throw err;
    }
  }
  const hostRecords = (): DnsZone => Object.fromEntries(hosts.map((h) => [h.name, { A: [h.address] }]));
  const dns = await startDnsServer(hostRecords());
  const byName = new Map(hosts.map((h) => [h.name, h]));
  return {
    port,
    dns,
    caFile,
    deadAddress: "127.0.0.250",
    host(name) {
      const h = byName.get(name);
      assert.ok(h, `no MX host ${name} in this world`);
      return h;
    },
    setZone(zone) {
      dns.set({ ...hostRecords(), ...zone });
    },
    reset() {
      for (const h of hosts) h.reset();
      dns.set(hostRecords());
    },
    async close() {
      await Promise.all(hosts.map((h) => h.close()));
      await dns.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The MX records of a domain from `[exchange, preference]` pairs, for `setZone`. */
export function mxRecords(...exchanges: [string, number][]): DnsZone[string] {
  return { MX: exchanges.map(([exchange, preference]) => ({ exchange, preference })) };
}

/** Agent configuration for the world: alice@home.example.net is local, DNS and MX port point into the world, retries come within seconds. */
export function worldConfig(world: MxWorld, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const { delivery, queue, ...rest } = extra as { delivery?: Record<string, unknown>; queue?: Record<string, unknown> };
  return {
    hostname: "relay.home.example.net",
    localDomains: ["home.example.net"],
    users: { alice: { cramMd5Secret: "not used by these tests" } },
    dns: { servers: [world.dns.server], timeout: 1 },
    delivery: { mxPort: world.port, connectTimeout: 2, commandTimeout: 5, ...delivery },
    queue: { minBackoff: 1, maxBackoff: 2, scanInterval: 1, ...queue },
    ...rest,
  };
}

/** A recipient as given at submission, with its RFC 3461 NOTIFY parameter. */
export type Recipient = string | { address: string; notify: string };

/** Submit a message from `from` to `to` on the agent's first listener (trusted, no AUTH); returns its queue ID. */
export async function submit(agent: AgentProcess, from: string, to: Recipient[], subject: string): Promise<string> {
  const addresses = to.map((r) => (typeof r === "string" ? r : r.address));
  return submitText(agent, from, to, `From: <${from}>\r\nTo: ${addresses.map((a) => `<${a}>`).join(", ")}\r\nSubject: ${subject}\r\n\r\n${subject}: body\r\n`);
}

/** Submit `text` (a CRLF message) from `from` to `to` on the agent's first listener; returns its queue ID. */
export async function submitText(agent: AgentProcess, from: string, to: Recipient[], text: string): Promise<string> {
  const { dialog, greeting } = await SmtpDialog.open(agent.ports[0]!);
  try {
    assert.equal(greeting.code, 220, greeting.text);
    assert.equal((await dialog.command("EHLO laptop.home.example.net")).code, 250);
    const mail = await dialog.command(`MAIL FROM:<${from}>`);
    assert.equal(mail.code, 250, mail.text);
    for (const r of to) {
      const rcpt = await dialog.command(typeof r === "string" ? `RCPT TO:<${r}>` : `RCPT TO:<${r.address}> NOTIFY=${r.notify}`);
      assert.equal(rcpt.code, 250, rcpt.text);
    }
    return queueIdOf(await dialog.data(text));
  } finally {
    await dialog.quit();
  }
}

/** One delivery attempt's log line for a recipient, taken apart. */
export interface DeliveryLine {
  line: string;
  relay: string;
  delay: string;
  delays: string;
  dsn: string;
  status: string;
  detail: string;
}

/** `s` as a literal in a regular expression. */
export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function deliveryPattern(id: string, recipient: string, status: string, flags = ""): RegExp {
  return new RegExp(
    `^.*${id}: to=<${escapeRegExp(recipient)}>, relay=(\\S+), delay=(\\S+), delays=(\\S+), dsn=(\\S+), status=(${status}) \\((.*)\\)$`,
    `m${flags}`,
  );
}

function toLine(m: RegExpMatchArray): DeliveryLine {
  return { line: m[0], relay: m[1]!, delay: m[2]!, delays: m[3]!, dsn: m[4]!, status: m[5]!, detail: m[6]! };
}

/** Wait for the delivery log line of `recipient` in message `id` with `status`, after log offset `from`. */
export async function waitForDelivery(agent: AgentProcess, id: string, recipient: string, status: "sent" | "deferred" | "bounced", from = 0, ms = 15_000): Promise<DeliveryLine> {
  return toLine(await agent.waitForLog(deliveryPattern(id, recipient, status), ms, from));
}

/** Every delivery log line of `recipient` in message `id` so far, whatever its status. */
export function deliveryLines(agent: AgentProcess, id: string, recipient: string): DeliveryLine[] {
  return [...agent.log().matchAll(deliveryPattern(id, recipient, "\\w+", "g"))].map(toLine);
}

/** Names of the queue files in one state directory of the agent's spool. */
export async function queueFiles(agent: AgentProcess, state: "active" | "deferred" | "hold" | "incoming"): Promise<string[]> {
  return (await readdir(join(agent.spool, state))).sort();
}

/** Poll until message `id` is in the spool's `state` directory (its log line comes just before the move). */
export async function waitForQueueFile(agent: AgentProcess, state: "active" | "deferred" | "hold", id: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await queueFiles(agent, state)).includes(id)) {
    assert.ok(Date.now() < deadline, `${id} never reached ${state}/`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The messages in a local user's Maildir (`new/`), parsed. */
export async function mailbox(agent: AgentProcess, user: string): Promise<ParsedMail[]> {
  const dir = join(agent.mailboxes, user, "new");
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  return Promise.all(names.map(async (n) => simpleParser(await readFile(join(dir, n)), { keepDeliveryStatus: true })));
}

/** The per-recipient blocks of a DSN's message/delivery-status part, as field maps (names lower case). */
export function deliveryStatus(dsn: ParsedMail): Map<string, string>[] {
  const part = dsn.attachments.find((a) => a.contentType === "message/delivery-status");
  assert.ok(part, "the DSN has a message/delivery-status part");
  const groups = part.content
    .toString("utf8")
    .replace(/\r?\n(?=[ \t])/g, "")
    .split(/\r?\n\r?\n/)
    .filter((g) => g.trim() !== "")
    .map((g) => new Map(g.split(/\r?\n/).filter((l) => l !== "").map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()])));
  return groups.slice(1);
}

/** Wait until the non-delivery notice about message `id` has been delivered to `user`@home.example.net, and return it parsed. */
export async function waitForBounceNotice(agent: AgentProcess, id: string, user = "alice", from = 0): Promise<ParsedMail> {
  const [, noticeId] = await agent.waitForLog(new RegExp(`${id}: sender non-delivery notification: (\\S+)`), 15_000, from);
  await waitForDelivery(agent, noticeId!, `${user}@home.example.net`, "sent", from);
  const notices = (await mailbox(agent, user)).filter((m) => m.messageId?.startsWith(`<${id}.failure.`));
  assert.equal(notices.length, 1, `one non-delivery notice about ${id} in ${user}'s Maildir`);
  return notices[0]!;
}
