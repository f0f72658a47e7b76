/**
 * http-listener — a Hono app served on host:port with @hono/node-server, as the agent's local API
 * and the cloud's Node entry run: resolves once bound (or rejects, e.g. EADDRINUSE), tells the
 * caller's address, and closes by letting requests in flight finish.
 */
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { serve, type Http2Bindings, type HttpBindings } from "@hono/node-server";
import { getConnInfo } from "@hono/node-server/conninfo";
import type { Context } from "hono";
import type { HostPort } from "./net.js";

/** The largest header block a request may have, octets (HTTP answers 431 above it). */
export const MAX_HEADER_OCTETS = 64 * 1024;

/** A bound server. */
export interface HttpListener {
  /** The bound address and port (the port the system chose for `:0`). */
  host: string;
  port: number;
  /** Stop accepting; idle keep-alive connections close now, busy ones after their response. */
  close(): Promise<void>;
}

/** Serve `fetch` on `listen` (plain HTTP/1.1); `env` carries Node's request and response (getConnInfo reads the peer there). */
export async function listenHttp(fetch: (request: Request, env: HttpBindings | Http2Bindings) => Response | Promise<Response>, listen: HostPort): Promise<HttpListener> {
  // A thousand recipients in Envelope-To take some 30 KB of header fields; Node allows 16 KiB by default.
  const server = serve({ fetch, hostname: listen.host, port: listen.port, serverOptions: { maxHeaderSize: MAX_HEADER_OCTETS } }) as Server;
  const bound = await new Promise<AddressInfo>((resolve, reject) => {
    server.once("listening", () => resolve(server.address() as AddressInfo));
    server.once("error", reject);
  });
  const busy = new Set<ServerResponse>();
  const owed = new WeakMap<Duplex, Set<ServerResponse>>();
  server.on("request", (request: IncomingMessage, response: ServerResponse) => {
    busy.add(response);
    const onConnection = owed.get(request.socket) ?? new Set<ServerResponse>();
    owed.set(request.socket, onConnection.add(response));
    response.once("close", () => {
      busy.delete(response);
      onConnection.delete(response);
    });
  });
  const refused = new WeakSet<Duplex>();
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    // The parser reports every later chunk on the connection again.
    if (refused.has(socket)) return;
    refused.add(socket);
    refuseUnreadable(err, socket, [...(owed.get(socket) ?? [])]);
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

/**
 * Answer bytes the HTTP parser could not read. Node's own handler sends its 400 at once and drops
 * the connection, so a request read whole just before (a GET followed by an unframed body, a
 * pipelined request and then garbage) gets that 400 instead of its own answer. Here those requests
 * are answered first, in order; then the 400, except after a request with `Connection: close`,
 * whose later bytes RFC 9112 section 9.6 has the server ignore. An error inside a request (a broken
 * chunk, a timeout) leaves nothing to answer properly, and gets Node's handling.
 */
function refuseUnreadable(err: NodeJS.ErrnoException, socket: Duplex, owed: ServerResponse[]): void {
  const reply = errorReply(err.code);
  if (err.code?.startsWith("HPE_") && owed.every((response) => response.req.complete)) {
    let left = owed.length;
    const refuse = () => {
      // Not writable: the last answer ended the connection (Connection: close), Node closes it.
      if (!socket.writable) return;
      socket.end(err.code === "HPE_CLOSED_CONNECTION" ? "" : reply, () => socket.destroy());
    };
    if (left === 0) return refuse();
    for (const response of owed) response.once("close", () => --left === 0 && refuse());
    return;
  }
  if (socket.writable && !owed.some((response) => response.headersSent)) socket.write(reply);
  socket.destroy();
}

/** The status line Node itself would send for a client error, closing the connection. */
function errorReply(code: string | undefined): string {
  const status = code === "HPE_HEADER_OVERFLOW" ? 431 : code === "HPE_CHUNK_EXTENSIONS_OVERFLOW" ? 413 : code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`;
}

/** The caller's IP address; a dual-stack socket's `::ffff:a.b.c.d` is `a.b.c.d`. */
export function clientAddressOf(c: Context): string {
  const address = getConnInfo(c).remote.address ?? "unknown";
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? address;
}
