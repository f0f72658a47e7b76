#!/usr/bin/env node
/**
 * cli — the `homerelay` command. `homerelay agent` runs the home MTA in the foreground (for
 * systemd or a terminal); `--check-config` validates and exits; `hash-password` makes the stored
 * form of an AUTH password. Exit status follows sysexits(3): 78 for a bad configuration.
 */
import { Command } from "commander";
import { ConfigError, EX_CONFIG } from "../shared/config-file.js";
import { createMailLog } from "../shared/log.js";
import { configPath, loadAgentConfig } from "./config.js";
import { AliasError } from "./local/aliases.js";
import { SecretFileError } from "./smtp/smtp-transport.js";
import { Agent, VERSION } from "./master.js";
import { hashPassword } from "./smtpd/password.js";
import { addQueueCommands } from "./commands/queue-command.js";
import { addRoutesCommands } from "./commands/routes-command.js";

// Queue files are fsynced on libuv's thread pool (read on first use, after these imports):
// its default of four threads would serialize the fsyncs of ten clients.
process.env.UV_THREADPOOL_SIZE ??= "16";

/** sysexits(3) EX_SOFTWARE / EX_TEMPFAIL-style statuses used below. */
const EX_UNAVAILABLE = 69;

const program = new Command("homerelay").version(VERSION).description("Mail relay for home servers on dynamic IP addresses");

program
  .command("agent")
  .description("run the home MTA (SMTP intake, queue, delivery) in the foreground")
  .option("-c, --config <file>", "configuration file (default: $HOMERELAY_CONFIG, ./homerelay.yaml, embedded defaults)")
  .option("--check-config", "validate the configuration and exit")
  .action(async (options: { config?: string; checkConfig?: boolean }) => {
    const file = configPath(options.config);
    let config;
    try {
      config = loadAgentConfig(file);
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`homerelay: fatal: configuration error:\n${err.message}\n`);
        process.exit(EX_CONFIG);
      }
      throw err;
    }
    if (options.checkConfig) {
      process.stdout.write(`${config.source}: configuration OK\n`);
      return;
    }
    const log = createMailLog({ format: config.log.format, level: config.log.level });
    let agent: Agent;
    try {
      agent = await Agent.start(config, log);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      log.error(`fatal: ${e.message}`);
      log.flush();
      process.exit(err instanceof AliasError || err instanceof SecretFileError ? EX_CONFIG : e.code === "EADDRINUSE" || e.code === "EACCES" ? EX_UNAVAILABLE : 1);
    }
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info(`terminating on signal ${signal}`);
      agent.stop().then(
        () => {
          log.flush();
          process.exit(0);
        },
        (err: Error) => {
          log.error(`stop: ${err.message}`);
          log.flush();
          process.exit(1);
        },
      );
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGHUP", () => void agent.reload(file));
  });

program
  .command("hash-password")
  .description("read a password on standard input and print its hash for users.<name>.password")
  .action(async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    const password = Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
    if (!password) {
      process.stderr.write("homerelay: no password on standard input\n");
      process.exit(64);
    }
    process.stdout.write((await hashPassword(password)) + "\n");
  });

addQueueCommands(program);
addRoutesCommands(program);

await program.parseAsync(process.argv);
