/**
 * sasl — checks AUTH credentials against the accounts in `users`: PLAIN and LOGIN against the
 * scrypt hash (or the CRAM-MD5 secret of an account that has only that), CRAM-MD5 against its secret.
 */
import { timingSafeEqual, createHash } from "node:crypto";
import type { SMTPServerAuthentication } from "smtp-server";
import { verifyPassword } from "./password.js";

/** One AUTH account, as configured. */
export interface SaslAccount {
  password?: string;
  cramMd5Secret?: string;
}

/** The mechanisms smtpd offers, strongest first. */
export const SASL_MECHANISMS = ["PLAIN", "LOGIN", "CRAM-MD5"] as const;

/**
 * Check one AUTH attempt. Returns the account name on success, null on failure. Unknown
 * accounts cost the same scrypt work as known ones, so timing does not reveal which exist.
 */
export async function checkCredentials(auth: SMTPServerAuthentication, accounts: Record<string, SaslAccount>): Promise<string | null> {
  const name = auth.username ?? "";
  const account = Object.hasOwn(accounts, name) ? accounts[name] : undefined;
  if (auth.method === "CRAM-MD5") {
    return account?.cramMd5Secret !== undefined && auth.validatePassword(account.cramMd5Secret) ? name : null;
  }
  const password = auth.password ?? "";
  if (account?.password !== undefined) return (await verifyPassword(password, account.password)) ? name : null;
  if (account?.cramMd5Secret !== undefined) return sameSecret(password, account.cramMd5Secret) ? name : null;
  await verifyPassword(password, DECOY_HASH);
  return null;
}

function sameSecret(a: string, b: string): boolean {
  const ha = createHash("sha256").update(a).digest();
  const hb = createHash("sha256").update(b).digest();
  return timingSafeEqual(ha, hb);
}

// A valid hash of a random password: unknown users take as long to refuse as known ones.
const DECOY_HASH = "$scrypt$ln=15,r=8,p=1$0Kc3W1yD2m8vQ4r9Zb5x1w$Q2xlYXJseU5vdEFQYXNzd29yZEJ1dEZpbmVGb3JEZWNveQ";
