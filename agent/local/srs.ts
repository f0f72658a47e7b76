/**
 * srs — the Sender Rewriting Scheme for mail the local agent forwards: the envelope sender
 * becomes `SRS0=hash=time=domain=user@our.domain`, so SPF passes at the receiver, and a bounce
 * to that address is reversed to the original sender once its hash and age are checked.
 */
import { randomBytes } from "node:crypto";
import { link, open, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import SRS from "srs.js";

/** How a SenderRewriter signs addresses. */
export interface SenderRewriterOptions {
  /** HMAC key; keep it across restarts (see loadOrCreateSrsSecret) or pending bounces are lost. */
  secret: string;
  /** Our domain: forwarded senders become `SRS0=…@domain`. */
  domain: string;
  /** Days a rewritten address stays valid for bounces; 21 by default, as in libsrs2. */
  maxAgeDays?: number;
}

/** Rewrites the envelope sender of forwarded mail, and reverses bounces to rewritten senders. */
export class SenderRewriter {
  private readonly srs: SRS;
  private readonly domain: string;

  constructor(options: SenderRewriterOptions) {
    this.srs = new SRS({ secret: options.secret, maxAge: options.maxAgeDays ?? 21 });
    this.domain = options.domain.toLowerCase();
  }

  /**
   * The envelope sender for mail from `sender` that is forwarded. Someone else's SRS0 address
   * becomes SRS1, so a bounce goes back through that forwarder. Throws on a sender without a
   * domain, and on a malformed SRS1 sender (srs.js cannot rewrite it).
   */
  forward(sender: string): string {
    if (sender === "") return ""; // a bounce stays a bounce
    const at = sender.lastIndexOf("@");
    if (at < 0) throw new TypeError(`cannot rewrite sender "${sender}": it has no domain`);
    const domain = sender.slice(at + 1);
    // Our own addresses, our SRS ones included, already pass SPF for our domain.
    if (domain.toLowerCase() === this.domain) return sender;
    return `${this.srs.rewrite(sender.slice(0, at), domain)}@${this.domain}`;
  }

  /** The original sender behind `address`, or null when it is no valid, unexpired SRS address of ours. */
  reverse(address: string): string | null {
    const at = address.lastIndexOf("@");
    if (at < 0 || address.slice(at + 1).toLowerCase() !== this.domain) return null;
    try {
      const original = this.srs.reverse(canonicalCase(address.slice(0, at)));
      return original && `${original[0]}@${original[1]}`;
    } catch (error) {
      if (error instanceof TypeError) return null; // srs.js: unrecognized, bad hash or expired
      throw error;
    }
  }
}

/**
 * Bounces may come back with the address case-folded. The tag, hex hash and timestamp of our
 * addresses have one case each, so they are restored; the hashed domain and user cannot be.
 */
function canonicalCase(local: string): string {
  const srs0 = /^srs0([-=+])([0-9a-f]{4})=([a-z2-7]{2})=/i.exec(local);
  if (srs0) return `SRS0${srs0[1]}${srs0[2]!.toLowerCase()}=${srs0[3]!.toUpperCase()}=${local.slice(srs0[0].length)}`;
  const srs1 = /^srs1([-=+])([0-9a-f]{4})=/i.exec(local);
  if (srs1) return `SRS1${srs1[1]}${srs1[2]!.toLowerCase()}=${local.slice(srs1[0].length)}`;
  return local;
}

/**
 * The SRS secret in `<spoolDir>/srs.secret`, created on first use: 32 random bytes, base64url,
 * mode 0600. A new secret is written to a private file and linked into place, and link never
 * replaces an existing file: processes starting together all end up with the first one's secret.
 */
export async function loadOrCreateSrsSecret(spoolDir: string): Promise<string> {
  const file = join(spoolDir, "srs.secret");
  try {
    return await readSecret(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const draft = `${file}.${process.pid}.${randomBytes(6).toString("hex")}`;
  try {
    const handle = await open(draft, "wx", 0o600);
    try {
      await handle.writeFile(randomBytes(32).toString("base64url"));
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await link(draft, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error; // another process won
    }
    const dir = await open(spoolDir, "r");
    try {
      await dir.sync(); // a secret lost in a crash would orphan the bounce addresses made with it
    } finally {
      await dir.close();
    }
  } finally {
    await rm(draft, { force: true });
  }
  return readSecret(file);
}

/** The secret in `file`; an empty file is an error, not a secret. */
async function readSecret(file: string): Promise<string> {
  const secret = (await readFile(file, "utf8")).trim();
  if (secret === "") throw new Error(`${file}: the SRS secret is empty`);
  return secret;
}
