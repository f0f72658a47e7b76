/**
 * http-load — the cloud bench's HTTP load generator, in its own process, driven by its parent over
 * IPC: it signs message submissions (RFC 9421, Ed25519) while nothing is timed, then sends them
 * over C keep-alive HTTP/1.1 connections for S seconds, one request in flight per connection.
 * Requests are written as pre-serialized bytes and answers read with a minimal parser, so that the
 * generator costs as little CPU as possible and the same for every server it loads.
 *
 * Messages from the parent, each answered by one message:
 *   { type: "init", seed, keyid, authority }         → { type: "ready" }
 *   { type: "prepare", count }                       → { type: "prepared", unused }  (fresh signed requests)
 *   { type: "run", port, seconds, concurrency, fresh } → { type: "result", completed, seconds, rate, exhausted, statuses, firstFailure }
 * `fresh` runs send each prepared request once (the cloud refuses a replayed nonce); other runs
 * cycle through one fixed set of signed requests, byte for byte like the fresh ones.
 */
import { randomUUID } from "node:crypto";
import { connect, type Socket } from "node:net";
import { contentDigest } from "../shared/protocol/content-digest.js";
import { nodeCryptoEd25519, type Ed25519 } from "../shared/protocol/ed25519.js";
import { MESSAGE_COMPONENTS, signRequest } from "../shared/protocol/signed-request.js";

/** The body size of every request, octets. */
export const BODY_BYTES = 4096;
const SENDER = "bench@example.net";
const RECIPIENT = "rcpt@example.org";
/** Requests in the fixed set that runs against the reference servers cycle through. */
const REUSABLE = 1000;

export type LoadCommand =
  | { type: "init"; seed: string; keyid: string; authority: string }
  | { type: "prepare"; count: number }
  | { type: "run"; port: number; seconds: number; concurrency: number; fresh: boolean };

export interface LoadResult {
  type: "result";
  completed: number;
  seconds: number;
  rate: number;
  /** The prepared requests ran out before the time was up (the run was shorter, the rate still holds). */
  exhausted: boolean;
  statuses: Record<string, number>;
  /** Status line and the start of the body of the first answer that was not 200. */
  firstFailure: string | null;
}

/** A 4 KiB RFC 5322 message from the sender the bench key may use. */
function messageBody(): Buffer {
  const head = `From: <${SENDER}>\r\nTo: <${RECIPIENT}>\r\nSubject: cloud bench\r\nMessage-ID: <cloud-bench.${process.pid}@example.net>\r\n\r\n`;
  const line = `${"x".repeat(76)}\r\n`;
  const text = head + line.repeat(Math.ceil((BODY_BYTES - head.length) / line.length));
  return Buffer.from(text.slice(0, BODY_BYTES - 2) + "\r\n");
}

const body = messageBody();
const digest = contentDigest(body);
let signer: { seed: Uint8Array; keyid: string; authority: string; ed25519: Ed25519 } | null = null;
let reusable: Buffer[] = [];
let fresh: Buffer[] = [];
let freshAt = 0;
let cycleAt = 0;

