/**
 * dyndns-server — a stand-in for a DynDNS provider's update server on loopback, speaking the
 * dyndns2 protocol: `GET /nic/update?hostname=…&myip=…` with basic authentication, answered
 * `good IP`, `nochg IP`, `badauth`, `nohost`, or whatever answer a test forces.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** One update request as it arrived. */
export interface DynDnsRequest {
  hostname: string | null;
  myip: string | null;
  /** The basic-authentication user and password, or null without them. */
  user: string | null;
  password: string | null;
  userAgent: string | null;
  /** What the server answered. */
  answer: string;
}

/** The running stand-in. */
export class DynDnsServer {
  readonly requests: DynDnsRequest[] = [];
  /** Answer every update with this (e.g. `911`, `abuse`) instead of doing it; null: do it. */
  forced: string | null = null;

  private constructor(
    private readonly server: Server,
    /** The names of the account and the address each carries. */
    readonly names: Map<string, string>,
    private readonly account: { user: string; password: string },
  ) {}

  /** Start with an account `user`/`password` holding `names` (name → address). */
  static async start(account: { user: string; password: string }, names: Record<string, string>): Promise<DynDnsServer> {
    let dyndns!: DynDnsServer;
    const server = createServer((req, res) => {
      const answer = dyndns.handle(req.url ?? "/", req.headers.authorization ?? null, req.headers["user-agent"] ?? null);
      res.writeHead(answer.status, { "content-type": "text/plain" });
      res.end(`${answer.text}\n`);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    dyndns = new DynDnsServer(server, new Map(Object.entries(names)), account);
    return dyndns;
  }

  /** `http://127.0.0.1:port`, the agent's `dyndns.server`. */
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private handle(path: string, authorization: string | null, userAgent: string | null): { status: number; text: string } {
    const url = new URL(path, "http://dyndns.invalid");
    const credentials = /^Basic (.+)$/i.exec(authorization ?? "")?.[1];
    const [user, password] = credentials ? Buffer.from(credentials, "base64").toString("utf8").split(/:(.*)/s) : [null, null];
    const hostname = url.searchParams.get("hostname");
    const myip = url.searchParams.get("myip");
    const answer = (status: number, text: string) => {
      this.requests.push({ hostname, myip, user: user ?? null, password: password ?? null, userAgent, answer: text });
      return { status, text };
    };
    if (url.pathname !== "/nic/update") return answer(404, "not found");
    if (user !== this.account.user || password !== this.account.password) return answer(401, "badauth");
    if (this.forced !== null) return answer(200, this.forced);
    if (hostname === null || !this.names.has(hostname)) return answer(200, "nohost");
    if (myip === null) return answer(200, "dnserr");
    const before = this.names.get(hostname);
    this.names.set(hostname, myip);
    return answer(200, `${before === myip ? "nochg" : "good"} ${myip}`);
  }
}
