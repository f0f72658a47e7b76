/**
 * password — the stored form of AUTH passwords: scrypt (node:crypto) in a PHC-style string,
 * `$scrypt$ln=15,r=8,p=1$<salt>$<hash>`, made by `homerelay hash-password`.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from "node:crypto";

const KEY_LENGTH = 32;

function derive(password: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, KEY_LENGTH, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function costs(ln: number, r: number, p: number): ScryptOptions {
  // scrypt needs 128 * N * r bytes; node:crypto refuses more than maxmem (32 MiB by default).
  return { N: 2 ** ln, r, p, maxmem: 256 * 2 ** ln * r };
}

/** Hash `password` for the `users.<name>.password` configuration key. */
export async function hashPassword(password: string, ln = 15, r = 8, p = 1): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, costs(ln, r, p));
  return `$scrypt$ln=${ln},r=${r},p=${p}$${salt.toString("base64url")}$${key.toString("base64url")}`;
}

/** True for a well-formed hash string (configuration validation). */
export function isPasswordHash(stored: string): boolean {
  return /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$[A-Za-z0-9_-]{16,}\$[A-Za-z0-9_-]{32,}$/.test(stored);
}

/** Check `password` against a stored hash in constant time. A malformed hash never matches. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const m = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(stored);
  if (!m) return false;
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (ln < 1 || ln > 20 || r < 1 || p < 1) return false;
  const expected = Buffer.from(m[5]!, "base64url");
  const key = await derive(password, Buffer.from(m[4]!, "base64url"), costs(ln, r, p));
  return key.length === expected.length && timingSafeEqual(key, expected);
}
