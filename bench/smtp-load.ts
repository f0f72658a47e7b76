/**
 * smtp-load — the benchmark's SMTP load generator (like Postfix's smtp-source): N messages of
 * L bytes over S concurrent sessions, one connection per message or reused connections, with
 * PIPELINING. Prints one JSON line: messages accepted, seconds, non-2xx replies.
 *
 *   node --import tsx bench/smtp-load.ts --port 2525 -m 5000 -s 10 -l 4096 [--reuse] [--to rcpt]
 */
import { connect, type Socket } from "node:net";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    m: { type: "string", short: "m", default: "1000" },
    s: { type: "string", short: "s", default: "10" },
    l: { type: "string", short: "l", default: "4096" },
    reuse: { type: "boolean", default: false },
    to: { type: "string", default: "bench@example.org" },
    from: { type: "string", default: "load@example.net" },
  },
});
const total = Number(values.m);
const sessions = Number(values.s);
const size = Number(values.l);
const port = Number(values.port);

/** A message of about `size` octets with a unique Message-ID, lines of 76 characters. */
function message(n: number): Buffer {
  const head = `From: <${values.from}>\r\nTo: <${values.to}>\r\nSubject: bench ${n}\r\nMessage-ID: <bench.${process.pid}.${n}@example.net>\r\n\r\n`;
  const line = "x".repeat(76) + "\r\n";
  const body = line.repeat(Math.max(1, Math.ceil((size - head.length) / line.length)));
  return Buffer.from(head + body + ".\r\n");
}

/** Reads SMTP replies from a socket, one promise per expected reply. */
class Replies {
  private buf = "";
  private queue: string[] = [];
  private waiters: ((r: string) => void)[] = [];
  constructor(socket: Socket) {
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      this.buf += d;
      let nl;
      while ((nl = this.buf.indexOf("\n")) !== -1) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        if (line[3] === "-") continue;
        const w = this.waiters.shift();
        if (w) w(line);
        else this.queue.push(line);
      }
    });
    socket.on("close", () => this.waiters.splice(0).forEach((w) => w("421 closed")));
  }
  next(): Promise<string> {
    const q = this.queue.shift();
    return q !== undefined ? Promise.resolve(q) : new Promise((r) => this.waiters.push(r));
  }
}

let sent = 0;
let accepted = 0;
const failures: string[] = [];

async function openSession(): Promise<{ socket: Socket; replies: Replies }> {
  const socket = connect({ host: values.host!, port });
  socket.setNoDelay(true);
  const replies = new Replies(socket);
  await new Promise<void>((res, rej) => {
    socket.once("connect", () => res());
    socket.once("error", rej);
  });
  const greeting = await replies.next();
  if (!greeting.startsWith("220")) throw new Error(greeting);
  socket.write("EHLO load.example.net\r\n");
  await replies.next();
  return { socket, replies };
}

/** One transaction, pipelined: MAIL, RCPT, DATA in one write, then the content. */
async function transaction(s: { socket: Socket; replies: Replies }, n: number): Promise<void> {
  s.socket.write(`MAIL FROM:<${values.from}>\r\nRCPT TO:<${values.to}>\r\nDATA\r\n`);
  const [mail, rcpt, data] = [await s.replies.next(), await s.replies.next(), await s.replies.next()];
  if (!data.startsWith("354")) {
    failures.push(`${mail} | ${rcpt} | ${data}`);
    return;
  }
  s.socket.write(message(n));
  const done = await s.replies.next();
  if (done.startsWith("250")) accepted++;
  else failures.push(done);
}

async function worker(): Promise<void> {
  let session = values.reuse ? await openSession() : null;
  while (sent < total && failures.length === 0) {
    const n = sent++;
    const s = session ?? (await openSession());
    await transaction(s, n);
    if (!values.reuse) {
      s.socket.end("QUIT\r\n");
      await s.replies.next();
    }
  }
  if (session) {
    session.socket.end("QUIT\r\n");
    await session.replies.next();
    session = null;
  }
}

const start = process.hrtime.bigint();
await Promise.all(Array.from({ length: sessions }, () => worker()));
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
process.stdout.write(JSON.stringify({ accepted, seconds, rate: accepted / seconds, failures: failures.slice(0, 3) }) + "\n");
