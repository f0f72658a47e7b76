/**
 * dkim-command — `homerelay dkim keygen --domain D --selector S [--out DIR] [--bits 2048]`: a new
 * RSA key for DKIM signing. Writes `DIR/S._domainkey.D.key` (PKCS#8 PEM, mode 0600, never over an
 * existing file) and prints the TXT record to publish and the agent's `dkim:` configuration.
 */
import { generateKeyPair } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import type { Command } from "commander";
import { dkimRecordName, dkimRecordText, isDnsName, txtStrings } from "../dkim/dkim-record.js";

/** sysexits(3): bad arguments, and a key file that cannot be created. */
const EX_USAGE = 64;
const EX_CANTCREAT = 73;

/** RSA sizes offered: 1024 is the least receivers accept (RFC 8301), 2048 what they expect. */
const KEY_BITS = [1024, 2048, 3072, 4096];

/** What `dkim keygen` is asked for. */
export interface DkimKeygenRequest {
  domain: string;
  selector: string;
  out: string;
  bits: number;
}

/** Make the key, write it and print the TXT record and configuration; returns the exit status. */
export async function generateDkimKey(request: DkimKeygenRequest): Promise<number> {
  const domain = request.domain.toLowerCase().replace(/\.$/, "");
  const { selector, out, bits } = request;
  const refused = !isDnsName(domain)
    ? "--domain must be a domain name such as example.net"
    : !isDnsName(selector)
      ? "--selector must be letters, digits and - (labels separated by dots), e.g. home or 2025a"
      : !KEY_BITS.includes(bits)
        ? `--bits must be one of ${KEY_BITS.join(", ")}`
        : null;
  if (refused) {
    process.stderr.write(`homerelay: ${refused}\n`);
    return EX_USAGE;
  }
  const name = dkimRecordName(selector, domain);
  const file = resolve(join(out, `${name}.key`));
  const { privateKey, publicKey } = await promisify(generateKeyPair)("rsa", { modulusLength: bits });
  try {
    await mkdir(out, { recursive: true, mode: 0o700 });
    // "wx": a key whose record may already be published is never replaced.
    await writeFile(file, privateKey.export({ type: "pkcs8", format: "pem" }), { flag: "wx", mode: 0o600 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "EEXIST" ? "already exists; not overwritten (choose another --selector: rotate keys by selector)" : `cannot write (${code ?? (err as Error).message})`;
    process.stderr.write(`homerelay: ${file}: ${why}\n`);
    return EX_CANTCREAT;
  }
  const record = txtStrings(dkimRecordText(publicKey))
    .map((s) => `"${s}"`)
    .join(" ");
  process.stdout.write(
    [
      `wrote ${file} (RSA ${bits}-bit private key, PKCS#8 PEM, mode 0600)`,
      ``,
      `# DNS: publish this TXT record (strings of at most 255 octets; receivers join them)`,
      `${name}. IN TXT ${record}`,
      ``,
      `# agent configuration`,
      `dkim:`,
      `  domains:`,
      `    ${domain}: { selector: ${selector}, keyFile: ${file} }`,
      ``,
    ].join("\n"),
  );
  return 0;
}

/** Add `dkim keygen` to the program. */
export function addDkimCommand(program: Command): void {
  const dkim = program.command("dkim").description("DKIM signing keys");
  dkim
    .command("keygen")
    .description("make an RSA key for DKIM signing: DIR/SELECTOR._domainkey.DOMAIN.key, and the TXT record to publish")
    .requiredOption("--domain <domain>", "the signing domain (d=), e.g. example.net")
    .requiredOption("--selector <selector>", "the selector (s=), e.g. home")
    .option("--out <dir>", "directory for the private key file", ".")
    .option("--bits <bits>", "RSA key size", "2048")
    .action((o: { domain: string; selector: string; out: string; bits: string }) =>
      generateDkimKey({ domain: o.domain, selector: o.selector, out: o.out, bits: Number(o.bits) }).then((code) => process.exit(code)),
    );
}
