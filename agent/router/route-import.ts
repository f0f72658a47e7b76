/**
 * route-import — `homerelay routes import`: converts the routing tables of other MTAs (sendmail's
 * mailertable, qmail's control/smtproutes, Postfix's transport(5)) into the `smarthosts:` and
 * `routes:` sections of homerelay's configuration, and prints them as YAML to paste in.
 *
 * Each source keeps its own semantics: `[host]` (sendmail, Postfix) is a fixed relay, a bare host is
 * an MX lookup of that host (imported as a fixed relay, with a note), a qmail relay is always fixed,
 * an empty relay or nexthop is delivery by MX. Relays become smarthosts named after host and port;
 * port 465 means TLS from the first byte, any other port STARTTLS. Routes keep the order of the file:
 * like the three programs, homerelay's router picks the most specific entry whatever the order.
 */
import { isIP } from "node:net";
import { Document, isMap, isSeq, stringify } from "yaml";

/** The table formats `importRoutes` reads. */
export type RouteFormat = "mailertable" | "smtproutes" | "transport";

/** A smarthost derived from a relay host of the source table (auth has to be added by hand). */
export interface ImportedSmarthost {
  host: string;
  port: number;
  tls: "starttls" | "implicit" | "none";
}

/** One entry of `routes:` — `match` is `domain`, `.domain` (subdomains) or `*`. */
export interface ImportedRoute {
  match: string;
  /** `mx`, `smarthost:<name>`, `local`, `hold` or `reject`. */
  route: string;
  /** Further relays to try in turn (Postfix nexthop lists, sendmail `host1:host2`). */
  fallback?: string[];
  /** The bounce text of a `reject` route. */
  text?: string;
}

/** The result of an import: configuration sections plus where they came from and what to check. */
export interface ImportedRoutes {
  /** The file and format read, for the header of `routesToYaml`. */
  source: { file: string; format: RouteFormat };
  smarthosts: Record<string, ImportedSmarthost>;
  routes: ImportedRoute[];
  /** Conversions that changed meaning slightly, as `file:line: what changed`. */
  notes: string[];
}

/** Lines of a routing table that cannot be converted; `problems` has one `file:line: what is wrong` each. */
export class RouteImportError extends Error {
  /** Each unreadable line, as `file:line: what is wrong`. */
  readonly problems: string[];

  constructor(problems: string[]) {
    super(problems.join("\n"));
    this.name = "RouteImportError";
    this.problems = problems;
  }
}

/** A relay host as written in the table. */
interface Hop {
  host: string;
  port: number;
  /** True when the source MTA would look up the MX records of `host` (no brackets). */
  mxLookup: boolean;
}

/** What one table entry does with the mail it matches. */
type Target =
  | { kind: "mx" }
  | { kind: "local"; user: string }
  | { kind: "hold"; why: string }
  | { kind: "reject"; text: string }
  | { kind: "relay"; hops: Hop[] };

/** A line's result: a target, or the reason it cannot be converted. */
type Parsed = Target | { kind: "problem"; message: string };

/** An entry's `match` (`domain`, `.domain` or `*`) and the line it was read from. */
interface Match {
  pattern: string;
  line: number;
}

const PROGRAM: Record<RouteFormat, string> = { mailertable: "sendmail", smtproutes: "qmail", transport: "Postfix" };
const TITLE: Record<RouteFormat, string> = {
  mailertable: "sendmail mailertable",
  smtproutes: "qmail smtproutes",
  transport: "Postfix transport(5) table",
};

