/**
 * dkim-keys — the agent's DKIM signing keys, one per sender domain (`dkim.domains`), read and
 * checked at start, and the choice of the key that signs a given message.
 */
import { createPrivateKey, type KeyObject } from "node:crypto";
import { domainToASCII } from "node:url";
import { readSecretFile, SecretFileError } from "../../shared/secret-file.js";
import type { AgentConfig } from "../config.js";

/** The agent's `dkim:` section. */
export type DkimConfig = NonNullable<AgentConfig["dkim"]>;

/** Shortest RSA key a signer may use (RFC 8301 section 3.2). */
const MIN_RSA_BITS = 1024;

/** One signing domain's key. */
export interface DkimKey {
  /** The `d=` of the signature, lower case. */
  domain: string;
  /** The `s=` of the signature: the key's record is `<selector>._domainkey.<domain>`. */
  selector: string;
  privateKey: KeyObject;
}

/** The signing keys by domain. */
export class DkimKeys {
  private constructor(private readonly byDomain: Map<string, DkimKey>) {}

  /**
   * Read every key file; throws SecretFileError (the agent refuses to start) for a file others may
   * read or write, or one that is not an RSA private key of at least 1024 bits.
   */
  static load(config: DkimConfig): DkimKeys {
    const keys = new Map<string, DkimKey>();
    for (const [domain, { selector, keyFile }] of Object.entries(config.domains)) {
      const what = `dkim.domains.${domain}.keyFile`;
      const pem = readSecretFile(keyFile, what);
      let privateKey: KeyObject;
      try {
        privateKey = createPrivateKey(pem);
      } catch {
        throw new SecretFileError(`${what} ${keyFile}: not a private key in PEM form (make one with homerelay dkim keygen)`);
      }
      // nodemailer's signer speaks rsa-sha256 only; an Ed25519 key (RFC 8463) would leave mail unsigned.
      if (privateKey.asymmetricKeyType !== "rsa") {
        throw new SecretFileError(`${what} ${keyFile}: a ${privateKey.asymmetricKeyType} key; DKIM signing needs an RSA key (make one with homerelay dkim keygen)`);
      }
      const bits = privateKey.asymmetricKeyDetails?.modulusLength ?? 0;
      if (bits < MIN_RSA_BITS) throw new SecretFileError(`${what} ${keyFile}: a ${bits}-bit RSA key; receivers ignore signatures by keys under ${MIN_RSA_BITS} bits (RFC 8301)`);
      keys.set(domain, { domain, selector, privateKey });
    }
    return new DkimKeys(keys);
  }

  /**
   * The key for a message: the header From: domain's, so that the signature aligns with it for
   * DMARC; else the envelope sender's (forwarded mail with an SRS sender, bounces of our own).
   * A key for a domain also serves its subdomains (DMARC relaxed alignment). Null: no key applies.
   */
  forMessage(fromDomain: string | null, senderDomain: string | null): DkimKey | null {
    return this.forDomain(fromDomain) ?? this.forDomain(senderDomain);
  }

  /** The key of `domain` or of its nearest parent that has one. */
  private forDomain(domain: string | null): DkimKey | null {
    if (!domain) return null;
    // A U-label From: domain (bücher.example) is configured in its ASCII form.
    const labels = domainToASCII(domain).toLowerCase().split(".");
    for (let i = 0; i < labels.length; i++) {
      const key = this.byDomain.get(labels.slice(i).join("."));
      if (key) return key;
    }
    return null;
  }
}
