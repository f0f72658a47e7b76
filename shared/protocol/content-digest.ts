/**
 * content-digest — RFC 9530 `Content-Digest` over a request body as sent: computed while the body
 * streams, compared in constant time, `sha-256` (and `sha-512` when offered) only.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { parseDictionary } from "structured-headers";

/** `sha-256=:<base64>:` of `body`. */
export function contentDigest(body: Uint8Array): string {
  return `sha-256=:${createHash("sha256").update(body).digest("base64")}:`;
}

/** The expected digest named in a `Content-Digest` field, or null if it names no algorithm we accept. */
export function expectedDigest(field: string): { algorithm: "sha256" | "sha512"; digest: Buffer } | null {
  let dict;
  try {
    dict = parseDictionary(field);
  } catch {
    return null;
  }
  for (const [key, algorithm] of [
    ["sha-256", "sha256"],
    ["sha-512", "sha512"],
  ] as const) {
    const member = dict.get(key);
    if (member && !Array.isArray(member[0]) && member[0] instanceof ArrayBuffer) return { algorithm, digest: Buffer.from(member[0]) };
  }
  return null;
}

/** An incremental digest check for a body that arrives in pieces. */
export class DigestCheck {
  private readonly hash;
  constructor(private readonly expected: { algorithm: "sha256" | "sha512"; digest: Buffer }) {
    this.hash = createHash(expected.algorithm);
  }
  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }
  /** True when the body read so far is the one the digest names. */
  matches(): boolean {
    const actual = this.hash.digest();
    return actual.length === this.expected.digest.length && timingSafeEqual(actual, this.expected.digest);
  }
}
