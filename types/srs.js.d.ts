/** The part of srs.js's API that homerelay uses (the package ships no types). */
declare module "srs.js" {
  /** Sender Rewriting Scheme with HMAC-SHA1 hashes and day-granular timestamps. */
  class SRS {
    /** `maxAge` is in days (default 21); `separator` follows the SRS0/SRS1 tag (default `=`). */
    constructor(options: { secret: string; separator?: "=" | "-" | "+"; maxAge?: number });
    /** The SRS local part for `local@domain`: SRS0, or SRS1 when `local` is already SRS. */
    rewrite(local: string, domain: string): string;
    /** `[local, domain]` behind an SRS local part, null when it is none; throws TypeError when forged or expired. */
    reverse(local: string): [local: string, domain: string] | null;
  }
  export = SRS;
}
