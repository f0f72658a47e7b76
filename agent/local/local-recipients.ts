/**
 * local-recipients — who exists here (Postfix local_recipient_maps): postmaster, the aliases,
 * the AUTH accounts, every bare name an alias points at, and valid SRS return addresses.
 * smtpd asks it at RCPT so that unknown users are refused then, never bounced later.
 */
import type { AliasTable } from "./aliases.js";
import type { SenderRewriter } from "./srs.js";

/** The separator of address extensions, `alice+lists@` → mailbox `alice` (Postfix recipient_delimiter). */
export const RECIPIENT_DELIMITER = "+";

/** The mailbox name of a local part: lower case, extension removed. */
export function mailboxOf(localPart: string): string {
  const lower = localPart.toLowerCase();
  const cut = lower.indexOf(RECIPIENT_DELIMITER);
  return cut > 0 ? lower.slice(0, cut) : lower;
}

/** The local recipient table of one configuration. */
export class LocalRecipients {
  private readonly domains: Set<string>;
  private readonly known: Set<string>;

  constructor(
    localDomains: readonly string[],
    accounts: readonly string[],
    readonly aliases: AliasTable | null,
    readonly srs: SenderRewriter,
  ) {
    this.domains = new Set(localDomains.map((d) => d.toLowerCase()));
    // RFC 5321 section 4.5.1: postmaster must exist; MAILER-DAEMON is where replies to bounces go.
    this.known = new Set(["postmaster", "mailer-daemon", ...accounts.map((a) => a.toLowerCase()), ...(aliases?.names() ?? []), ...(aliases?.mailboxNames() ?? [])]);
  }

  /** Is mail for `domain` delivered here? Case never matters. */
  isLocalDomain(domain: string): boolean {
    return this.domains.has(domain.toLowerCase());
  }

  /** Does `localPart@domain` exist here? `domain` must be local. */
  isLocalRecipient(localPart: string, domain: string): boolean {
    return this.known.has(mailboxOf(localPart)) || this.srsOrigin(localPart, domain) !== null;
  }

  /** The original sender behind an SRS return address of ours (a bounce to forwarded mail), or null. */
  srsOrigin(localPart: string, domain: string): string | null {
    return /^srs[01][=+-]/i.test(localPart) ? this.srs.reverse(`${localPart}@${domain}`) : null;
  }
}
