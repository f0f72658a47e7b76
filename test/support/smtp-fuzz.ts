/**
 * smtp-fuzz — what a broken or hostile SMTP client sends, as fast-check arbitraries (commands with
 * mangled arguments, pipelined garbage, over-long lines, bare LF and CR, NUL bytes, raw binary,
 * DATA with bare line ends and long headers), and one conversation over a real socket that checks
 * every line the server answers: a reply code, a bounded length, no NUL or bare CR, and an end.
 */
import { connect } from "node:net";
import fc from "fast-check";

const ADDRESSES = ["carol@home.example.net", "postmaster@home.example.net", "postmaster", "bob@example.org", "", "a@[127.0.0.1]", "x%y@home.example.net"];
const VERBS = ["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "VRFY", "EXPN", "HELP", "AUTH", "BDAT", "ETRN", "TURN", "XCLIENT", "QUIT"];

/** Printable text, unicode included, with no line ends of its own. */
const text = fc.string({ unit: "grapheme", maxLength: 40 }).map((s) => s.replace(/[\r\n]/g, " "));

/** An address as a client might write it: a real one, one with junk around it, or pure junk. */
const address = fc.oneof(
  fc.constantFrom(...ADDRESSES).map((a) => `<${a}>`),
  fc.tuple(fc.constantFrom(...ADDRESSES), text).map(([a, junk]) => `<${a}${junk}>`),
  text,
  fc.constantFrom("<", ">", "<<>>", "<@a,@b:c@d>", '<"a b"@home.example.net>', "<a@b@c>", "<\u00e9@home.example.net>"),
);

/** ESMTP parameters, well-formed and not. */
const parameters = fc.array(
  fc.oneof(
    fc.constantFrom("SIZE=1000", "SIZE=99999999999999999999", "SIZE=-1", "BODY=8BITMIME", "BODY=BINARYMIME", "SMTPUTF8", "RET=FULL", "RET=HDRS", "RET=", "ENVID=QQ314159", "NOTIFY=NEVER", "NOTIFY=SUCCESS,FAILURE,DELAY", "NOTIFY=BOGUS", "ORCPT=rfc822;a@b", "AUTH=<>", "="),
    text.map((t) => t.replace(/ /g, "")),
  ),
  { maxLength: 4 },
);

/** One command line without its line end. */
const commandLine = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom("MAIL FROM:", "RCPT TO:"), address, parameters).map(([v, a, p]) => [v + a, ...p].join(" ")) },
  { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...VERBS), text).map(([v, t]) => `${v} ${t}`) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...VERBS), fc.boolean()).map(([v, lower]) => (lower ? v.toLowerCase() : v)) },
  { weight: 2, arbitrary: fc.constantFrom("AUTH PLAIN", "AUTH PLAIN AGNhcm9sAHNlY3JldA==", "AUTH LOGIN", "AUTH CRAM-MD5", "AUTH XOAUTH2 ====", "AUTH PLAIN !!!not base64!!!") },
  { weight: 1, arbitrary: fc.integer({ min: 500, max: 20_000 }).map((n) => `EHLO ${"a".repeat(n)}`) },
  { weight: 1, arbitrary: fc.integer({ min: 500, max: 20_000 }).map((n) => `MAIL FROM:<${"b".repeat(n)}@home.example.net>`) },
  { weight: 1, arbitrary: text },
);

/** How a line ends: properly, bare LF, bare CR, NUL, or not at all. */
const lineEnd = fc.constantFrom("\r\n", "\r\n", "\r\n", "\n", "\r", "\0\r\n", "");

/** A message body as sent after DATA: bare line ends, long lines, long headers, dots, 8-bit. */
const body = fc
  .array(
    fc.oneof(
      fc.constantFrom("Subject: fuzz", "From: <carol@home.example.net>", ".", "..", ". ", "Received: from x by y", "\u00ff\u00fe 8-bit", "X-Null: a\0b"),
      text,
      fc.integer({ min: 900, max: 3000 }).map((n) => `X-Long: ${"h".repeat(n)}`),
      fc.integer({ min: 1, max: 200 }).map((n) => `X-Folded: start${"\r\n\tcontinued".repeat(n)}`),
    ),
    { maxLength: 12 },
  )
  .chain((lines) => fc.tuple(fc.constant(lines), fc.array(lineEnd, { minLength: lines.length, maxLength: lines.length })))
  .map(([lines, ends]) => lines.map((l, i) => l + ends[i]).join(""));

