/**
 * config-file — read a YAML configuration file and validate it against a zod schema.
 * Every problem is reported as `file:line:column: key.path: what was expected`, so an
 * administrator can jump straight to the line; the caller refuses to start (EX_CONFIG).
 */
import { readFileSync } from "node:fs";
import { LineCounter, parseDocument, isAlias, isMap, isPair, isScalar, visit, type Document, type Node } from "yaml";
import type { z } from "zod";

/** sysexits(3) EX_CONFIG: the exit status of a program that refuses a bad configuration. */
export const EX_CONFIG = 78;

/** One problem in a configuration file, with the place it was found. */
export interface ConfigProblem {
  file: string;
  line: number;
  column: number;
  /** Dotted key path, e.g. `listeners.0.listen`; empty for the document itself. */
  path: string;
  message: string;
}

/** A configuration that cannot be used; `problems` lists every error found, not just the first. */
export class ConfigError extends Error {
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "ConfigError";
  }
}

/** `file:line:column: path: message`, the way compilers print errors. */
export function formatProblem(p: ConfigProblem): string {
  const where = p.path ? `${p.path}: ` : "";
  return `${p.file}:${p.line}:${p.column}: ${where}${p.message}`;
}

/**
 * Parse YAML text and validate it with `schema`. `file` is only used in messages.
 * Throws ConfigError listing every syntax and schema problem.
 */
export function parseConfigText<S extends z.ZodType>(text: string, file: string, schema: S): z.output<S> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number) => {
    const pos = lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col };
  };
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => ({ file, ...at(e.pos[0]), path: "", message: e.message.split("\n")[0] ?? e.message })));
  }
  // A mapping, list or binary data as a key: no configuration key is one (and yaml would print a warning of its own).
  const objectKeys: ConfigProblem[] = [];
  visit(doc, {
    Pair(_, pair) {
      const key = isAlias(pair.key) ? pair.key.resolve(doc) : pair.key;
      if (key === null || key === undefined || (isScalar(key) && (key.value === null || typeof key.value !== "object"))) return;
      const range = (pair.key as Node).range;
      objectKeys.push({ file, ...at(range?.[0] ?? 0), path: "", message: "a key must be plain text or a number, not a mapping, a list or binary data" });
    },
  });
  if (objectKeys.length > 0) throw new ConfigError(objectKeys);
  // An empty file means "all defaults", like an empty main.cf.
  let value: unknown;
  try {
    value = doc.contents === null ? {} : doc.toJS();
  } catch (err) {
    // An alias without its anchor, or so many aliases that expanding them would eat the memory ("billion laughs").
    let alias: { range?: [number, number, number] | null } | undefined;
    visit(doc, {
      Alias(_, node) {
        alias = node;
        return visit.BREAK;
      },
    });
    throw new ConfigError([{ file, ...at(alias?.range?.[0] ?? 0), path: "", message: `YAML aliases: ${(err as Error).message}` }]);
  }
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const problems: ConfigProblem[] = [];
  for (const issue of result.error.issues) {
    const path = issue.path.map(String);
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        const node = keyNode(doc, [...path], key);
        problems.push({ file, ...at(node?.range?.[0] ?? 0), path: shownPath([...path, key]), message: "unknown key" });
      }
      continue;
    }
    const node = valueNode(doc, path);
    problems.push({ file, ...at(node?.range?.[0] ?? 0), path: shownPath(path), message: issue.message });
  }
  throw new ConfigError(problems);
}

/**
 * A key path as a problem shows it: keys are the file's text, so one with control characters,
 * spaces or dots is quoted, and the problem stays on one line and reads unambiguously.
 */
function shownPath(keys: string[]): string {
  return keys.map((key) => (/^[\x21-\x7e]+$/.test(key) && !key.includes(".") ? key : JSON.stringify(key))).join(".");
}

/** Read and validate a configuration file; unreadable files are a ConfigError too. */
export function loadConfigFile<S extends z.ZodType>(file: string, schema: S): z.output<S> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new ConfigError([{ file, line: 0, column: 0, path: "", message: `cannot read configuration (${code})` }]);
  }
  return parseConfigText(text, file, schema);
}

/** The deepest node that exists along `path` (a missing key points at its parent). */
function valueNode(doc: Document, path: string[]): Node | undefined {
  for (let depth = path.length; depth >= 0; depth--) {
    const node = doc.getIn(path.slice(0, depth).map(indexOrKey), true);
    if (node && typeof node === "object" && "range" in node) return node as Node;
  }
  return doc.contents ?? undefined;
}

/** The key node of `key` inside the mapping at `path`, for "unknown key" errors. */
function keyNode(doc: Document, path: string[], key: string): Node | undefined {
  const map = path.length === 0 ? doc.contents : doc.getIn(path.map(indexOrKey), true);
  if (isMap(map)) {
    for (const item of map.items) {
      if (isPair(item) && isScalar(item.key) && String(item.key.value) === key) return item.key;
    }
  }
  return valueNode(doc, path);
}

function indexOrKey(segment: string): string | number {
  return /^\d+$/.test(segment) ? Number(segment) : segment;
}
