/**
 * smtp-reply — splits an SMTP reply as a client received it (`550-5.7.1 …\n550 5.7.1 …`) into its
 * basic code, RFC 3463 enhanced status code and one line of text, so that classifiers and logs read
 * the receiver's words without the per-line code prefixes of a multi-line reply (RFC 5321 4.2.1).
 */

/** A reply given in parts, e.g. from a library that already split off the code. */
export interface SmtpReplyParts {
  /** Basic reply code, e.g. 550. */
  code?: number;
  /** RFC 3463 enhanced status code, e.g. `5.7.1`. */
  enhanced?: string;
  /** The reply text; it may still carry `550-` / `550 5.7.1` prefixes, one per line. */
  text: string;
}

/** A reply as a client saw it: the raw (possibly multi-line) text, or its parts. */
export type SmtpReplyInput = string | SmtpReplyParts;

/** A reply split into code, enhanced code and text. */
export interface ParsedReply {
  /** Basic reply code, when the reply carries one. */
  code: number | undefined;
  /** Enhanced status code (`class.subject.detail`), when the reply carries one. */
  enhanced: string | undefined;
  /** The text of all lines joined by single spaces, without code prefixes. */
  text: string;
}

/** `550-…`, `550 …` or a bare `550`: a line with a basic reply code. */
const CODE_LINE = /^([2-5]\d\d)(?:[ -]|$)/;
/** An enhanced status code standing at the start of a line's text. */
const LEADING_ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$|[,;:])/;
/** An enhanced status code elsewhere in the text (`… (#5.7.1)`, `cuda_nsu 5.1.1 …`), not part of an IP address or version. */
const EMBEDDED_ENHANCED = /(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)/g;

/**
 * Split `reply` into code, enhanced code and text. Continuation lines (`550-`) and the last line
 * (`550 `) lose their basic code and a repeated enhanced code; lines without a code (folded text,
 * or `4.7.0 …` lines some receivers send) are kept. Codes given as parts win over codes in the text.
 */
export function parseReply(reply: SmtpReplyInput): ParsedReply {
  const parts = typeof reply === "string" ? { text: reply } : reply;
  const lines = parts.text.split(/\r?\n/);
  let code: number | undefined;
  let enhanced: string | undefined;
  const texts: string[] = [];
  for (const [index, raw] of lines.entries()) {
    let line = raw.trim();
    const codeMatch = CODE_LINE.exec(line);
    if (codeMatch && (code === undefined || Number(codeMatch[1]) === code)) {
      code ??= Number(codeMatch[1]);
      line = line.slice(3).replace(/^[ -]/, "").trim();
    }
    const enhancedMatch = LEADING_ENHANCED.exec(line);
    if (enhancedMatch && (index === 0 || enhancedMatch[0] === enhanced || (enhanced === undefined && codeMatch))) {
      enhanced ??= enhancedMatch[0];
      if (enhancedMatch[0] === enhanced) line = line.slice(enhancedMatch[0].length).trim();
    }
    if (line) texts.push(line);
  }
  const text = texts.join(" ").replace(/\s+/g, " ").trim();
  code = parts.code ?? code;
  enhanced = parts.enhanced ?? enhanced ?? embeddedEnhanced(text, code);
  return { code, enhanced, text };
}

/** The first enhanced code in running text whose class matches the basic code (`553 … - 5.7.1 [BL23] …`). */
function embeddedEnhanced(text: string, code: number | undefined): string | undefined {
  for (const m of text.matchAll(EMBEDDED_ENHANCED)) {
    if (code === undefined || m[1] === String(code)[0]) return m[0];
  }
  return undefined;
}

/** Whether the reply defers (4xx) rather than refuses: the basic code decides, else the enhanced code's class. */
export function isTemporary(reply: ParsedReply): boolean {
  if (reply.code !== undefined) return reply.code >= 400 && reply.code < 500;
  return reply.enhanced?.startsWith("4.") ?? false;
}
