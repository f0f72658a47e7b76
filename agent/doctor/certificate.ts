/**
 * certificate — the certificate smtpd offers with STARTTLS: not expired, not about to, and naming
 * the hostname. Read as it lies on disk (the configured `tls.cert`, or the spool's self-signed one),
 * never made here: doctor changes nothing.
 */
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fail, ok, warn, type Check } from "./check.js";

/** Warn this many days before the certificate expires. */
const WARN_DAYS = 14;

/** Where the agent keeps the self-signed certificate it makes on first start (agent/tls/certificate.ts). */
const SELF_SIGNED = "smtpd.crt";

/** Check the listener certificate: `configured` is `tls.cert`, else the self-signed one under `privateDir`. */
export async function certificateCheck(configured: string | undefined, privateDir: string, hostname: string, now: number): Promise<Check> {
  const file = configured ?? join(privateDir, SELF_SIGNED);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(await readFile(file));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (configured === undefined && code === "ENOENT") return ok("certificate", `no certificate yet: the agent makes a self-signed one for ${hostname} on its first start`);
    return fail("certificate", `the certificate ${file} cannot be read (${code ?? (err as Error).message})`, "set tls.cert to a PEM certificate chain (e.g. from Let's Encrypt)");
  }
  const until = Date.parse(cert.validTo);
  const days = Math.floor((until - now) / 86400_000);
  const renew = configured === undefined ? "remove it; the agent makes a new one at its next start" : "renew it (certbot renew) and send the agent SIGHUP";
  const what = `certificate ${file}${configured === undefined ? " (self-signed)" : ""}`;
  if (until <= now) return fail("certificate", `${what} expired on ${new Date(until).toISOString().slice(0, 10)}: senders that verify refuse STARTTLS`, renew);
  if (days < WARN_DAYS) return warn("certificate", `${what} expires in ${days} days (${new Date(until).toISOString().slice(0, 10)})`, renew);
  if (cert.checkHost(hostname) === undefined) return warn("certificate", `${what} does not name ${hostname} (it is for ${cert.subject.replace(/\n/g, ", ")})`, "use a certificate for the hostname");
  return ok("certificate", `${what} is valid until ${new Date(until).toISOString().slice(0, 10)} (${days} days) and names ${hostname}`);
}