/** The `match` syntax of the configuration schema: `*`, `domain` or `.domain`. */
const MATCH = /^(\*|\.?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$/;
const HOSTNAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
/** Longest bounce text the configuration accepts. */
const MAX_TEXT = 200;
const SMTP_PORT = 25;
const IMPLICIT_TLS_PORT = 465;
/** Service names Postfix accepts instead of a port number (from /etc/services). */
const SERVICES: Record<string, number> = { smtp: 25, submission: 587, submissions: 465, smtps: 465 };
/** sendmail's error mailer statuses (sysexits names) that leave mail queued instead of bouncing it. */
const TRANSIENT_EXITS = new Set(["tempfail", "oserr", "ioerr"]);
const EXIT_NAMES = new Set([
  "usage", "dataerr", "noinput", "nouser", "nohost", "unavailable", "software",
  "oserr", "osfile", "cantcreat", "ioerr", "tempfail", "protocol", "noperm", "config",
]);
const SENDMAIL_SMTP_MAILERS = new Set(["smtp", "esmtp", "smtp8", "dsmtp", "relay"]);

/** One entry of a table: the line it starts on, its key and its value. */
interface Entry {
  line: number;
  key: string;
  value: string;
}

/** How each format is split into entries, and how a value is read (`domain`: the entry's match). */
const READERS: Record<RouteFormat, { entries(text: string, table: TableBuilder): Entry[]; parse(value: string, domain: string): Parsed }> = {
  mailertable: { entries: sendmailEntries, parse: parseMailertable },
  smtproutes: { entries: qmailEntries, parse: parseSmtproute },
  transport: { entries: postfixEntries, parse: parseTransport },
};

/**
 * Convert the routing table `text` in `format` into smarthosts and routes. `file` names the source
 * in messages and in the YAML header. Throws RouteImportError listing every line that cannot be
 * converted (not just the first).
 */
export function importRoutes(text: string, format: RouteFormat, file: string): ImportedRoutes {
  const table = new TableBuilder(file, format);
  const { entries, parse } = READERS[format];
  for (const { line, key, value } of entries(text, table)) {
    const match = parseKey(key, format);
    const target = parse(value, match ?? "");
    if (match === null) table.problem(line, keyProblem(key, format));
    if (target.kind === "problem") table.problem(line, target.message);
    if (match !== null && target.kind !== "problem") table.add({ pattern: match, line }, target);
  }
  return table.finish();
}

/** The YAML to paste into the configuration: a header comment naming the source, then the sections. */
export function routesToYaml(r: ImportedRoutes): string {
  const doc = new Document({ smarthosts: r.smarthosts, routes: r.routes });
  // One line per smarthost and per route, as in the README's examples.
  const smarthosts = doc.get("smarthosts", true);
  if (isMap(smarthosts)) for (const pair of smarthosts.items) if (isMap(pair.value)) pair.value.flow = true;
  const routes = doc.get("routes", true);
  if (isSeq(routes)) for (const item of routes.items) if (isMap(item)) item.flow = true;
  doc.commentBefore = [
    ` homerelay routes imported from ${r.source.file} (${TITLE[r.source.format]}).`,
    " Merge these into the smarthosts: and routes: of the configuration. Smarthosts are assumed",
    " to offer STARTTLS (implicit TLS on port 465): set tls: none for one that does not, and add",
    " auth: { user: ..., passwordFile: ... } to one that wants a login.",
    ...(r.notes.length > 0 ? [" Notes:", ...r.notes.map((n) => `   ${n}`)] : []),
  ].join("\n");
  return stringify(doc, { lineWidth: 0 });
}


/** sendmail makemap input: `key value`, `#` comments and blank lines; `.` is the default entry. */
function sendmailEntries(text: string, table: TableBuilder): Entry[] {
  const entries: Entry[] = [];
  lines(text).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const m = /^(\S+)\s*(.*)$/.exec(line)!;
    if (m[2] === "") table.problem(i + 1, `no value for ${m[1]}: expected mailer:host, e.g. esmtp:[mail.isp.example]`);
    else entries.push({ line: i + 1, key: m[1]!, value: m[2]! });
  });
  return entries;
}

/** qmail control file: `domain:relay[:port]` without spaces; `#` comments; trailing blanks ignored. */
function qmailEntries(text: string, table: TableBuilder): Entry[] {
  const entries: Entry[] = [];
  lines(text).forEach((raw, i) => {
    const line = raw.replace(/[ \t\r]+$/, "");
    if (line === "" || line.startsWith("#")) return;
    const colon = line.indexOf(":");
    if (/\s/.test(line)) table.problem(i + 1, "spaces are not allowed: qmail reads domain:relay[:port] as written");
    else if (colon < 0) table.problem(i + 1, "expected domain:relay[:port], domain: or :relay");
    else entries.push({ line: i + 1, key: line.slice(0, colon), value: line.slice(colon + 1) });
  });
  return entries;
}

