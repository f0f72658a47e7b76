#!/usr/bin/env node
/**
 * cli — the `homerelay` command: `agent` runs the home MTA in the foreground (for systemd or a
 * terminal), `queue` and `routes` inspect and manage it, `hash-password` makes the stored form of
 * an AUTH password, `keygen` the agent's key for the cloud route. Exit statuses follow
 * sysexits(3), e.g. 78 for a bad configuration.
 */
import { Command } from "commander";
import { runAgent } from "./commands/agent-command.js";
import { basename } from "node:path";
import { configOrExit } from "./commands/load-config.js";
import { addClassifyCommand } from "./commands/classify-command.js";
import { addDkimCommand } from "./commands/dkim-command.js";
import { addDoctorCommand } from "./commands/doctor-command.js";
import { addKeygenCommand } from "./commands/keygen-command.js";
import { addQueueCommands, controlAgent, printQueue } from "./commands/queue-command.js";
import { addRoutesCommands } from "./commands/routes-command.js";
import { addSendCommand } from "./commands/send-command.js";
import { VERSION } from "./master.js";
import { runSendmail, sendmailConfigOption } from "./sendmail/sendmail.js";
import { hashPassword } from "./smtpd/password.js";

// Queue files are fsynced on libuv's thread pool (read on first use, after these imports):
// its default of four threads would serialize the fsyncs of ten clients.
process.env.UV_THREADPOOL_SIZE ??= "16";

const program = new Command("homerelay").version(VERSION).description("Mail relay for home servers on dynamic IP addresses");

program
  .command("agent")
  .description("run the home MTA (SMTP intake, queue, delivery) in the foreground")
  .option("-c, --config <file>", "configuration file (default: $HOMERELAY_CONFIG, ./homerelay.yaml, embedded defaults)")
  .option("--check-config", "validate the configuration and exit")
  .action(runAgent);

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
addKeygenCommand(program);
addDkimCommand(program);
addDoctorCommand(program);
addClassifyCommand(program);
addSendCommand(program);
program
  .command("sendmail")
  .description("sendmail(1)-compatible submission: message on stdin, -t, -i, -f, -F, -bp, -q (install as /usr/sbin/sendmail)")
  .allowUnknownOption();

// sendmail's options (-oi, -f addr, -bp …) are not commander's: dispatch before it parses.
const invokedAs = basename(process.argv[1] ?? "");
const sendmailArgs =
  process.argv[2] === "sendmail" ? process.argv.slice(3) : invokedAs === "sendmail" ? process.argv.slice(2) : invokedAs === "mailq" ? ["-bp", ...process.argv.slice(2)] : null;
if (sendmailArgs) {
  const file = sendmailConfigOption(sendmailArgs);
  const config = configOrExit(file);
  process.exit(
    await runSendmail(sendmailArgs, {
      stdin: process.stdin,
      stderr: process.stderr,
      env: process.env,
      spool: config.spool,
      hostname: config.hostname,
      limits: { messageSize: config.limits.messageSize, lineLength: config.limits.lineLength },
      queue: (mode) => (mode === "list" ? printQueue(file, false) : controlAgent(file, { op: "flush" })),
    }),
  );
}

await program.parseAsync(process.argv);
