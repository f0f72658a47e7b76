/**
 * mta-sts-server — a loopback HTTPS server for MTA-STS tests: serves `/.well-known/mta-sts.txt`
 * for `mta-sts.<domain>` hosts from a table the test changes at run time, with one self-signed
 * certificate naming every policy host (the agent trusts it as a CA), counts fetches, and can be
 * switched "down" (every connection dropped at once).
 */
import type { AddressInfo, Socket } from "node:net";
import { createServer, type Server } from "node:https";
import { generate } from "selfsigned";

/** A policy file's text: `version: STSv1`, the mode, the mx patterns and max_age (default one day). */
export function policyText(mode: "enforce" | "testing" | "none", mx: string[], maxAge = 86400): string {
  return ["version: STSv1", `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), `max_age: ${maxAge}`, ""].join("\r\n");
}

/** The running policy server. */
export class PolicyServer {
  /** Policy texts by domain; a domain without one answers 404. */
  readonly policies = new Map<string, string>();
  /** Policy domains asked for, in order. */
  readonly fetches: string[] = [];
  /** Drop every connection as it comes (the server is down). */
  down = false;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    /** The certificate of every policy host, PEM: trust it as a CA. */
    readonly certificate: string,
  ) {}

  /** Start on 127.0.0.1, port 0, with a certificate for `mta-sts.<domain>` of each of `domains`. */
  static async start(domains: string[]): Promise<PolicyServer> {
    const names = domains.map((d) => `mta-sts.${d}`);
    const pems = await generate([{ name: "commonName", value: names[0]! }], {
      keyType: "ec",
      curve: "P-256",
      algorithm: "sha256",
      extensions: [{ name: "subjectAltName", altNames: names.map((value) => ({ type: 2, value })) }],
    });
    let policyServer!: PolicyServer;
    const server = createServer({ key: pems.private, cert: pems.cert }, (req, res) => {
      const domain = (req.headers.host ?? "").replace(/:\d+$/, "").replace(/^mta-sts\./, "");
      policyServer.fetches.push(domain);
      const text = policyServer.policies.get(domain);
      if (req.url !== "/.well-known/mta-sts.txt" || text === undefined) {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
        return;
      }
      res.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end(text);
    });
    policyServer = new PolicyServer(server, pems.cert);
    server.on("connection", (socket: Socket) => {
      if (policyServer.down) return socket.destroy();
      policyServer.sockets.add(socket);
      socket.once("close", () => policyServer.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    return policyServer;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** How many times `domain`'s policy was asked for. */
  fetchesOf(domain: string): number {
    return this.fetches.filter((d) => d === domain).length;
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
