/**
 * agent-keys — the agents' Ed25519 public keys for the cloud's `keys:` list, read from what
 * `homerelay keygen` leaves behind: the private key file (PKCS#8 PEM), a public key file (SPKI
 * PEM), keygen's output saved to a file, or the bare base64 public key.
 */
import { createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { basename, resolve } from "node:path";
import { publicKeyFromSeed, seedFromPkcs8Pem } from "../../shared/protocol/ed25519.js";

/** One agent's key as the cloud and the agent's `cloud:` section name it. */
export interface AgentKey {
  /** The keyid of the agent's signatures. */
  id: string;
  /** Base64 of the raw 32-byte public key. */
  publicKey: string;
  /** Where the agent's private key is (its `cloud.keyFile`): the file given, or keygen's default place. */
  keyFile: string;
}

/** A key for example templates (`npm run synth` without --agent-key): RFC 8032's first test vector, which nobody holds in secret. */
export const EXAMPLE_AGENT_KEY: AgentKey = { id: "home-1", publicKey: "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", keyFile: "/etc/homerelay/home-1.key" };

const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;
const BASE64_KEY = /^[A-Za-z0-9+/]{43}=$/;

/** Read an agent's public key from `file`; throws an Error naming the file and what was expected. */
export function readAgentKey(file: string): AgentKey {
  const path = resolve(file);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`${path}: cannot read the agent key (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const key = parseAgentKey(text, path);
  if (!KEY_ID.test(key.id)) throw new Error(`${path}: "${key.id}" is not a key id (1 to 64 letters, digits, . _ -); name the file <id>.key or <id>.pub`);
  return key;
}

function parseAgentKey(text: string, path: string): AgentKey {
  const fileId = basename(path).replace(/\.(key|pub|pem|txt)$/, "");
  if (text.includes("-----BEGIN PRIVATE KEY-----")) {
    // The agent's own key file: the deploy can name it as the agent's keyFile.
    const seed = seedOrThrow(text, path);
    try {
      return { id: fileId, publicKey: Buffer.from(publicKeyFromSeed(seed)).toString("base64"), keyFile: path };
    } finally {
      seed.fill(0);
    }
  }
  if (text.includes("-----BEGIN PUBLIC KEY-----")) {
    return { id: fileId, publicKey: rawPublicKey(text, path), keyFile: `/etc/homerelay/${fileId}.key` };
  }
  const printed = keygenOutput(text);
  if (printed !== null) return printed;
  const bare = text.trim();
  if (BASE64_KEY.test(bare) && Buffer.from(bare, "base64").length === 32) return { id: fileId, publicKey: bare, keyFile: `/etc/homerelay/${fileId}.key` };
  throw new Error(
    `${path}: not an agent key: expected the private key written by homerelay keygen (PKCS#8 PEM), an Ed25519 public key (PEM), keygen's printed output, or the base64 public key`,
  );
}

function seedOrThrow(pem: string, path: string): Uint8Array {
  try {
    return seedFromPkcs8Pem(pem);
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`);
  }
}

/** The raw public key of an SPKI PEM Ed25519 key, base64. */
function rawPublicKey(pem: string, path: string): string {
  try {
    const key = createPublicKey(pem);
    if (key.asymmetricKeyType !== "ed25519") throw new Error(`a ${key.asymmetricKeyType} key, not Ed25519`);
    const { x } = key.export({ format: "jwk" });
    return Buffer.from(x!, "base64url").toString("base64");
  } catch (err) {
    throw new Error(`${path}: not an Ed25519 public key: ${(err as Error).message}`);
  }
}

/** What `homerelay keygen` prints (`public key: …`, and the agent section's `keyId:` and `keyFile:`), or null. */
function keygenOutput(text: string): AgentKey | null {
  const field = (name: string) => text.split("\n").map((line) => line.trim()).find((line) => line.startsWith(`${name}: `))?.slice(name.length + 2).trim();
  const publicKey = field("public key");
  const id = field("keyId");
  if (publicKey === undefined || id === undefined || !BASE64_KEY.test(publicKey)) return null;
  return { id, publicKey, keyFile: field("keyFile") ?? `/etc/homerelay/${id}.key` };
}
