#!/usr/bin/env node
/**
 * cli — the `homerelay-cloud` command: `serve` runs the cloud half on a VPS behind a TLS reverse
 * proxy, `check-config` validates its configuration. A command of its own, because the agent and
 * the cloud share only shared/ (the Lambda entry is cloud/lambda.ts).
 */
import { Command } from "commander";
import { ConfigError, EX_CONFIG } from "../shared/config-file.js";
import { loadCloudConfig } from "./config.js";
import { runCloudServe } from "./serve.js";

const program = new Command("homerelay-cloud").description("homerelay's cloud half: verifies signed requests from agents and relays their mail");

program
  .command("serve")
  .description("serve the signed HTTP API (POST /v1/messages, GET /v1/info, /v1/whoami, /healthz) in the foreground")
  .requiredOption("-c, --config <file>", "configuration file (YAML)")
  .action((o: { config: string }) => runCloudServe({ config: o.config }));

program
  .command("check-config")
  .description("validate the configuration and exit (78 when it is wrong)")
  .requiredOption("-c, --config <file>", "configuration file (YAML)")
  .action((o: { config: string }) => {
    try {
      loadCloudConfig(o.config);
      process.stdout.write(`${o.config}: configuration OK\n`);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      process.stderr.write(`homerelay-cloud: fatal: configuration error:\n${err.message}\n`);
      process.exit(EX_CONFIG);
    }
  });

await program.parseAsync(process.argv);
