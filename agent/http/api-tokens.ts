/**
 * api-tokens — the bearer tokens of the local submission API: given in the configuration in clear,
 * as a SHA-256 hash, or in a file (made with a new random token on first start, mode 0600, so that
 * the embedded defaults work with nothing configured). Only hashes are kept in memory, and a token
 * is never written to the log. Each token may send only as its `senders` patterns.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { MailLog } from "../../shared/log.js";
import { readSecretFile, SecretFileError } from "../../shared/secret-file.js";
import type { HttpTokenConfig } from "../config.js";

/** A token the API accepts, as kept in memory. */
export interface ApiToken {
  /** The name in log lines. */
  name: string;
  /** SHA-256 of the token; the owner of the messages it submits. */
  hash: Buffer;
  senders: string[];
  nullSender: boolean;
}

/** Why a request is not authenticated: no bearer token, or one that is not accepted. */
type AuthFailure = "missing" | "invalid";

/** RFC 6750 b64token, as the configuration accepts it. */
const TOKEN_SYNTAX = /^[A-Za-z0-9._~+/-]{16,}=*$/;

/** SHA-256 of a token, as `hash: sha256:<hex>` in the configuration. */
function tokenHash(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

/** The tokens of one configuration. */
export class ApiTokens {
  private constructor(private readonly tokens: ApiToken[]) {}

  /** Read the token files (making those that do not exist yet); throws SecretFileError for an unusable one. */
  static async load(configured: HttpTokenConfig[], log: MailLog): Promise<ApiTokens> {
    const tokens: ApiToken[] = [];
    for (const t of configured) {
      const hash = t.token !== undefined ? tokenHash(t.token) : t.hash !== undefined ? Buffer.from(t.hash.slice("sha256:".length), "hex") : tokenHash(await tokenFromFile(t.file!, t.name, log));
      tokens.push({ name: t.name, hash, senders: t.senders, nullSender: t.nullSender });
    }
    return new ApiTokens(tokens);
  }

  /** The token an `Authorization` field value names, or why there is none. */
  authenticate(authorization: string | undefined): { ok: true; token: ApiToken } | { ok: false; failure: AuthFailure } {
    const m = /^Bearer +(\S+) *$/i.exec(authorization ?? "");
    if (!m) return { ok: false, failure: authorization === undefined || !/^Bearer\b/i.test(authorization) ? "missing" : "invalid" };
    const presented = tokenHash(m[1]!);
    // Compare with every token, found or not, so that the time taken says nothing about the list.
    let found: ApiToken | undefined;
    for (const t of this.tokens) if (timingSafeEqual(t.hash, presented)) found ??= t;
    return found ? { ok: true, token: found } : { ok: false, failure: "invalid" };
  }
}

/** The token kept in `file`; a missing file is made with a new token (mode 0600) and the log says where. */
async function tokenFromFile(file: string, name: string, log: MailLog): Promise<string> {
  const token = randomBytes(32).toString("base64url");
  try {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    // "wx": never replace a token that scripts may already use.
    await writeFile(file, token + "\n", { flag: "wx", mode: 0o600 });
    log.info(`made API token ${name} in ${file} (mode 0600); send it as "Authorization: Bearer <the file's content>"`);
    return token;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw new SecretFileError(`http token ${name}: cannot make ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const stored = readSecretFile(file, `http token ${name}`).trim();
  if (!TOKEN_SYNTAX.test(stored)) throw new SecretFileError(`http token ${name}: ${file} does not hold a token of at least 16 letters, digits and - . _ ~ + /`);
  return stored;
}
