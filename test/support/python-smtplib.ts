/**
 * python-smtplib — sends one message with Python's smtplib (python3 on the PATH), a client not
 * written in this repository, for end-to-end tests of the agent's SMTP intake.
 */
import { spawn } from "node:child_process";

/** One smtplib session: optional AUTH, then MAIL, RCPT and DATA. */
export interface SmtplibMessage {
  port: number;
  sender: string;
  recipient: string;
  /** The message, CRLF line ends; smtplib dot-stuffs it. */
  message: Buffer;
  /** `smtp.login(user, password)`: smtplib picks CRAM-MD5, then PLAIN, then LOGIN among those offered. */
  login?: { user: string; password: string };
}

const SCRIPT = `
import json, smtplib, sys
args = json.loads(sys.argv[1])
message = sys.stdin.buffer.read()
replies = []
with smtplib.SMTP("127.0.0.1", args["port"], local_hostname="client.example", timeout=30) as smtp:
    smtp.ehlo()
    if "login" in args:
        replies.append(smtp.login(args["login"]["user"], args["login"]["password"]))
    replies += [smtp.mail(args["sender"]), smtp.rcpt(args["recipient"]), smtp.data(message)]
print(json.dumps([f"{code} {text.decode()}" for code, text in replies]))
`;

/**
 * Run the session; resolves with each reply as `code text` (login first when asked, then MAIL,
 * RCPT, DATA). Rejects with Python's error when smtplib raises, e.g. on a refused AUTH.
 */
export function smtplibSend(m: SmtplibMessage): Promise<string[]> {
  const args = { port: m.port, sender: m.sender, recipient: m.recipient, ...(m.login ? { login: m.login } : {}) };
  return new Promise((resolve, reject) => {
    const child = spawn("python3", ["-c", SCRIPT, JSON.stringify(args)], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve(JSON.parse(out) as string[]) : reject(new Error(`python3 exited with ${code}: ${err}`))));
    child.stdin.end(m.message);
  });
}
