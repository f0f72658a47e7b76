/**
 * control-socket — the agent's local control channel (like Postfix's public/ and private/
 * sockets): a Unix socket in the spool's private/ directory, mode 0600, one JSON request and one
 * JSON reply per line. The queue commands use it; without a running agent they say so.
 */
import { chmod, unlink } from "node:fs/promises";
import { createConnection, createServer, type Server } from "node:net";
import { join } from "node:path";
import type { MailLog } from "../../shared/log.js";
import type { ControlReply, ControlRequest, QueueControl } from "./queue-control.js";

/** Path of the control socket of the spool whose private directory is `privateDir`. */
export function controlSocketPath(privateDir: string): string {
  return join(privateDir, "control.sock");
}

/** Serve control requests until `close()`. */
export async function serveControl(path: string, control: QueueControl, log: MailLog): Promise<{ close(): Promise<void> }> {
  // A socket file left by a crashed agent would make listen fail with EADDRINUSE.
  await unlink(path).catch(() => {});
  const server: Server = createServer((socket) => {
    let buffer = "";
    socket.setEncoding("utf8");
    socket.on("error", () => socket.destroy());
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      if (buffer.length > 65536) return socket.destroy();
      const nl = buffer.indexOf("\n");
      if (nl === -1) return;
      const line = buffer.slice(0, nl);
      buffer = "";
      let request: ControlRequest;
      try {
        request = JSON.parse(line) as ControlRequest;
      } catch {
        socket.end(JSON.stringify({ ok: false, error: "request is not JSON" } satisfies ControlReply) + "\n");
        return;
      }
      control.handle(request).then(
        (reply) => socket.end(JSON.stringify(reply) + "\n"),
        (err: Error) => {
          log.warn(`control request ${request.op}: ${err.message}`);
          socket.end(JSON.stringify({ ok: false, error: err.message } satisfies ControlReply) + "\n");
        },
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  await chmod(path, 0o600);
  return {
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Raised by `askAgent` when no agent listens on the socket. */
export class AgentNotRunning extends Error {}

/** Send one request to the running agent and wait for its reply. */
export function askAgent(path: string, request: ControlRequest, timeoutMs = 30_000): Promise<ControlReply> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let data = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from the agent on ${path}`));
    }, timeoutMs);
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(JSON.stringify(request) + "\n"));
    socket.on("data", (d: string) => (data += d));
    socket.on("end", () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(data) as ControlReply);
      } catch {
        reject(new Error(`unreadable answer from the agent: ${data.slice(0, 200)}`));
      }
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === "ENOENT" || err.code === "ECONNREFUSED") reject(new AgentNotRunning(`the agent is not running (nothing listens on ${path})`));
      else reject(err);
    });
  });
}
