/**
 * faulty-mx — a remote mail server that misbehaves on purpose, spoken over raw TCP so that every
 * byte is the test's: a tarpit that trickles its replies one byte a second, one that answers with
 * garbage or floods the client with it, one that takes the whole message and hangs up without a
 * reply. With no fault set it is a plain MX that records the messages it takes.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";

/**
 * What the server does wrong. `tarpit-greeting`: an endless multi-line greeting, one byte a second;
 * `tarpit-data-reply`: a normal session until the end of DATA, then an endless multi-line reply one
 * byte a second; `garbage-greeting`: a 64 KiB line of random bytes instead of a greeting; `garbage-flood`:
 * bytes without a line end, as fast as the client takes them; `garbage-reply`: a proper
 * greeting, then lines that are no SMTP reply; `drop-after-data`: the whole message is read, then
 * the connection closes without a reply; `refused-reset`: RCPT TO is refused for now (450) for
 * recipients named `later@…`, and RSET is not understood (502); `drop-on-reset`: the same, but
 * RSET closes the connection without a reply.
 */
export type MxFault = "none" | "tarpit-greeting" | "tarpit-data-reply" | "garbage-greeting" | "garbage-flood" | "garbage-reply" | "drop-after-data" | "refused-reset" | "drop-on-reset";

const NAME = "mx.faulty.example";

/** The misbehaving server. */
export class FaultyMx {
  fault: MxFault = "none";
  /** Messages taken (dot-unstuffed, CRLF), in order. */
  readonly messages: Buffer[] = [];
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Listen on 127.0.0.1, a free port. */
  static async start(): Promise<FaultyMx> {
    let mx!: FaultyMx;
    const server = createServer((socket) => mx.serve(socket));
    const port = await new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port));
    });
    mx = new FaultyMx(server, port);
    return mx;
  }

  /** Close every open connection (ending tarpits), and go on listening. */
  hangUp(): void {
    for (const s of this.sockets) s.destroy();
  }

  /** Close every connection and stop listening. */
  close(): Promise<void> {
    this.hangUp();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    const timers = new Set<NodeJS.Timeout>();
    socket.on("error", () => {});
    socket.once("close", () => {
      this.sockets.delete(socket);
      for (const t of timers) clearInterval(t);
    });
    const fault = this.fault;
    /** Write an endless multi-line reply, one byte a second. */
    const trickle = (code: number) => {
      const line = Buffer.from(`${code}-${NAME} is thinking\r\n`);
      let at = 0;
      const timer = setInterval(() => socket.write(line.subarray(at, at + 1), () => (at = (at + 1) % line.length)), 1000);
      timers.add(timer);
    };
    switch (fault) {
      case "tarpit-greeting":
        return trickle(220);
      case "garbage-greeting":
        // One 64 KiB line of noise: well under a client's response limit, far over any sane log line.
        // It starts with a digit, which nodemailer takes for a reply code (found when the noise happened to).
        socket.write(Buffer.concat([Buffer.from("7"), randomBytes(64 * 1024).map((b) => (b === 10 || b === 13 ? 32 : b)), Buffer.from("\r\nhello? 22O ready\r\n", "latin1")]));
        return;
      case "garbage-flood": {
        // Filler with no line end, as fast as the client reads them, until it hangs up.
        const chunk = Buffer.alloc(64 * 1024, "Z");
        const pump = () => {
          while (!socket.destroyed && socket.write(chunk));
        };
        socket.on("drain", pump);
        pump();
        return;
      }
    }
    socket.write(`220 ${NAME} ESMTP\r\n`);
    let buffer = Buffer.alloc(0);
    let inData = false;
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        if (inData) {
          const end = buffer.indexOf("\r\n.\r\n");
          if (end === -1) return;
          const message = Buffer.from(buffer.subarray(0, end + 2).toString("latin1").replace(/^\.\./gm, "."), "latin1");
          buffer = buffer.subarray(end + 5);
          inData = false;
          if (fault === "drop-after-data") return void socket.destroy();
          if (fault === "tarpit-data-reply") return trickle(250);
          this.messages.push(message);
          socket.write(`250 2.0.0 Ok: queued as faulty-${this.messages.length}\r\n`);
          continue;
        }
        const nl = buffer.indexOf("\r\n");
        if (nl === -1) return;
        const line = buffer.subarray(0, nl).toString("latin1");
        buffer = buffer.subarray(nl + 2);
        if (fault === "garbage-reply") {
          socket.write("hello there\r\n2500 OK\r\n\x00\x01\x02 what?\r\n");
          continue;
        }
        const verb = line.split(" ", 1)[0]!.toUpperCase();
        if (verb === "EHLO") socket.write(`250-${NAME}\r\n250 8BITMIME\r\n`);
        else if (verb === "DATA") {
          inData = true;
          socket.write("354 End data with <CR><LF>.<CR><LF>\r\n");
        } else if (verb === "QUIT") {
          socket.end("221 2.0.0 Bye\r\n");
          return;
        } else if (fault === "refused-reset" && verb === "RSET") socket.write("502 5.5.2 Error: command not recognized\r\n");
        else if (fault === "drop-on-reset" && verb === "RSET") return void socket.destroy();
        else if ((fault === "refused-reset" || fault === "drop-on-reset") && verb === "RCPT" && /<later@/i.test(line)) {
          socket.write("450 4.2.0 <later>: Recipient address rejected: try again later\r\n");
        }
        else if (["HELO", "MAIL", "RCPT", "RSET", "NOOP"].includes(verb)) socket.write("250 2.0.0 Ok\r\n");
        else socket.write("502 5.5.2 Error: command not recognized\r\n");
      }
    });
  }
}
