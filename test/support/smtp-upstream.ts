/**
 * smtp-upstream — a loopback SMTP upstream (smtp-server) for the cloud's `smtp` onward transport:
 * STARTTLS with a self-signed certificate, AUTH PLAIN/LOGIN required before MAIL, replies per
 * recipient, and a gate that holds the end of DATA so a test can catch a relay in progress.
 */
import type { Socket } from "node:net";
import { generate } from "selfsigned";
import { SMTPServer, type SMTPServerAddress } from "smtp-server";

/** An SMTP reply the upstream gives a recipient instead of accepting it. */
export interface UpstreamReply {
  code: number;
  text: string;
}

/** A message the upstream accepted. */
export interface UpstreamMessage {
  user: string | null;
  secure: boolean;
  helo: string;
  mailFrom: string;
  /** MAIL FROM parameters (RET, ENVID, BODY, SIZE). */
  mailArgs: Record<string, string | true>;
  rcptTo: { address: string; args: Record<string, string | true> }[];
  raw: Buffer;
}

/** The running upstream. */
export class SmtpUpstream {
  /** Messages accepted, in order. */
  readonly messages: UpstreamMessage[] = [];
  /** TCP connections accepted since the last reset. */
  connections = 0;
  /** Replies by recipient address (lower case); unlisted recipients are accepted. */
  rcpt: Record<string, UpstreamReply> = {};
  private gate: { open: Promise<void>; release: () => void } | null = null;
  private waitingAtData = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: SMTPServer,
    readonly port: number,
  ) {}

  /** Start on 127.0.0.1, port 0, requiring AUTH with `account`. */
  static async start(account: { user: string; pass: string }): Promise<SmtpUpstream> {
    let upstream!: SmtpUpstream;
    const pems = await generate([{ name: "commonName", value: "smtp.upstream.example" }], { keyType: "ec", curve: "P-256", algorithm: "sha256" });
    const server = new SMTPServer({
      name: "smtp.upstream.example",
      key: pems.private,
      cert: pems.cert,
      authMethods: ["PLAIN", "LOGIN"],
      hideDSN: false,
      disableReverseLookup: true,
      closeTimeout: 100,
      onAuth: (auth, _session, callback) => {
        if (auth.username === account.user && auth.password === account.pass) callback(null, { user: auth.username });
        else callback(null, { responseCode: 535, message: "5.7.8 Error: authentication failed" });
      },
      onMailFrom: (_address, session, callback) => callback(session.user ? undefined : Object.assign(new Error("5.7.0 Authentication required"), { responseCode: 530 })),
      onRcptTo: (address, _session, callback) => {
        const reply = upstream.rcpt[address.address.toLowerCase()];
        callback(reply ? Object.assign(new Error(reply.text), { responseCode: reply.code }) : undefined);
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", () => {
          const gate = upstream.gate;
          upstream.waitingAtData++;
          void (gate?.open ?? Promise.resolve()).then(() => {
            upstream.waitingAtData--;
            upstream.messages.push({
              user: session.user ? String(session.user) : null,
              secure: session.secure,
              helo: session.hostNameAppearsAs,
              mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
              mailArgs: (session.envelope.mailFrom && session.envelope.mailFrom.args) || {},
              rcptTo: session.envelope.rcptTo.map((r: SMTPServerAddress) => ({ address: r.address, args: r.args || {} })),
              raw: Buffer.concat(chunks),
            });
            callback(null, `2.0.0 Ok: queued as up-${upstream.messages.length}`);
          });
        });
      },
    });
    server.on("error", () => {});
    const port = await new Promise<number>((resolve, reject) => {
      server.server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve((server.server.address() as { port: number }).port));
    });
    upstream = new SmtpUpstream(server, port);
    server.server.on("connection", (socket: Socket) => {
      upstream.connections++;
      upstream.sockets.add(socket);
      socket.once("close", () => upstream.sockets.delete(socket));
    });
    return upstream;
  }

  /** Hold every end of DATA until `release` is called. */
  hold(): { release: () => void } {
    let release!: () => void;
    const open = new Promise<void>((resolve) => (release = resolve));
    this.gate = { open, release };
    return {
      release: () => {
        this.gate = null;
        release();
      },
    };
  }

  /** Messages whose DATA has ended and wait at the gate. */
  get held(): number {
    return this.waitingAtData;
  }

  /** Accept everything again and forget what was received. */
  reset(): void {
    this.gate?.release();
    this.gate = null;
    this.rcpt = {};
    this.messages.length = 0;
    this.connections = 0;
  }

  close(): Promise<void> {
    this.gate?.release();
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
