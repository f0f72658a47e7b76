/**
 * send-command — `homerelay send --to … --subject … [--from …] [--cc …] [--attach FILE]… [--html
 * FILE]`, the body on standard input: composed with the shared JSON message form, then handed to
 * the running agent's HTTP API (printing the queue ID), or, when the API cannot be used, written
 * into the spool's drop directory like `homerelay sendmail`; `--cloud URL --key FILE` sends it
 * signed to a cloud instead. Exit statuses follow sysexits(3).
 */
import { readFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { basename } from "node:path";
import { Readable, type Writable } from "node:stream";
import type { Command } from "commander";
import { senderMatches } from "../../shared/address.js";
import { HomerelayClient, HomerelayError, type Queued, type Relayed } from "../../shared/client/homerelay-client.js";
import { EX_CONFIG } from "../../shared/config-file.js";
import { formatHostPort, parseHostPort } from "../../shared/net.js";
import { SecretFileError } from "../../shared/secret-file.js";
import { readJsonMessage, type JsonMessage, type ReadableJsonMessage } from "../../shared/submission/json-message.js";
import { loadCloudKey } from "../cloud/cloud-transport.js";
import type { AgentConfig } from "../config.js";
import { httpAddressFile } from "../http/http-submission.js";
import { ensureMaildrop, maildropDir, writeDropFile } from "../pickup/maildrop.js";
import { Spool } from "../queue/spool.js";
import { EX_CANTCREAT, EX_DATAERR, EX_OK, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE } from "../sendmail/sendmail.js";
import { configOrExit } from "./load-config.js";

/** sysexits(3): an input file (--attach, --html) cannot be read. */
const EX_NOINPUT = 66;
/** sysexits(3): the cloud refused a recipient permanently. */
const EX_NOUSER = 67;
/** sysexits(3): the token or key may not send this (401, 403). */
const EX_NOPERM = 77;

/** The command line of `homerelay send`. */
export interface SendArguments {
  to: string[];
  subject: string;
  from?: string;
  cc: string[];
  bcc: string[];
  attach: string[];
  html?: string;
  config?: string;
  cloud?: string;
  key?: string;
  keyId?: string;
}

/** The process around one run, passed in so that the command reads and writes nothing else. */
export interface SendIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  env: NodeJS.ProcessEnv;
}

/** A reason to stop with an exit status and one line on standard error. */
class Fatal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Run `homerelay send`; resolves with the exit status. */
export async function runSend(args: SendArguments, io: SendIo): Promise<number> {
  try {
    if ((args.cloud === undefined) !== (args.key === undefined)) throw new Fatal(EX_USAGE, "--cloud and --key go together");
    const config = configOrExit(args.config);
    const json = await composeArguments(args, config, io.stdin);
    const message = readJsonMessage(json);
    if (!message.ok) throw new Fatal(EX_DATAERR, `${message.problem.title}: ${message.problem.detail}`);
    if (args.cloud !== undefined) return await sendToCloud(args.cloud, args.key!, args.keyId, message, io);
    const api = await localApi(config, message.envelope.sender, io.env);
    const queued = "url" in api ? await submitLocally(api, json) : null;
    if (queued !== null) {
      io.stdout.write(`${queued}\n`);
      return EX_OK;
    }
    const dir = await dropMessage(config, message, args.from !== undefined);
    io.stderr.write(`homerelay send: ${"url" in api ? `the agent does not answer at ${api.url}` : api.unusable}; the message waits in ${dir} until the agent picks it up\n`);
    return EX_OK;
  } catch (err) {
    if (!(err instanceof Fatal)) throw err;
    io.stderr.write(`homerelay send: ${err.message}\n`);
    return err.status;
  }
}