/** The header block of one signed submission, with its own nonce and Idempotency-Key. */
async function signedHead(): Promise<Buffer> {
  const s = signer!;
  const headers: Record<string, string> = {
    "content-type": "message/rfc822",
    "content-digest": digest,
    "envelope-from": `<${SENDER}>`,
    "envelope-to": `<${RECIPIENT}>`,
    "idempotency-key": `"${randomUUID()}"`,
  };
  const { signatureInput, signature } = await signRequest(
    { method: "POST", url: new URL(`http://${s.authority}/v1/messages`), header: (name) => headers[name] ?? null },
    { keyid: s.keyid, seed: s.seed, ed25519: s.ed25519, components: MESSAGE_COMPONENTS, nonce: randomUUID() },
  );
  const lines = [
    "POST /v1/messages HTTP/1.1",
    `host: ${s.authority}`,
    `content-length: ${body.length}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    `signature-input: ${signatureInput}`,
    `signature: ${signature}`,
  ];
  return Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1");
}

/** One keep-alive connection with one request in flight at a time. */
class Connection {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: { resolve: (a: { status: number; text: string }) => void; reject: (err: Error) => void } | null = null;

  private constructor(private readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      this.parse();
    });
    const fail = (err: Error) => {
      const w = this.waiter;
      this.waiter = null;
      w?.reject(err);
    };
    socket.on("error", fail);
    socket.on("close", () => fail(new Error("the server closed the connection")));
  }

  static open(port: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port, noDelay: true });
      socket.once("connect", () => resolve(new Connection(socket)));
      socket.once("error", reject);
    });
  }

  /** Send one request and wait for its whole answer. */
  exchange(head: Buffer): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.socket.cork();
      this.socket.write(head);
      this.socket.write(body);
      this.socket.uncork();
    });
  }

  close(): void {
    this.socket.destroy();
  }

  /** Complete the waiting exchange once a whole answer (Content-Length or chunked) is buffered. */
  private parse(): void {
    const headEnd = this.buf.indexOf("\r\n\r\n");
    if (headEnd === -1 || !this.waiter) return;
    const head = this.buf.toString("latin1", 0, headEnd);
    const status = Number(head.slice(9, 12));
    let end: number;
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (length) {
      end = headEnd + 4 + Number(length[1]);
      if (this.buf.length < end) return;
    } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
      let at = headEnd + 4;
      for (;;) {
        const lineEnd = this.buf.indexOf("\r\n", at);
        if (lineEnd === -1) return;
        const size = parseInt(this.buf.toString("latin1", at, lineEnd), 16);
        if (size === 0) {
          end = lineEnd + 4;
          break;
        }
        at = lineEnd + 2 + size + 2;
      }
      if (this.buf.length < end) return;
    } else {
      this.waiter.reject(new Error(`an answer without Content-Length or chunked coding: ${head.split("\r\n")[0]}`));
      this.waiter = null;
      return;
    }
    const text = status === 200 ? "" : `${head.split("\r\n")[0]} ${this.buf.toString("utf8", headEnd + 4, Math.min(end, headEnd + 404))}`;
    this.buf = this.buf.subarray(end);
    const w = this.waiter;
    this.waiter = null;
    w.resolve({ status, text });
  }
}

async function run(port: number, seconds: number, concurrency: number, useFresh: boolean): Promise<LoadResult> {
  const connections = await Promise.all(Array.from({ length: concurrency }, () => Connection.open(port)));
  const statuses: Record<string, number> = {};
  let firstFailure: string | null = null;
  let completed = 0;
  let exhausted = false;
  const next = (): Buffer | null => {
    if (!useFresh) return reusable[cycleAt++ % reusable.length]!;
    if (freshAt < fresh.length) return fresh[freshAt++]!;
    exhausted = true;
    return null;
  };
  const started = performance.now();
  const deadline = started + seconds * 1000;
  try {
    await Promise.all(
      connections.map(async (connection) => {
        while (performance.now() < deadline) {
          const head = next();
          if (!head) return;
          const { status, text } = await connection.exchange(head);
          completed++;
          statuses[status] = (statuses[status] ?? 0) + 1;
          if (status !== 200) firstFailure ??= text;
        }
      }),
    );
  } finally {
    for (const c of connections) c.close();
  }
  const elapsed = (performance.now() - started) / 1000;
  // Prepared requests that were not sent stay for the next run; sent ones are gone.
  fresh = fresh.slice(freshAt);
  freshAt = 0;
  return { type: "result", completed, seconds: elapsed, rate: completed / elapsed, exhausted, statuses, firstFailure };
}

async function handle(command: LoadCommand): Promise<unknown> {
  switch (command.type) {
    case "init":
      signer = { seed: new Uint8Array(Buffer.from(command.seed, "hex")), keyid: command.keyid, authority: command.authority, ed25519: await nodeCryptoEd25519() };
      reusable = [];
      for (let i = 0; i < REUSABLE; i++) reusable.push(await signedHead());
      return { type: "ready" };
    case "prepare":
      while (fresh.length < command.count) fresh.push(await signedHead());
      return { type: "prepared", unused: fresh.length };
    case "run":
      return run(command.port, command.seconds, command.concurrency, command.fresh);
  }
}

process.on("message", (command: LoadCommand) => {
  handle(command).then(
    (answer) => process.send!(answer),
    (err: Error) => process.send!({ type: "error", message: err.stack ?? err.message }),
  );
});
// The parent is gone: nothing left to do.
process.on("disconnect", () => process.exit(0));
