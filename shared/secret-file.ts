/**
 * secret-file — files that hold secrets (smarthost and upstream passwords, the agent's private
 * key): refused when others may read or write them, as sendmail refuses a readable authinfo.
 */
import { readFileSync, statSync } from "node:fs";

/** A secret file that cannot be used; the program refuses to start (EX_CONFIG). */
export class SecretFileError extends Error {}

/** The text of secret file `file` (named `what` in errors); throws SecretFileError when unsafe or unreadable. */
export function readSecretFile(file: string, what: string): string {
  let mode: number;
  let text: string;
  try {
    mode = statSync(file).mode;
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new SecretFileError(`${what} ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (mode & 0o027) {
    throw new SecretFileError(`${what} ${file} has mode ${(mode & 0o777).toString(8)}; others must not read or write it (chmod 600 ${file})`);
  }
  return text;
}
