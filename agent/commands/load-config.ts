/**
 * load-config — configuration loading shared by every subcommand: the same search order as the
 * agent, and the same refusal (exit 78 with file:line:column) when the file is wrong.
 */
import { ConfigError, EX_CONFIG } from "../../shared/config-file.js";
import { configPath, loadAgentConfig, type AgentConfig } from "../config.js";

/** Load the configuration for a subcommand, or print the problems and exit 78. */
export function configOrExit(explicit: string | undefined): AgentConfig {
  try {
    return loadAgentConfig(configPath(explicit));
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`homerelay: fatal: configuration error:\n${err.message}\n`);
      process.exit(EX_CONFIG);
    }
    throw err;
  }
}
