/**
 * classify-command — `homerelay classify`: what SMTP rejections mean for routing, for administrators
 * and scripts. Reads one JSON object per line on standard input (`{"reply": "550-5.7.1 …\n550 …"}`),
 * or with `--text` the whole input as one plain reply, and writes one JSON answer per line:
 * `{"class", "reroute", "temporary", "reason"}`. A bad line is answered `{"error", "line"}` and the
 * rest is still read; the exit status is then 65 (EX_DATAERR).
 */
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import type { Command } from "commander";
import { classifyReply } from "../reroute/reply-classifier.js";
import type { SmtpReplyInput } from "../reroute/smtp-reply.js";

/** sysexits(3) EX_DATAERR: some input could not be read as a reply. */
const EX_DATAERR = 65;

/** The answer line for one reply: the verdict without the internal rule name. */
function answer(reply: SmtpReplyInput): string {
  const v = classifyReply(reply);
  return JSON.stringify({ class: v.class, reroute: v.reroute, temporary: v.temporary, reason: v.reason }) + "\n";
}

/** The reply in one input line, or why the line is not one. */
function replyOfLine(line: string): { reply: string } | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    return { error: `not JSON (${(err as Error).message})` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value) || typeof (value as { reply?: unknown }).reply !== "string") {
    return { error: `expected an object with a "reply" string, e.g. {"reply": "550 5.7.1 …"}` };
  }
  return { reply: (value as { reply: string }).reply };
}

/** Classify JSON lines from `input` onto `output`; blank lines are skipped. Returns the exit status. */
export async function classifyJsonLines(input: Readable, output: Writable): Promise<number> {
  let status = 0;
  let number = 0;
  for await (const line of createInterface({ input, crlfDelay: Infinity })) {
    number++;
    if (!line.trim()) continue;
    const parsed = replyOfLine(line);
    if ("error" in parsed) {
      output.write(JSON.stringify({ error: `line ${number}: ${parsed.error}`, line: number }) + "\n");
      status = EX_DATAERR;
    } else output.write(answer(parsed.reply));
  }
  return status;
}

/** Classify the whole of `input` as one plain reply text. Returns the exit status. */
export async function classifyText(input: Readable, output: Writable): Promise<number> {
  const chunks: Buffer[] = [];
  for await (const chunk of input) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString("utf8").replace(/\s+$/, "");
  if (!text) {
    output.write(JSON.stringify({ error: "no reply on standard input", line: 1 }) + "\n");
    return EX_DATAERR;
  }
  output.write(answer(text));
  return 0;
}

/** Add `classify` to the program. */
export function addClassifyCommand(program: Command): void {
  program
    .command("classify")
    .description('say what SMTP rejections mean for routing: JSON lines {"reply": "…"} on stdin, one JSON answer per line on stdout')
    .option("--text", "read one plain reply text (all of stdin) instead of JSON lines")
    .action(async (o: { text?: boolean }) => {
      // exitCode, not exit(): let stdout drain into a pipe first.
      process.exitCode = await (o.text ? classifyText(process.stdin, process.stdout) : classifyJsonLines(process.stdin, process.stdout));
    });
}
