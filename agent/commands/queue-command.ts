/**
 * queue-command — `homerelay queue list|show|flush|hold|release|delete` (Postfix mailq, postqueue
 * and postsuper). Listing reads the spool; changes go through the running agent's control socket.
 */
import type { Command } from "commander";
import { askAgent, AgentNotRunning, controlSocketPath } from "../control/control-socket.js";
import type { ControlRequest } from "../control/queue-control.js";
import { Spool } from "../queue/spool.js";
import { formatMailq, listQueue } from "../showq/queue-listing.js";
import { configOrExit } from "./load-config.js";

/** sysexits(3) EX_UNAVAILABLE: the agent is not running. */
const EX_UNAVAILABLE = 69;

/** Print the queue like mailq (or JSON); returns the exit status. */
export async function printQueue(configFile: string | undefined, json: boolean, id?: string): Promise<number> {
  const config = configOrExit(configFile);
  const entries = await listQueue(new Spool(config.spool), id);
  if (id !== undefined && entries.length === 0) {
    process.stderr.write(`homerelay: ${id}: no such message in the queue\n`);
    return 1;
  }
  process.stdout.write(json ? JSON.stringify(entries, null, 2) + "\n" : formatMailq(entries));
  return 0;
}

/** Send a control request to the running agent and print its answer; returns the exit status. */
export async function controlAgent(configFile: string | undefined, request: ControlRequest): Promise<number> {
  const config = configOrExit(configFile);
  const path = controlSocketPath(new Spool(config.spool).privateDir);
  try {
    const reply = await askAgent(path, request);
    if (!reply.ok) {
      process.stderr.write(`homerelay: ${reply.error}\n`);
      return 1;
    }
    process.stdout.write(reply.message + "\n");
    return 0;
  } catch (err) {
    if (err instanceof AgentNotRunning) {
      process.stderr.write(`homerelay: ${err.message}; start it with "homerelay agent"\n`);
      return EX_UNAVAILABLE;
    }
    throw err;
  }
}

/** Add the `queue` subcommands to the program. */
export function addQueueCommands(program: Command): void {
  const queue = program.command("queue").description("list and manage queued mail (like mailq, postqueue, postsuper)");
  const withConfig = (c: Command) => c.option("-c, --config <file>", "configuration file");
  const run = (work: Promise<number>) => work.then((code) => process.exit(code));

  withConfig(queue.command("list").description("list queued messages (mailq)").option("--json", "JSON for machines")).action((o: { config?: string; json?: boolean }) =>
    run(printQueue(o.config, o.json === true)),
  );
  withConfig(queue.command("show <id>").description("show one queued message as JSON")).action((id: string, o: { config?: string }) => run(printQueue(o.config, true, id)));
  withConfig(queue.command("flush [id]").description("deliver deferred mail now (postqueue -f / -i)").option("--domain <domain>", "only mail for this domain")).action(
    (id: string | undefined, o: { config?: string; domain?: string }) => run(controlAgent(o.config, { op: "flush", ...(id ? { id } : {}), ...(o.domain ? { domain: o.domain } : {}) })),
  );
  withConfig(queue.command("hold <id>").description("put a deferred message on hold (postsuper -h)")).action((id: string, o: { config?: string }) => run(controlAgent(o.config, { op: "hold", id })));
  withConfig(queue.command("release <id>").description("release a held message for delivery (postsuper -H)")).action((id: string, o: { config?: string }) =>
    run(controlAgent(o.config, { op: "release", id })),
  );
  withConfig(queue.command("delete [id]").description("delete a queued message (postsuper -d)").option("--all-deferred", "delete every deferred message")).action(
    (id: string | undefined, o: { config?: string; allDeferred?: boolean }) =>
      run(controlAgent(o.config, { op: "delete", ...(id ? { id } : {}), ...(o.allDeferred ? { allDeferred: true } : {}) })),
  );
}
