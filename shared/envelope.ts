/**
 * envelope — the SMTP envelope of a queued message, as both halves of homerelay see it:
 * the envelope sender (MAIL FROM), the recipients (RCPT TO) and their RFC 3461 DSN parameters.
 */

/** RFC 3461 NOTIFY values of one recipient; absent means the MTA's default (FAILURE, DELAY). */
export type DsnNotify = "NEVER" | "SUCCESS" | "FAILURE" | "DELAY";

/** One envelope recipient with its DSN parameters. */
export interface EnvelopeRecipient {
  /** The address as given at RCPT TO, without angle brackets. */
  address: string;
  notify?: DsnNotify[];
  /** RFC 3461 ORCPT, as `addr-type;address` (e.g. `rfc822;bob@example.org`). */
  orcpt?: string;
}

/** The envelope of one message: MAIL FROM with its parameters and the recipients. */
export interface Envelope {
  /** Envelope sender; the empty string is the null sender `<>` of bounces. */
  sender: string;
  recipients: EnvelopeRecipient[];
  /** RFC 3461 RET: return the full message or only its headers in a failure DSN. */
  ret?: "FULL" | "HDRS";
  /** RFC 3461 ENVID, decoded from xtext. */
  envid?: string;
  /** The message needs SMTPUTF8 (RFC 6531) from every hop. */
  smtputf8?: boolean;
  /** BODY=8BITMIME or 7BIT as declared at MAIL FROM. */
  body?: "7BIT" | "8BITMIME";
}
