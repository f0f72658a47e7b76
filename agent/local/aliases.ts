/**
 * aliases — the aliases(5) table of the local delivery agent: parses a sendmail/Postfix style
 * aliases file and expands a local part into the mailboxes and external addresses it reaches.
 */
import { readFile } from "node:fs/promises";

/** Deepest alias nesting followed before the table is called broken (a chain, not a loop). */
const MAX_DEPTH = 20;

/** One atom of a dot-atom local part (RFC 5322 atext, SMTPUTF8 allowed), without `/`. */
const ATOM = "[\\w!#$%&'*+=?^`{|}~\\u0080-\\uffff-]+";
/** A local name: dot-atom, so never empty, `.`, `..` or a path, and safe as a Maildir name. */
const LOCAL_NAME = new RegExp(`^${ATOM}(?:\\.${ATOM})*$`);
/** A quoted local part, as in `"john doe"@example.org`. */
const QUOTED_LOCAL = /^"(?:[^"\\\r\n]|\\.)*"$/;
/** A domain name or an address literal such as `[192.0.2.1]`. */
const DOMAIN = /^(?:[a-z0-9\u0080-\uffff-]+(?:\.[a-z0-9\u0080-\uffff-]+)*|\[[^[\]\\\s]+\])$/i;

/** Where one value of an alias sends mail. */
type AliasTarget =
  /** A bare name: another alias, or else a mailbox. */
  | { kind: "local"; name: string }
  /** `\name`: the mailbox itself, never expanded further. */
  | { kind: "mailbox"; name: string }
  /** `user@domain`: back to the outbound queue. */
  | { kind: "external"; address: string };

/** One alias as parsed: the line it starts on (for messages) and its values. */
interface AliasEntry {
  line: number;
  targets: AliasTarget[];
}

/** A logical line of the file: its first physical line and the continuation lines. */
interface LogicalLine {
  line: number;
  segments: { line: number; text: string }[];
}

/** What one local part expands to. */
export interface AliasExpansion {
  /** Lowercase mailbox names, for Maildir delivery. */
  mailboxes: string[];
  /** Addresses outside the local domains: forwarded, with the sender rewritten by SRS. */
  external: string[];
}

/** A parsed aliases file. Names are case-insensitive. */
export interface AliasTable {
  /** Whether `name` is a key of the file. */
  has(name: string): boolean;
  /** Every key of the file, lowercase. */
  names(): string[];
  /** Every local name an alias points at, bare or `\name`: mailboxes that exist. */
  mailboxNames(): string[];
  /** Expand `localPart` recursively; a local part that is no alias is its own mailbox. */
  expand(localPart: string): AliasExpansion;
}

/** Problems in an aliases file; the message has one `file:line: what is wrong` per line. */
export class AliasError extends Error {
  /** Each problem, as `file:line: what is wrong`. */
  readonly problems: readonly string[];

  constructor(problems: string[], options?: ErrorOptions) {
    super(problems.join("\n"), options);
    this.name = "AliasError";
    this.problems = problems;
  }
}

/** Read and parse the aliases file `file`. */
export async function loadAliases(file: string): Promise<AliasTable> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === undefined) throw error;
    throw new AliasError([`${file}: cannot read (${code})`], { cause: error });
  }
  return parseAliases(text, file);
}

/**
 * Parse aliases(5) text; `file` names it in messages. Every problem is collected, so one
 * AliasError lists all the lines to fix.
 */
export function parseAliases(text: string, file: string): AliasTable {
  const problems: { line: number; what: string }[] = [];
  const report = (line: number, what: string) => problems.push({ line, what });
  const entries = new Map<string, AliasEntry>();

  for (const { line, segments } of logicalLines(text, report)) {
    const first = segments[0]!;
    const colon = first.text.indexOf(":");
    if (colon < 0) {
      report(line, 'expected "name: value, ..."');
      continue;
    }
    const name = first.text.slice(0, colon).trim();
    const key = name.toLowerCase();
    const entry: AliasEntry = { line, targets: [] };
    if (!LOCAL_NAME.test(name)) report(line, `invalid alias name "${name}"`);
    else if (entries.has(key)) report(line, `duplicate alias "${key}" (first defined at line ${entries.get(key)!.line})`);
    else entries.set(key, entry);

    // Values are checked even when the name is wrong, so that one pass reports everything.
    let empty = true;
    for (const segment of [{ line, text: first.text.slice(colon + 1) }, ...segments.slice(1)]) {
      const list = splitList(segment.text);
      if (list !== null && list.length === 0) continue;
      empty = false;
      if (list === null) {
        report(segment.line, "unterminated quote");
        continue;
      }
      for (const value of list) {
        const target = parseTarget(value);
        if ("problem" in target) report(segment.line, target.problem);
        else entry.targets.push(target);
      }
    }
    if (empty) report(line, `alias "${key}" has no recipients`);
  }

  if (problems.length > 0) {
    problems.sort((a, b) => a.line - b.line);
    throw new AliasError(problems.map((p) => `${file}:${p.line}: ${p.what}`));
  }

  // Expand every alias once, so that a chain nested too deep is a load error, not a delivery error.
  const table = new ParsedAliases(file, entries);
  const tooDeep = new Set<string>();
  for (const name of entries.keys()) {
    try {
      table.expand(name);
    } catch (error) {
      if (!(error instanceof AliasError)) throw error;
      for (const problem of error.problems) tooDeep.add(problem);
    }
  }
  if (tooDeep.size > 0) throw new AliasError([...tooDeep]);
  return table;
}