/** postmap(1) input: `pattern result`; a line starting with whitespace continues the entry above. */
function postfixEntries(text: string, table: TableBuilder): Entry[] {
  const logical: { line: number; text: string }[] = [];
  lines(text).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const last = logical.at(-1);
    if (!/^\s/.test(raw)) logical.push({ line: i + 1, text: line });
    else if (last) last.text += ` ${line}`;
    else table.problem(i + 1, "a continuation line (starting with whitespace) with no entry above it");
  });
  const entries: Entry[] = [];
  for (const { line, text: t } of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(t)!;
    if (m[2] === "") table.problem(line, `no result for ${m[1]}: expected transport:nexthop, e.g. smtp:[mail.isp.example]:587`);
    else entries.push({ line, key: m[1]!, value: m[2]! });
  }
  return entries;
}

function lines(text: string): string[] {
  return text.split(/\r?\n/);
}

/** The `match` of a table key, lowercase; null when it is none. */
function parseKey(key: string, format: RouteFormat): string | null {
  if (format === "smtproutes" && key === "") return "*";
  if (format === "mailertable" && key === ".") return "*";
  if (format === "transport" && key === "*") return "*";
  return key !== "*" && MATCH.test(key) ? key.toLowerCase() : null;
}

/** Why `key` is no table key of `format`. */
function keyProblem(key: string, format: RouteFormat): string {
  if (format === "transport" && key.includes("@")) return `"${key}": address patterns cannot be converted, homerelay routes by domain`;
  const others = { mailertable: ", .domain or . (everything else)", smtproutes: " or .domain (empty for everything else)", transport: ", .domain or *" };
  return `"${key}" is not a domain${others[format]}`;
}

/** sendmail `mailer:host` — SMTP mailers, `local:[user]` and `error:...`. */
function parseMailertable(value: string, domain: string): Parsed {
  const m = /^([^:\s]+):(.*)$/.exec(value);
  if (!m) return problem(`"${value}" is not mailer:host, e.g. esmtp:[mail.isp.example]`);
  const mailer = m[1]!.toLowerCase();
  const rest = m[2]!;
  if (mailer === "error") return sendmailError(rest);
  if (mailer === "local") {
    if (/\s/.test(rest)) return problem(`"${value}": local:user takes one user name`);
    return { kind: "local", user: rest };
  }
  if (!SENDMAIL_SMTP_MAILERS.has(mailer)) {
    return problem(`mailer "${m[1]}" cannot be converted: homerelay delivers by SMTP (smtp, esmtp, smtp8, dsmtp, relay), locally (local) or refuses (error)`);
  }
  if (rest === "") return problem(`no host after ${m[1]}:`);
  if (/\s/.test(rest)) return problem(`"${rest}" contains spaces: expected a host such as [mail.isp.example]`);
  if (rest.includes("%")) return problem(`"${rest}": %1 substitution (a host per subdomain) cannot be converted`);
  if (rest.includes("@")) return problem(`"${rest}": user@host (rewriting the recipient) cannot be converted`);
  // `host1:host2` is a list of hosts to try; a number after a host is its port (not sendmail, but written).
  const hops: Hop[] = [];
  let portSet = false;
  for (const part of rest.split(":")) {
    const last = hops.at(-1);
    if (/^\d+$/.test(part) && last && !portSet) {
      const port = Number(part);
      if (port < 1 || port > 65535) return problem(`port ${part} is out of range`);
      last.port = port;
      portSet = true;
      continue;
    }
    const hop = parseHost(part);
    if (!hop) return problem(`"${part}" is not a host: expected host, [host] or [host]:port`);
    hops.push(hop);
    portSet = false;
  }
  return relayOrMx(hops, domain);
}

/** sendmail `error:D.S.N:code text`, `error:code text` or `error:<sysexits name> [code] text`. */
function sendmailError(rest: string): Parsed {
  let status: string | undefined;
  let code: string | undefined;
  let exit: string | undefined;
  let text = rest.trim();
  const withStatus = /^(\d\.\d{1,3}\.\d{1,3}):(\d{3})(?:\s+(.*))?$/.exec(text);
  const withCode = /^(\d{3})(?:\s+(.*))?$/.exec(text);
  const withExit = /^([a-z]+)(?:\s+(.*))?$/i.exec(text);
  if (withStatus) [, status, code, text = ""] = withStatus;
  else if (withCode) [, code, text = ""] = withCode;
  else if (withExit && EXIT_NAMES.has(withExit[1]!.toLowerCase())) {
    exit = withExit[1]!.toLowerCase();
    text = withExit[2] ?? "";
    const inner = /^(\d{3})(?:\s+(.*))?$/.exec(text);
    if (inner) [, code, text = ""] = inner;
  } else {
    return problem(`"error:${rest}": expected error:D.S.N:code text, error:code text or error:<sysexits name> text`);
  }
  if (code !== undefined && !/^[45]/.test(code)) return problem(`reply code ${code} is not an error (4xx or 5xx)`);
  if (status !== undefined && status[0] !== code![0]) return problem(`status ${status} and reply code ${code} disagree`);
  const transient = code !== undefined ? code.startsWith("4") : TRANSIENT_EXITS.has(exit!);
  if (transient) return { kind: "hold", why: `a temporary error in ${PROGRAM.mailertable} (mail stays queued)` };
  return rejectWith(text);
}

