/**
 * certificate — the TLS certificate smtpd presents. The configured one when `tls` is set;
 * otherwise a self-signed one for the hostname, made on first start (selfsigned, WebCrypto) and
 * kept in the spool's private/ directory (key 0600), so clients can pin it across restarts.
 */
import { X509Certificate } from "node:crypto";
import { readFile, rename, writeFile, open } from "node:fs/promises";
import { join } from "node:path";

/** PEM key and certificate chain for node:tls. */
export interface TlsIdentity {
  key: string;
  cert: string;
  /** Where they came from, for the log. */
  source: string;
}

/** Read the configured certificate, or load (making it on first use) the spool's self-signed one. */
export async function loadTlsIdentity(configured: { cert: string; key: string } | undefined, privateDir: string, hostname: string): Promise<TlsIdentity> {
  if (configured) {
    const [cert, key] = await Promise.all([readFile(configured.cert, "utf8"), readFile(configured.key, "utf8")]);
    new X509Certificate(cert); // a readable error now rather than at the first STARTTLS
    return { cert, key, source: configured.cert };
  }
  const certFile = join(privateDir, "smtpd.crt");
  const keyFile = join(privateDir, "smtpd.key");
  try {
    const [cert, key] = await Promise.all([readFile(certFile, "utf8"), readFile(keyFile, "utf8")]);
    const x509 = new X509Certificate(cert);
    // Renew a self-signed certificate that expires within 30 days, or that names another host.
    if (Date.parse(x509.validTo) - Date.now() > 30 * 86400_000 && x509.checkHost(hostname) !== undefined) {
      return { cert, key, source: `${certFile} (self-signed)` };
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const notBefore = new Date(Date.now() - 3600_000);
  const notAfter = new Date(notBefore.getTime() + 825 * 86400_000);
  // Loaded only to make a certificate: the X.509 libraries cost ~15 MB of memory for the agent's whole life.
  const { generate } = await import("selfsigned");
  const pems = await generate([{ name: "commonName", value: hostname }], {
    keyType: "ec",
    curve: "P-256",
    algorithm: "sha256",
    notBeforeDate: notBefore,
    notAfterDate: notAfter,
    extensions: [
      { name: "basicConstraints", cA: false },
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames: [{ type: 2, value: hostname }] },
    ],
  });
  await writePrivate(keyFile, pems.private, 0o600);
  await writePrivate(certFile, pems.cert, 0o644);
  return { cert: pems.cert, key: pems.private, source: `${certFile} (self-signed, new)` };
}

/** Write via a temporary file and rename, fsynced, so a crash never leaves half a key. */
async function writePrivate(file: string, data: string, mode: number): Promise<void> {
  const tmp = `${file}.tmp${process.pid}`;
  await writeFile(tmp, data, { mode });
  const fh = await open(tmp, "r");
  await fh.sync();
  await fh.close();
  await rename(tmp, file);
}
