/**
 * faulty-cloud — a front for the cloud half that fails on purpose: message submissions are answered
 * with 500 or 429, never answered, cut off, or answered with bytes that are no HTTP; with no fault
 * set, every request goes through unchanged (Host included, so signatures still verify) to the
 * real cloud behind it.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** How POST /v1/messages fails; GET /v1/info always goes through. */
export type CloudFault = "none" | "500" | "429" | "hang" | "close" | "garbage";

/** Problem answers as the cloud writes them (RFC 9457). */
const PROBLEMS = {
  "500": { status: 500, type: "internal-error", title: "The relay failed unexpectedly", detail: "the relay failed; try again later", headers: {} },
  "429": { status: 429, type: "rate-limited", title: "Too many requests for this key", detail: "key home-1 may send 600 requests per minute", headers: { "retry-after": "120" } },
} as const;

/** The front, listening on 127.0.0.1. */
export class FaultyCloud {
  fault: CloudFault = "none";
  /** Where requests go when there is no fault: the real cloud's port. */
  target = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(): Promise<FaultyCloud> {
    let front!: FaultyCloud;
    const server = createServer((req, res) => front.handle(req, res));
    const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
    front = new FaultyCloud(server, port);
    server.on("connection", (socket: Socket) => {
      front.sockets.add(socket);
      socket.once("close", () => front.sockets.delete(socket));
    });
    return front;
  }

  /** `http://127.0.0.1:port`, the agent's `cloud.url`. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Drop every open connection (ending hung requests). */
  hangUp(): void {
    for (const s of this.sockets) s.destroy();
  }

  close(): Promise<void> {
    this.hangUp();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const fault = req.method === "POST" && req.url === "/v1/messages" ? this.fault : "none";
    switch (fault) {
      case "none":
        return this.forward(req, res);
      case "500":
      case "429": {
        const p = PROBLEMS[fault];
        req.resume();
        res.writeHead(p.status, { "content-type": "application/problem+json", ...p.headers });
        res.end(JSON.stringify({ type: `https://homerelay.dev/problems/${p.type}`, title: p.title, status: p.status, detail: p.detail }));
        return;
      }
      case "hang":
        req.resume();
        return;
      case "close":
        req.once("end", () => req.socket.destroy());
        req.resume();
        return;
      case "garbage":
        req.once("end", () => req.socket.end("SMTP/9.9 ??? \x00\x01\x02 not http at all\r\n\r\n"));
        req.resume();
        return;
    }
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const upstream = request({ host: "127.0.0.1", port: this.target, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  }
}