/** qmail `relay[:port]`, or empty for delivery by MX. The relay is never looked up by MX. */
function parseSmtproute(value: string): Parsed {
  if (value === "") return { kind: "mx" };
  const colon = value.indexOf(":");
  const hop = parseHost(colon < 0 ? value : value.slice(0, colon));
  if (!hop) return problem(`"${value}" is not relay[:port]`);
  if (colon >= 0) {
    const portText = value.slice(colon + 1);
    const port = parsePort(portText, false);
    if (port === null) return problem(portText === "" ? `no port after "${value}"` : `"${portText}" is not a port number`);
    hop.port = port;
  }
  return { kind: "relay", hops: [{ ...hop, mxLookup: false }] };
}

/** Postfix `transport:nexthop`: smtp/relay (or empty: the default transport), local, error, retry. */
function parseTransport(value: string, domain: string): Parsed {
  const colon = value.indexOf(":");
  if (colon < 0) return problem(`"${value}" is not transport:nexthop, e.g. smtp:[mail.isp.example]:587`);
  const transport = value.slice(0, colon).toLowerCase();
  const nexthop = value.slice(colon + 1).trim();
  switch (transport) {
    case "":
    case "smtp":
    case "relay": {
      // A null nexthop is the recipient domain (by MX); ":" alone means "as if there were no table".
      if (nexthop === "") return { kind: "mx" };
      const hops: Hop[] = [];
      for (const destination of nexthop.split(/[\s,]+/).filter((d) => d !== "")) {
        const hop = parsePostfixDestination(destination);
        if (typeof hop === "string") return problem(hop);
        hops.push(hop);
      }
      return relayOrMx(hops, domain);
    }
    case "local":
      // The nexthop of local(8) is a host name, not a user.
      return { kind: "local", user: "" };
    case "error":
      // error(8): the nexthop is the reason, optionally after an RFC 3463 status.
      return rejectWith(nexthop.replace(/^[45]\.\d{1,3}\.\d{1,3}(\s+|$)/, ""));
    case "retry":
      return { kind: "hold", why: "the retry transport (mail stays queued)" };
    case "lmtp":
      return problem("lmtp: delivery to an LMTP server is not supported by homerelay");
    case "discard":
      return problem("discard: homerelay has no route that throws mail away silently");
    default:
      return problem(`transport "${value.slice(0, colon)}" is defined in master.cf, which is not read: only smtp, relay, local, error and retry can be converted`);
  }
}

/** One Postfix SMTP destination: `[host]`, `[host]:port`, `host` or `host:port` (port may be a service name). */
function parsePostfixDestination(destination: string): Hop | string {
  const m = /^(\[[^\]]*\]|[^:[\]]+)(?::(.*))?$/.exec(destination);
  const hop = m ? parseHost(m[1]!) : null;
  if (!m || !hop) return `"${destination}" is not a host: expected [host]:port, [host] or host`;
  if (m[2] !== undefined) {
    const port = parsePort(m[2], true);
    if (port === null) return `"${m[2]}" is not a port number or a known service (smtp, submission, submissions)`;
    hop.port = port;
  }
  return hop;
}

/** `host`, `[host]` or an IPv4 address (bracketed or not), lowercase, on port 25. */
function parseHost(text: string): Hop | null {
  const bracketed = text.startsWith("[") && text.endsWith("]");
  const host = (bracketed ? text.slice(1, -1) : text).toLowerCase();
  if (isIP(host) === 4) return { host, port: SMTP_PORT, mxLookup: false };
  if (!HOSTNAME.test(host)) return null;
  return { host, port: SMTP_PORT, mxLookup: !bracketed };
}