/** The JSON message the arguments and standard input describe. */
async function composeArguments(args: SendArguments, config: AgentConfig, stdin: Readable): Promise<JsonMessage> {
  if (args.to.length === 0) throw new Fatal(EX_USAGE, "no recipients: give --to");
  const input = async (file: string) => {
    try {
      return await readFile(file);
    } catch (err) {
      throw new Fatal(EX_NOINPUT, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const chunks: Buffer[] = [];
  for await (const chunk of stdin as AsyncIterable<Buffer | string>) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  const attachments = await Promise.all(args.attach.map(async (file) => ({ filename: basename(file), content: (await input(file)).toString("base64") })));
  return {
    // Without --from: the user's own address, as sendmail and pickup use it.
    from: args.from ?? `${userInfo().username}@${config.hostname}`,
    to: args.to,
    ...(args.cc.length > 0 ? { cc: args.cc } : {}),
    ...(args.bcc.length > 0 ? { bcc: args.bcc } : {}),
    subject: args.subject,
    text: Buffer.concat(chunks).toString("utf8"),
    ...(args.html !== undefined ? { html: (await input(args.html)).toString("utf8") } : {}),
    ...(attachments.length > 0 ? { attachments } : {}),
  };
}

/**
 * The running agent's API and a token this user can read, preferring one that may send as
 * `sender`: $HOMERELAY_TOKEN, else the configuration's tokens in a file or in clear. Otherwise
 * why the API cannot be used: not configured, not running (no address file), or no token at hand.
 */
async function localApi(config: AgentConfig, sender: string, env: NodeJS.ProcessEnv): Promise<{ url: string; token: string } | { unusable: string }> {
  if (config.http === undefined) return { unusable: "the configuration has no http: section" };
  const bound = parseHostPort((await readFile(httpAddressFile(new Spool(config.spool).privateDir), "utf8").catch(() => "")).trim());
  if (bound === null) return { unusable: "the agent's HTTP API is not running (or this user may not see it)" };
  // An agent listening on every address is reached on loopback.
  const host = bound.host === "0.0.0.0" ? "127.0.0.1" : bound.host === "::" ? "::1" : bound.host;
  const url = `http://${formatHostPort({ host, port: bound.port })}`;
  if (env.HOMERELAY_TOKEN) return { url, token: env.HOMERELAY_TOKEN };
  const usable: { token: string; senders: string[] }[] = [];
  for (const t of config.http.tokens) {
    const token = t.token ?? (t.file !== undefined ? (await readFile(t.file, "utf8").catch(() => "")).trim() : "");
    if (token) usable.push({ token, senders: t.senders });
  }
  const chosen = usable.find((t) => t.senders.some((p) => senderMatches(sender, p))) ?? usable[0];
  return chosen ? { url, token: chosen.token } : { unusable: "no API token is readable by this user (set HOMERELAY_TOKEN)" };
}

/**
 * Submit to the local API; the queue ID, or null when nothing listens (an agent that stopped
 * without removing its address file). Any other failure may have come after the message was
 * queued: it is reported, not retried through maildrop/, which could queue it twice.
 */
async function submitLocally(api: { url: string; token: string }, json: JsonMessage): Promise<string | null> {
  let result: Queued;
  try {
    result = await new HomerelayClient(api).send(json);
  } catch (err) {
    if (err instanceof HomerelayError) throw refused(err, "the agent");
    const cause = (err as Error & { cause?: NodeJS.ErrnoException }).cause;
    if (cause?.code === "ECONNREFUSED") return null;
    throw new Fatal(EX_TEMPFAIL, `no answer from the agent at ${api.url}: ${cause?.message ?? (err as Error).message}; the message may or may not be queued (see the mail log)`);
  }
  return result.id;
}

/** Write the composed message into maildrop/ for pickup; returns the directory. */
async function dropMessage(config: AgentConfig, message: ReadableJsonMessage, fromGiven: boolean): Promise<string> {
  const dir = maildropDir(config.spool);
  const raw = Buffer.concat(await message.compose().toArray());
  // The limit the agent would apply over SMTP or HTTP, checked as sendmail checks it.
  if (raw.length > config.limits.messageSize) throw new Fatal(EX_DATAERR, `message larger than the limit of ${config.limits.messageSize} bytes`);
  try {
    await ensureMaildrop(config.spool);
    // Without --from, pickup takes the sender from the file's owner, as for sendmail.
    await writeDropFile(config.spool, { ...(fromGiven ? { sender: message.envelope.sender } : {}), recipients: message.envelope.recipients.map((r) => r.address), extractRecipients: false }, Readable.from([raw]));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const temporary = code === "ENOSPC" || code === "EDQUOT" || code === "EIO";
    throw new Fatal(temporary ? EX_TEMPFAIL : EX_CANTCREAT, `cannot write the message to ${dir}: ${(err as Error).message}`);
  }
  return dir;
}

/** Compose locally and send signed to the cloud; prints the cloud's ID and each recipient's result. */
async function sendToCloud(url: string, keyFile: string, keyId: string | undefined, message: ReadableJsonMessage, io: SendIo): Promise<number> {
  let seed: Uint8Array;
  try {
    seed = loadCloudKey(keyFile);
  } catch (err) {
    if (err instanceof SecretFileError) throw new Fatal(EX_CONFIG, err.message);
    throw err;
  }
  const raw = Buffer.concat(await message.compose().toArray());
  const client = new HomerelayClient({ url, keyId: keyId ?? basename(keyFile).replace(/\.key$/, ""), privateKey: seed });
  let result: Relayed;
  try {
    result = await client.sendRaw(raw, { from: message.envelope.sender, to: message.envelope.recipients.map((r) => r.address) });
  } catch (err) {
    if (err instanceof HomerelayError) throw refused(err, "the cloud");
    const e = err as Error & { cause?: Error };
    throw new Fatal(EX_TEMPFAIL, `cannot reach the cloud at ${url}: ${e.cause?.message ?? e.message}`);
  }
  io.stdout.write(`${result.id}\n`);
  for (const r of result.results) io.stderr.write(`homerelay send: to=<${r.recipient}>, relay=cloud[${url}], dsn=${r.dsn}, status=${r.status} (${r.detail})\n`);
  if (result.results.some((r) => r.status === "failed")) return EX_NOUSER;
  return result.results.some((r) => r.status === "deferred") ? EX_TEMPFAIL : EX_OK;
}

/** A refusal as an exit status: bad input, not allowed, or try later. */
function refused(err: HomerelayError, by: string): Fatal {
  const status = err.status === 401 || err.status === 403 ? EX_NOPERM : err.status === 429 || err.status >= 500 ? EX_TEMPFAIL : err.status >= 400 && err.status < 500 ? EX_DATAERR : EX_UNAVAILABLE;
  return new Fatal(status, `${by} refused the message: ${err.message}${err.problem ? ` [${err.problem.type}]` : ""}`);
}

/** Add `send` to the program. */
export function addSendCommand(program: Command): void {
  const collect = (value: string, list: string[]) => [...list, value];
  program
    .command("send")
    .description("send a message (body on stdin) through the running agent's HTTP API, else its drop directory; or signed to a cloud")
    .option("--to <address>", "recipient (repeat for more)", collect, [])
    .requiredOption("--subject <text>", "the subject")
    .option("--from <address>", "sender (default: your login name at the agent's hostname)")
    .option("--cc <address>", "copy recipient (repeat for more)", collect, [])
    .option("--bcc <address>", "blind copy recipient (repeat for more)", collect, [])
    .option("--attach <file>", "attach a file (repeat for more)", collect, [])
    .option("--html <file>", "an HTML body besides the text from stdin")
    .option("-c, --config <file>", "configuration file")
    .option("--cloud <url>", "send signed to this cloud instead of the agent")
    .option("--key <file>", "the Ed25519 key for --cloud (from homerelay keygen)")
    .option("--key-id <id>", "the key's id in the cloud's keys: (default: the key file's name without .key)")
    .action((args: SendArguments) => runSend(args, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env }).then((code) => process.exit(code)));
}
