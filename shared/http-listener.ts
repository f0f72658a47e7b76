/**
 * http-listener — a Hono app served on host:port with @hono/node-server, as the agent's local API
 * and the cloud's Node entry run: resolves once bound (or rejects, e.g. EADDRINUSE), tells the
 * caller's address, and closes by letting requests in flight finish.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { getConnInfo } from "@hono/node-server/conninfo";
import type { Context } from "hono";
import type { HostPort } from "./net.js";

/** A bound server. */
export interface HttpListener {
  /** The bound address and port (the port the system chose for `:0`). */
  host: string;
  port: number;
  /** Stop accepting; idle keep-alive connections close now, busy ones after their response. */
  close(): Promise<void>;
}

/** Serve `fetch` on `listen` (plain HTTP/1.1). */
export async function listenHttp(fetch: (request: Request) => Response | Promise<Response>, listen: HostPort): Promise<HttpListener> {
  const server = serve({ fetch, hostname: listen.host, port: listen.port }) as Server;
  const bound = await new Promise<AddressInfo>((resolve, reject) => {
    server.once("listening", () => resolve(server.address() as AddressInfo));
    server.once("error", reject);
  });
  const busy = new Set<ServerResponse>();
  server.on("request", (_request: IncomingMessage, response: ServerResponse) => {
    busy.add(response);
    response.once("close", () => busy.delete(response));
  });
  return {
    host: bound.address,
    port: bound.port,
    close: async () => {
      // Responses still being worked on are the last on their connections.
      for (const response of busy) if (!response.headersSent) response.setHeader("connection", "close");
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await closed;
    },
  };
}

/** The caller's IP address; a dual-stack socket's `::ffff:a.b.c.d` is `a.b.c.d`. */
export function clientAddressOf(c: Context): string {
  const address = getConnInfo(c).remote.address ?? "unknown";
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? address;
}