/** One piece of a client's stream. */
const piece = fc.oneof(
  { weight: 10, arbitrary: fc.tuple(commandLine, lineEnd).map(([c, e]) => Buffer.from(c + e, "utf8")) },
  { weight: 2, arbitrary: body.map((b) => Buffer.from(`DATA\r\n${b}\r\n.\r\n`, "utf8")) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)) },
);

/** A whole client stream: a greeting command most of the time, then pieces, all pipelined. */
export const clientStream: fc.Arbitrary<Buffer[]> = fc
  .tuple(fc.option(fc.constantFrom("EHLO fuzz.example\r\n", "HELO fuzz.example\r\n"), { freq: 4, nil: null }), fc.array(piece, { minLength: 1, maxLength: 12 }))
  .map(([hello, pieces]) => [...(hello ? [Buffer.from(hello)] : []), ...pieces]);

/** What the server did with one stream. */
export interface Conversation {
  /** Every line the server sent, without its line end. */
  lines: string[];
  /** The server closed the connection before the deadline. */
  ended: boolean;
  /** Lines that break SMTP's reply syntax or limits, with why. */
  problems: string[];
}

/** Longest reply line RFC 5321 (4.5.3.1.5) allows, CRLF included. */
const MAX_REPLY_LINE = 512;

/**
 * A loopback source address of its own for the `n`th conversation (127.1.0.0 onwards), so that
 * what the server counts per client (failed AUTH slows replies down, connection counts) does not
 * carry from one random stream to the next.
 */
export function clientAddress(n: number): string {
  return `127.${1 + ((n >>> 16) % 254)}.${(n >>> 8) & 255}.${n & 255}`;
}

/**
 * Send `stream` to 127.0.0.1:`port` from `from` in one go, then end any DATA and QUIT; collect
 * every line the server answers until it closes, or until `ms` have passed (a hang).
 */
export function converse(port: number, stream: Buffer[], from = "127.0.0.1", ms = 10_000): Promise<Conversation> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: "127.0.0.1", localAddress: from });
    const chunks: Buffer[] = [];
    let ended = false;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(chunks).toString("latin1");
      const lines = raw.split("\n");
      const tail = lines.pop()!;
      const problems: string[] = [];
      if (tail !== "") problems.push(`an unterminated last line: ${JSON.stringify(tail.slice(0, 80))}`);
      for (const line of lines) {
        if (!line.endsWith("\r")) problems.push(`a line ending in a bare LF: ${JSON.stringify(line.slice(0, 80))}`);
        const content = line.replace(/\r$/, "");
        if (!/^[2-5]\d\d(?:[ -]|$)/.test(content)) problems.push(`not a reply line: ${JSON.stringify(content.slice(0, 80))}`);
        if (content.length + 2 > MAX_REPLY_LINE) problems.push(`a reply line of ${content.length + 2} octets: ${JSON.stringify(content.slice(0, 80))}…`);
        if (/[\0\r]/.test(content)) problems.push(`NUL or CR inside a reply line: ${JSON.stringify(content.slice(0, 80))}`);
      }
      if (lines.length === 0) problems.push("no reply at all, not even a greeting");
      resolve({ lines: lines.map((l) => l.replace(/\r$/, "")), ended, problems });
    };
    const timer = setTimeout(finish, ms);
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.on("error", () => {});
    socket.on("close", () => {
      ended = true;
      finish();
    });
    socket.once("connect", () => {
      // Written without waiting for replies, as a broken client or a spammer's ratware does.
      socket.write(Buffer.concat([...stream, Buffer.from("\r\n.\r\nQUIT\r\n")]));
    });
  });
}