function parsePort(text: string, services: boolean): number | null {
  const port = /^\d{1,5}$/.test(text) ? Number(text) : services ? SERVICES[text.toLowerCase()] : undefined;
  return port !== undefined && port >= 1 && port <= 65535 ? port : null;
}

/** The relay hops, except that the MX of the matched domain itself is plain delivery by MX. */
function relayOrMx(hops: Hop[], domain: string): Target {
  const [only] = hops;
  if (hops.length === 1 && only && only.mxLookup && only.host === domain && only.port === SMTP_PORT) return { kind: "mx" };
  return { kind: "relay", hops };
}

function rejectWith(text: string): Parsed {
  const trimmed = text.trim();
  if (trimmed.length > MAX_TEXT) return problem(`the bounce text is longer than ${MAX_TEXT} characters`);
  return { kind: "reject", text: trimmed };
}

function problem(message: string): Parsed {
  return { kind: "problem", message };
}

/** Collects routes, smarthosts, notes and problems while the lines are converted. */
class TableBuilder {
  private readonly smarthosts: Record<string, ImportedSmarthost> = {};
  /** `host:port` → smarthost name, so each relay becomes one smarthost. */
  private readonly names = new Map<string, string>();
  private readonly routes: ImportedRoute[] = [];
  private readonly seen = new Map<string, number>();
  private readonly notes: string[] = [];
  private readonly problems: { line: number; message: string }[] = [];

  constructor(
    private readonly file: string,
    private readonly format: RouteFormat,
  ) {}

  problem(line: number, message: string): void {
    this.problems.push({ line, message });
  }

  add(match: Match, target: Target): void {
    const first = this.seen.get(match.pattern);
    if (first !== undefined) {
      this.problem(match.line, `${match.pattern} is already routed on line ${first}`);
      return;
    }
    this.seen.set(match.pattern, match.line);
    this.routes.push(this.route(match, target));
  }

  finish(): ImportedRoutes {
    if (this.problems.length > 0) {
      const sorted = [...this.problems].sort((a, b) => a.line - b.line);
      throw new RouteImportError(sorted.map((p) => `${this.file}:${p.line}: ${p.message}`));
    }
    return {
      source: { file: this.file, format: this.format },
      smarthosts: this.smarthosts,
      routes: this.routes,
      notes: this.notes,
    };
  }

  private note(line: number, message: string): void {
    this.notes.push(`${this.file}:${line}: ${message}`);
  }

  private route(match: Match, target: Target): ImportedRoute {
    switch (target.kind) {
      case "mx":
        return { match: match.pattern, route: "mx" };
      case "local":
        if (target.user !== "") {
          this.note(match.line, `local:${target.user} delivers every recipient to ${target.user}; homerelay's local route delivers to each recipient's own mailbox (add aliases)`);
        }
        return { match: match.pattern, route: "local" };
      case "hold":
        this.note(match.line, `${match.pattern}: imported as hold, for ${target.why}`);
        return { match: match.pattern, route: "hold" };
      case "reject":
        return target.text === "" ? { match: match.pattern, route: "reject" } : { match: match.pattern, route: "reject", text: target.text };
      case "relay": {
        const [route, ...fallback] = target.hops.map((hop) => `smarthost:${this.smarthost(match.line, hop)}`);
        return fallback.length === 0 ? { match: match.pattern, route: route! } : { match: match.pattern, route: route!, fallback };
      }
    }
  }

  /** The name of the smarthost for `hop`, creating it on first use. */
  private smarthost(line: number, hop: Hop): string {
    if (hop.mxLookup) {
      this.note(line, `${PROGRAM[this.format]} looks up the MX records of ${hop.host} (no [brackets]); homerelay connects to ${hop.host} itself`);
    }
    const key = `${hop.host}:${hop.port}`;
    const known = this.names.get(key);
    if (known !== undefined) return known;
    const base = hop.port === SMTP_PORT ? hop.host : `${hop.host}-${hop.port}`;
    let name = base;
    for (let n = 2; Object.hasOwn(this.smarthosts, name); n++) name = `${base}-${n}`;
    this.names.set(key, name);
    this.smarthosts[name] = { host: hop.host, port: hop.port, tls: hop.port === IMPLICIT_TLS_PORT ? "implicit" : "starttls" };
    return name;
  }
}