/** Group physical lines into logical lines: a line starting with whitespace continues the one before. */
function logicalLines(text: string, report: (line: number, what: string) => void): LogicalLine[] {
  const logical: LogicalLine[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    const trimmed = raw.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    if (!/^\s/.test(raw)) logical.push({ line, segments: [{ line, text: raw }] });
    else if (logical.length > 0) logical.at(-1)!.segments.push({ line, text: trimmed });
    else report(line, "continuation line (starts with whitespace) without an alias before it");
  });
  return logical;
}

/** Split a comma-separated list, keeping commas inside quotes; null when a quote is not closed. */
function splitList(text: string): string[] | null {
  const values: string[] = [];
  let current = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted && c === "\\" && i + 1 < text.length) {
      current += c + text[++i];
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (c === "," && !quoted) {
      values.push(current);
      current = "";
    } else {
      current += c;
    }
  }
  if (quoted) return null;
  values.push(current);
  // Empty items (a trailing comma before a continuation line) are tolerated, as sendmail does.
  return values.map((v) => v.trim()).filter((v) => v !== "");
}

/** Classify one alias value, or say why it is refused. */
function parseTarget(value: string): AliasTarget | { problem: string } {
  // sendmail files quote whole values, e.g. "|/usr/bin/procmail -a x": look inside the quotes too.
  const plain = /^"(.*)"$/s.exec(value)?.[1] ?? value;
  if (plain.startsWith("|")) return { problem: `command delivery ${value} is refused: homerelay never runs commands` };
  if (plain.startsWith("/")) return { problem: `file delivery ${value} is refused: homerelay delivers only to Maildir mailboxes` };
  if (/^:include:/i.test(plain)) return { problem: `${value} is refused: list the addresses in the aliases file itself` };
  if (value.startsWith("\\")) {
    const name = value.slice(1);
    return LOCAL_NAME.test(name) ? { kind: "mailbox", name: name.toLowerCase() } : { problem: `invalid mailbox name "${value}"` };
  }
  const at = value.lastIndexOf("@");
  if (at >= 0) {
    const local = value.slice(0, at);
    const domain = value.slice(at + 1);
    const valid = (LOCAL_NAME.test(local) || QUOTED_LOCAL.test(local)) && DOMAIN.test(domain);
    return valid ? { kind: "external", address: `${local}@${domain.toLowerCase()}` } : { problem: `invalid address "${value}"` };
  }
  return LOCAL_NAME.test(plain) ? { kind: "local", name: plain.toLowerCase() } : { problem: `invalid local name "${value}"` };
}

/** The table parseAliases returns. */
class ParsedAliases implements AliasTable {
  constructor(
    private readonly file: string,
    private readonly entries: ReadonlyMap<string, AliasEntry>,
  ) {}

  has(name: string): boolean {
    return this.entries.has(name.toLowerCase());
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  mailboxNames(): string[] {
    const names = new Set<string>();
    for (const entry of this.entries.values()) {
      for (const target of entry.targets) if (target.kind !== "external") names.add(target.name);
    }
    return [...names];
  }

  expand(localPart: string): AliasExpansion {
    const mailboxes = new Set<string>();
    const external = new Set<string>();
    const path: string[] = [];
    const expanded = new Set<string>();
    const visit = (name: string): void => {
      const entry = this.entries.get(name);
      // Not an alias, or a loop back to an alias being expanded: deliver to the mailbox of that
      // name, as sendmail does for `alice: alice, bob@example.org`.
      if (entry === undefined || path.includes(name)) {
        mailboxes.add(name);
        return;
      }
      if (expanded.has(name)) return; // reached again through another list: already delivered
      if (path.length === MAX_DEPTH) {
        throw new AliasError([`${this.file}:${entry.line}: alias "${name}" is nested more than ${MAX_DEPTH} levels deep`]);
      }
      path.push(name);
      for (const target of entry.targets) {
        if (target.kind === "external") external.add(target.address);
        else if (target.kind === "mailbox") mailboxes.add(target.name);
        else visit(target.name);
      }
      path.pop();
      expanded.add(name);
    };
    visit(localPart.toLowerCase());
    return { mailboxes: [...mailboxes], external: [...external] };
  }
}
