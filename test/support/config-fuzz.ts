/**
 * config-fuzz — fast-check arbitraries for configuration files an administrator might get wrong:
 * a working agent configuration with values replaced, keys dropped or added at any depth, then
 * written as YAML and perhaps damaged as text (cut, spliced, tabs, stray quotes, anchors, aliases,
 * tags, merge keys, several documents, deep nesting, a byte-order mark).
 */
import fc from "fast-check";
import { stringify } from "yaml";

/** A configuration that loads: every section of the schema, with typical values. */
export const WORKING_CONFIG = {
  hostname: "home.example.net",
  spool: "./var/spool",
  mailboxes: "./var/mail",
  listeners: [
    { role: "submission", listen: "127.0.0.1:2525", tls: "starttls" },
    { role: "mx", listen: "0.0.0.0:25", greetingDelay: 100 },
  ],
  trustedNetworks: ["127.0.0.0/8", "::1/128"],
  localDomains: ["home.example.net"],
  users: { alice: { cramMd5Secret: "secret", senders: ["alice@home.example.net"] } },
  limits: { messageSize: 10485760, recipients: 100, lineLength: 998, idleTimeout: 300, dataTimeout: 600, queueMinFree: 20000000, hopCount: 50 },
  intakeProcesses: 1,
  dns: { servers: ["127.0.0.1:53"], timeout: 5 },
  delivery: { mxPort: 25, addressPreference: "ipv4", destinationConcurrency: 20, concurrency: 100, tlsPolicy: "may", tlsPolicies: { "bank.example": "verify" } },
  queue: { minBackoff: 300, maxBackoff: 4000, lifetime: 432000, delayWarning: 14400, scanInterval: 60, notifyPostmaster: true },
  smarthosts: { isp: { host: "mail.isp.example", port: 587, tls: "starttls", verify: true, auth: { user: "me", password: "pw", mechanism: "PLAIN" } } },
  routes: [
    { match: "aol.com", route: "smarthost:isp" },
    { match: "*", route: "mx", fallback: ["smarthost:isp"] },
  ],
  log: { format: "text", level: "info" },
};

/** Values of every YAML-visible kind, the edge cases of each included. */
const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.constantFrom(null, true, false, 0, -1, 1, 0.5, 1e300, -1e300, 2 ** 31, 2 ** 53, Number.MAX_SAFE_INTEGER + 2, "", " ", "*", "mx", "cloud", "smarthost:", "smarthost:nope", "127.0.0.1:0", "[::1]:25", "0.0.0.0", "999.0.0.1:25", "::/0", "10.0.0.0/33", "localhost", "-", "~", "null", "yes", "no", "0x1F", "1e3", ".inf", "-.inf", ".nan"),
    fc.string({ maxLength: 30 }),
    fc.integer(),
    fc.double(),
  ),
  node: fc.oneof({ depthSize: "small", withCrossShrink: true }, tie("leaf"), fc.array(tie("node"), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 10 }), tie("node"), { maxKeys: 3 })),
})).node;

/** One change at a path of the working configuration. */
type Change = { path: number[]; action: "set"; to: unknown } | { path: number[]; action: "drop" } | { path: number[]; action: "add"; key: string; to: unknown };

const change: fc.Arbitrary<Change> = fc.oneof(
  fc.record({ path: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), action: fc.constant("set" as const), to: value }),
  fc.record({ path: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), action: fc.constant("drop" as const) }),
  fc.record({ path: fc.array(fc.nat(), { maxLength: 3 }), action: fc.constant("add" as const), key: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom("__proto__", "constructor", "toString", "hasOwnProperty", "<<")), to: value }),
);

/** `config` with `c` made: each number in the path picks the n-th key (or element) at that depth, modulo their count. */
function applyChange(config: unknown, c: Change, depth = 0): unknown {
  const container = config !== null && typeof config === "object";
  const atEnd = depth === c.path.length - (c.action === "add" ? 0 : 1);
  if (c.action === "add" && (atEnd || !container)) {
    if (!container || Array.isArray(config)) return config;
    return { ...(config as object), [c.key]: c.to };
  }
  if (!container) return config;
  const keys = Object.keys(config as object);
  if (keys.length === 0) return config;
  const key = keys[c.path[depth]! % keys.length]!;
  const copy: Record<string, unknown> = Array.isArray(config) ? ([...config] as unknown as Record<string, unknown>) : { ...(config as Record<string, unknown>) };
  if (atEnd && c.action === "drop") {
    if (Array.isArray(copy)) (copy as unknown as unknown[]).splice(Number(key), 1);
    else delete copy[key];
  } else if (atEnd && c.action === "set") copy[key] = c.to;
  else copy[key] = applyChange(copy[key], c, depth + 1);
  return copy;
}

/** Text damage of the kinds hand edits and copy-paste do. */
const damage = fc.oneof(
  fc.record({ at: fc.nat(), cut: fc.nat(40), insert: fc.constantFrom("", "\t", ":", " : ", "- ", "'", '"', "{", "}", "[", "]", "&a ", "*a", "!!binary ", "!!set ", "!!int ", "!!timestamp ", "!!omap ", "!ruby/object ", "? ", "|", ">", "#", "\n", "\n---\n", "\r", "\0", "\uFEFF", "<<: *a\n", "%YAML 1.1\n", "\\", "@", "`") }),
  fc.record({ at: fc.nat(), cut: fc.constant(0), insert: fc.string({ maxLength: 20 }) }),
);

/** Agent configuration files: the working one changed, written as YAML, perhaps damaged as text. */
export const configText: fc.Arbitrary<string> = fc
  .tuple(fc.array(change, { maxLength: 4 }), fc.array(damage, { maxLength: 3 }), fc.constantFrom("", "", "", "anchors"))
  .map(([changes, damages, anchors]) => {
    let text = stringify(changes.reduce<unknown>((c, ch) => applyChange(c, ch), WORKING_CONFIG));
    if (anchors) text = `defaults: &a { timeout: 5 }\n${text}dnsCopy: *a\n`;
    for (const d of damages) {
      const at = d.at % (text.length + 1);
      text = text.slice(0, at) + d.insert + text.slice(at + d.cut);
    }
    return text;
  });

/** A YAML document a few kilobytes long whose aliases expand to millions of nodes ("billion laughs"). */
export function aliasBomb(): string {
  const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
  for (const [prev, next] of [["a", "b"], ["b", "c"], ["c", "d"], ["d", "e"], ["e", "f"], ["f", "g"]]) lines.push(`${next}: &${next} [${Array(9).fill(`*${prev}`).join(",")}]`);
  return `${lines.join("\n")}\n`;
}
