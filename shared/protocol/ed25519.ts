/**
 * ed25519 — one small signer/verifier interface for the protocol's Ed25519 signatures, with two
 * implementations: `node:crypto` (OpenSSL, fast; Node and Lambda) and `tweetnacl` (portable, for
 * runtimes without node:crypto: browsers, Deno, Workers). Both reproduce RFC 9421's test vector.
 */
import nacl from "tweetnacl";

/** Sign and verify with Ed25519 keys given as raw bytes (32-byte seed, 32-byte public key). */
export interface Ed25519 {
  readonly name: "node:crypto" | "tweetnacl";
  sign(message: Uint8Array, seed: Uint8Array): Promise<Uint8Array>;
  verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): Promise<boolean>;
}

// DER prefixes that wrap raw Ed25519 keys as PKCS#8 (private) and SPKI (public), RFC 8410.
const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

/** Ed25519 from tweetnacl: pure JavaScript, runs anywhere. */
export const tweetnaclEd25519: Ed25519 = {
  name: "tweetnacl",
  async sign(message, seed) {
    return nacl.sign.detached(message, nacl.sign.keyPair.fromSeed(seed).secretKey);
  },
  async verify(message, signature, publicKey) {
    return signature.length === 64 && publicKey.length === 32 && nacl.sign.detached.verify(message, signature, publicKey);
  },
};

/** Ed25519 from node:crypto, with key objects cached per key (parsing a key costs more than verifying), verifying off the event loop. */
export async function nodeCryptoEd25519(): Promise<Ed25519> {
  const crypto = await import("node:crypto");
  const privateKeys = new Map<string, import("node:crypto").KeyObject>();
  const publicKeys = new Map<string, import("node:crypto").KeyObject>();
  const keyOf = (cache: Map<string, import("node:crypto").KeyObject>, raw: Uint8Array, make: (der: Buffer) => import("node:crypto").KeyObject) => {
    const id = Buffer.from(raw).toString("base64");
    let key = cache.get(id);
    if (!key) {
      if (cache.size > 1000) cache.clear();
      key = make(Buffer.from(raw));
      cache.set(id, key);
    }
    return key;
  };
  return {
    name: "node:crypto",
    async sign(message, seed) {
      const key = keyOf(privateKeys, seed, (s) => crypto.createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, s]), format: "der", type: "pkcs8" }));
      return new Uint8Array(crypto.sign(null, message, key));
    },
    async verify(message, signature, publicKey) {
      if (signature.length !== 64 || publicKey.length !== 32) return false;
      const key = keyOf(publicKeys, publicKey, (p) => crypto.createPublicKey({ key: Buffer.concat([SPKI_PREFIX, p]), format: "der", type: "spki" }));
      // The callback form verifies on libuv's thread pool, so the event loop goes on with other
      // requests meanwhile: the check is most of a busy relay's CPU, and a host has more than one core.
      return new Promise((resolve, reject) => crypto.verify(null, message, key, signature, (err, ok) => (err ? reject(err) : resolve(ok))));
    },
  };
}

/** The best implementation this runtime has: node:crypto where it exists, else tweetnacl. */
export async function defaultEd25519(): Promise<Ed25519> {
  try {
    return await nodeCryptoEd25519();
  } catch {
    return tweetnaclEd25519;
  }
}

/** The raw 32-byte seed of a PKCS#8 PEM Ed25519 private key (as written by `homerelay keygen`). */
export function seedFromPkcs8Pem(pem: string): Uint8Array {
  const b64 = pem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, "").replace(/\s+/g, "");
  const der = Buffer.from(b64, "base64");
  if (der.length !== 48 || !der.subarray(0, 16).equals(PKCS8_PREFIX)) throw new Error("not an Ed25519 private key in PKCS#8 PEM form");
  return new Uint8Array(der.subarray(16));
}

/** PKCS#8 PEM of a raw Ed25519 seed. */
export function pkcs8PemFromSeed(seed: Uint8Array): string {
  const b64 = Buffer.concat([PKCS8_PREFIX, Buffer.from(seed)]).toString("base64");
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`;
}

/** The raw public key of a seed. */
export function publicKeyFromSeed(seed: Uint8Array): Uint8Array {
  return nacl.sign.keyPair.fromSeed(seed).publicKey;
}
