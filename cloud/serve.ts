/**
 * serve — the Node entry of the cloud app (`homerelay-cloud serve --config FILE`, for a VPS behind
 * a TLS-terminating proxy): @hono/node-server on `listen`, the embedded file store, the onward
 * transport from the configuration; SIGTERM stops accepting, finishes requests and closes the store;
 * SIGHUP reloads the keys, authorities and limits (key rotation without a restart).
 */
import { ConfigError, EX_CONFIG } from "../shared/config-file.js";
import { clientAddressOf, listenHttp } from "../shared/http-listener.js";
import { createMailLog, type MailLog } from "../shared/log.js";
import { formatHostPort, parseHostPort } from "../shared/net.js";
import { defaultEd25519 } from "../shared/protocol/ed25519.js";
import { createCloudApp } from "./app.js";
import { loadCloudConfig, type CloudConfig } from "./config.js";
import type { OnwardTransport } from "./onward/onward.js";
import { createMxTransport } from "./onward/mx.js";
import { SecretFileError } from "../shared/secret-file.js";
import { stopOnSignals } from "../shared/shutdown.js";
import { createSmtpTransport } from "./onward/smtp.js";
import { FileStore } from "./store/file-store.js";

/** sysexits(3) EX_UNAVAILABLE: the listen port is taken or not ours to bind. */
const EX_UNAVAILABLE = 69;
const STORE_NOT_A_DIRECTORY = "cloud serve keeps its store in a directory; DynamoDB is for the Lambda entry";

/** A running Node entry. */
export interface CloudServer {
  /** The bound address and port (the port the system chose for `:0`). */
  host: string;
  port: number;
  /**
   * Answer the next requests with `next`: its keys, authorities, limits and windows (per-key rate
   * counts start again). What the running server was built on (`listen`, `store`, `onward`, `log`)
   * stays as it is until a restart.
   */
  reload(next: CloudConfig): void;
  /** Stop accepting, let requests in flight finish, close the onward transport and the store. */
  close(): Promise<void>;
}

/** What the running server is built on: a reload leaves these as they are. */
const RESTART_TO_CHANGE = ["listen", "store", "onward", "log"] as const;

/** The onward transport the configuration names; SES is loaded only when used (it pulls in the AWS SDK). */
export async function onwardFromConfig(config: CloudConfig): Promise<OnwardTransport> {
  const onward = config.onward;
  switch (onward.transport) {
    case "ses":
      return (await import("./onward/ses.js")).createSesTransport(onward);
    case "smtp":
      // The EHLO name: the cloud's public name, never localhost.
      return createSmtpTransport(onward, config.authority[0]!.replace(/:\d+$/, ""));
    case "mx":
      return createMxTransport(onward);
  }
}

/** Start the cloud app on `config.listen` with the file store in `config.store`. */
export async function serveCloud(config: CloudConfig, log: MailLog): Promise<CloudServer> {
  if (typeof config.store !== "string") throw new Error(STORE_NOT_A_DIRECTORY);
  const listen = parseHostPort(config.listen)!;
  const onward = await onwardFromConfig(config);
  const store = await FileStore.open(config.store);
  const ed25519 = await defaultEd25519();
  let running = config;
  let app = createCloudApp({ config, store, onward, ed25519, log, clientAddress: clientAddressOf });
  const server = await listenHttp((request, env) => app.fetch(request, env), listen).catch(async (err: Error) => {
    await onward.close?.();
    await store.close();
    throw err;
  });
  log.info(`listening on ${formatHostPort(server)} for ${config.authority.join(", ")}, onward ${onward.name}`);
  return {
    host: server.host,
    port: server.port,
    reload(next) {
      const fixed = RESTART_TO_CHANGE.filter((name) => JSON.stringify(next[name]) !== JSON.stringify(running[name]));
      if (fixed.length > 0) log.warn(`reload: changes to ${fixed.join(", ")} take effect at the next restart`);
      const config = { ...next, listen: running.listen, store: running.store, onward: running.onward, log: running.log };
      app = createCloudApp({ config, store, onward, ed25519, log, clientAddress: clientAddressOf });
      running = config;
      log.info(`reload: keys ${running.keys.map((k) => k.id).join(", ")}; authority ${running.authority.join(", ")}`);
    },
    async close() {
      await server.close();
      await onward.close?.();
      await store.close();
    },
  };
}

/** `homerelay-cloud serve --config FILE`: run until SIGTERM or SIGINT; SIGHUP reloads the file. */
export async function runCloudServe(options: { config: string }): Promise<void> {
  let config: CloudConfig;
  try {
    config = loadCloudConfig(options.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`homerelay: fatal: configuration error:\n${err.message}\n`);
      process.exit(EX_CONFIG);
    }
    throw err;
  }
  if (typeof config.store !== "string") {
    process.stderr.write(`homerelay: fatal: configuration error:\n${options.config}: store: ${STORE_NOT_A_DIRECTORY}\n`);
    process.exit(EX_CONFIG);
  }
  const log = createMailLog({ format: config.log.format, level: config.log.level }, "cloud");
  const reload = (server: CloudServer) => {
    let next: CloudConfig;
    try {
      next = loadCloudConfig(options.config);
    } catch (err) {
      log.error(`reload failed, keeping the running configuration: ${(err as Error).message}`);
      return;
    }
    server.reload(next);
  };
  // Taken from the start: SIGHUP's default action would end the process, and systemd counts the
  // service as running (and may send a reload) while the journal is still being replayed.
  let listening: CloudServer | null = null;
  let reloadWhenListening = false;
  process.on("SIGHUP", () => {
    if (listening) reload(listening);
    else reloadWhenListening = true;
  });
  const server = await serveCloud(config, log).catch((err: NodeJS.ErrnoException) => {
    log.error(`fatal: ${err.message}`);
    log.flush();
    process.exit(err instanceof SecretFileError ? EX_CONFIG : err.code === "EADDRINUSE" || err.code === "EACCES" ? EX_UNAVAILABLE : 1);
  });
  listening = server;
  if (reloadWhenListening) reload(server);
  stopOnSignals(() => server.close(), log);
}
