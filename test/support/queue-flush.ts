/**
 * queue-flush — `homerelay queue flush` run as an administrator would once a fault has cleared:
 * the built CLI, asynchronously (the test process may host the servers the agent delivers to).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { CLI, type AgentProcess } from "./agent-process.js";

const run = promisify(execFile);

/** Flush message `id` (or the whole deferred queue) of `agent`; returns what the command printed. */
export async function flushQueue(agent: AgentProcess, id?: string): Promise<string> {
  const { stdout } = await run(process.execPath, [CLI, "queue", "flush", ...(id ? [id] : []), "--config", agent.configFile], { timeout: 15_000 });
  return stdout;
}
