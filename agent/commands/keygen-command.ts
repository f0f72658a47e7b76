/**
 * keygen-command — `homerelay keygen --id NAME --out DIR`: a new Ed25519 key for the cloud route.
 * Writes the private key as `DIR/NAME.key` (PKCS#8 PEM, mode 0600, never over an existing file)
 * and prints the public key (base64 of the raw 32 bytes) with the YAML to paste into the cloud's
 * `keys:` and the agent's `cloud:` section.
 */
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { pkcs8PemFromSeed, publicKeyFromSeed } from "../../shared/protocol/ed25519.js";

/** sysexits(3): bad arguments, and an output file that cannot be created. */
const EX_USAGE = 64;
const EX_CANTCREAT = 73;

/** Make the key pair and print what to configure; returns the exit status. */
export async function generateKey(id: string, out: string): Promise<number> {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(id)) {
    process.stderr.write(`homerelay: --id must be 1 to 64 letters, digits, . _ - (it is the keyid of every signature)\n`);
    return EX_USAGE;
  }
  const file = resolve(join(out, `${id}.key`));
  const seed = randomBytes(32);
  const publicKey = Buffer.from(publicKeyFromSeed(seed)).toString("base64");
  try {
    await mkdir(out, { recursive: true, mode: 0o700 });
    // "wx": never replace a key that may already be listed in a cloud's configuration.
    await writeFile(file, pkcs8PemFromSeed(seed), { flag: "wx", mode: 0o600 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    process.stderr.write(`homerelay: ${file}: ${code === "EEXIST" ? "already exists; not overwritten (choose another --id, or remove the old key once no cloud lists it)" : `cannot write (${code ?? (err as Error).message})`}\n`);
    return EX_CANTCREAT;
  } finally {
    seed.fill(0);
  }
  process.stdout.write(
    [
      `wrote ${file} (Ed25519 private key, PKCS#8 PEM, mode 0600)`,
      `public key: ${publicKey}`,
      ``,
      `# cloud configuration, under keys: (set the senders this key may use)`,
      `  - { id: ${id}, publicKey: "${publicKey}", senders: ["*@example.net"] }`,
      ``,
      `# agent configuration (set url to your cloud's address)`,
      `cloud:`,
      `  url: https://relay.example.net`,
      `  keyId: ${id}`,
      `  keyFile: ${file}`,
      ``,
    ].join("\n"),
  );
  return 0;
}

/** Add `keygen` to the program. */
export function addKeygenCommand(program: Command): void {
  program
    .command("keygen")
    .description("make an Ed25519 key for the cloud route: DIR/NAME.key, and the public key for the cloud's configuration")
    .requiredOption("--id <name>", "key id (the keyid of the agent's signatures, the id in the cloud's keys:)")
    .requiredOption("--out <dir>", "directory for the private key file")
    .action((o: { id: string; out: string }) => generateKey(o.id, o.out).then((code) => process.exit(code)));
}
