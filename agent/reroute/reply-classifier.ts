/**
 * reply-classifier — says what an SMTP rejection means for routing: whether the receiver refuses the
 * sending IP address itself (a DNS blocklist, a dynamic or residential range, a missing PTR, the IP's
 * reputation), so the same message would pass from a clean static address and should be re-routed
 * through the fallback instead of bounced, or another reason (recipient, mailbox, size, content,
 * SPF/DKIM/DMARC, rate limit, greylisting, relaying, policy) that another route would not cure.
 *
 * The rules read what receivers actually write: basic and RFC 3463 enhanced codes, the stable reason
 * codes of large providers (Yahoo/AOL, Microsoft, Comcast, Cox, Spectrum, GoDaddy, Orange), the names
 * of DNS blocklists and the phrases of common MTAs (Postfix, postscreen, sendmail, Exim, Exchange).
 * An enhanced code alone rarely decides: 5.7.1 is used for spam, relay denial, SPF and IP blocks alike.
 */
import { isTemporary, parseReply, type ParsedReply, type SmtpReplyInput } from "./smtp-reply.js";

/** What a reply says went wrong; the `ip-*` classes mean the receiver refuses the sending IP. */
export type ReplyClass =
  | "ip-blocklist"
  | "ip-dynamic"
  | "ip-no-ptr"
  | "ip-reputation-temp"
  | "rate-limit"
  | "greylist"
  | "auth-spf-dkim-dmarc"
  | "content-spam"
  | "recipient-unknown"
  | "mailbox-full"
  | "message-size"
  | "relay-denied"
  | "policy-other"
  | "other";

/** Every class, in the order reports list them. */
export const REPLY_CLASSES: readonly ReplyClass[] = [
  "ip-blocklist",
  "ip-dynamic",
  "ip-no-ptr",
  "ip-reputation-temp",
  "rate-limit",
  "greylist",
  "auth-spf-dkim-dmarc",
  "content-spam",
  "recipient-unknown",
  "mailbox-full",
  "message-size",
  "relay-denied",
  "policy-other",
  "other",
];

/** The classes that mean "the receiver refuses this sending IP": another route would very likely be accepted. */
const REROUTE_CLASSES: ReadonlySet<ReplyClass> = new Set(["ip-blocklist", "ip-dynamic", "ip-no-ptr", "ip-reputation-temp"]);

/** The meaning of one reply. */
export interface ReplyVerdict {
  class: ReplyClass;
  /** True when the receiver refuses the sending IP: send through the fallback route instead. */
  reroute: boolean;
  /** True for a 4xx reply (the receiver defers), false for 5xx. */
  temporary: boolean;
  /** A short phrase for the administrator, e.g. `sending IP listed on Spamhaus PBL (dynamic range)`. */
  reason: string;
  /** `family/rule` of the rule that decided, for logs and for tuning the table. */
  rule: string;
}

/** One rule: when `test` matches the parsed reply, the reply has class `class`. */
export interface ReplyRule {
  name: string;
  test: (reply: ParsedReply) => RegExpMatchArray | boolean | null | undefined;
  /** The class, or a function of the reply (e.g. 4xx reputation → `ip-reputation-temp`, 5xx → `ip-blocklist`). */
  class: ReplyClass | ((reply: ParsedReply, match: RegExpMatchArray | undefined) => ReplyClass);
  reason: string | ((reply: ParsedReply, match: RegExpMatchArray | undefined) => string);
}

/** A named group of rules about one kind of evidence; `why` says why it sits where it does in the order. */
export interface ReplyRuleFamily {
  name: string;
  why: string;
  rules: readonly ReplyRule[];
}

/** A test on the reply text (case-insensitive patterns are written with the `i` flag). */
const text =
  (pattern: RegExp) =>
  (reply: ParsedReply): RegExpMatchArray | null =>
    pattern.exec(reply.text);

/**
 * A case-insensitive test for any of several phrases: regular-expression sources, one a line, so that
 * each wording receivers use stands on its own line of the table.
 */
const phrases = (lines: string) =>
  text(
    new RegExp(
      lines
        .split("\n")
        .map((line) => line.trim())
        .filter((line) => line !== "")
        .join("|"),
      "i",
    ),
  );

/** A test on the enhanced code: `5.7.25`, or a `class.subject.` prefix with a detail range. */
const enhanced =
  (...codes: (string | [prefix: string, from: number, to: number])[]) =>
  (reply: ParsedReply): boolean => {
    const e = reply.enhanced;
    if (!e) return false;
    return codes.some((c) => {
      if (typeof c === "string") return e === c;
      const [prefix, from, to] = c;
      if (!e.startsWith(prefix)) return false;
      const detail = Number(e.slice(prefix.length));
      return detail >= from && detail <= to;
    });
  };

/** Both tests match; the text match (if any) is kept for the reason. */
const both =
  (a: ReplyRule["test"], b: ReplyRule["test"]): ReplyRule["test"] =>
  (reply) => {
    const first = a(reply);
    if (!first) return null;
    const second = b(reply);
    if (!second) return null;
    return typeof second === "object" ? second : first;
  };

/** Either test matches. */
const either =
  (...tests: ReplyRule["test"][]): ReplyRule["test"] =>
  (reply) => {
    for (const t of tests) {
      const m = t(reply);
      if (m) return m;
    }
    return null;
  };

/** Deferred IP refusals are reputation throttling, permanent ones a block. */
const byPermanence = (reply: ParsedReply): ReplyClass => (isTemporary(reply) ? "ip-reputation-temp" : "ip-blocklist");

/** Up to a sentence's worth of text: dots only inside names and addresses (`user@example.com`, `192.0.2.1`), not at a sentence end. */
const SPAN = String.raw`(?:[^.;]|\.(?=\w))`;

/** An IPv4 or IPv6 address in running text. */
const IP = String.raw`(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,7})`;

/** DNS blocklists that list IP addresses, with the name an administrator looks them up by. Order: most specific first. */
const IP_LISTS: readonly [RegExp, string][] = [
  [/\bCSS\b|css\.spamhaus/i, "Spamhaus CSS"],
  [/\bXBL\b|xbl\.spamhaus|exploits? block ?list|\bCBL\b|abuseat\.org/i, "Spamhaus XBL (CBL)"],
  [/\bSBL\b|sbl\.spamhaus|spamhaus\.org\/sbl/i, "Spamhaus SBL"],
  [/zen\.spamhaus|spamhaus zen|\bZEN\b/i, "Spamhaus ZEN"],
  [/spamhaus/i, "Spamhaus"],
  [/spamcop/i, "SpamCop"],
  [/sorbs/i, "SORBS"],
  [/barracuda|\bBRBL\b/i, "Barracuda Reputation Block List"],
  [/cloudmark|\bcm-csi|\bCSI\b/i, "Cloudmark CSI"],
  [/proofpoint/i, "Proofpoint IP reputation"],
  [/uceprotect/i, "UCEPROTECT"],
  [/trend ?micro|mail-abuse\.(?:com|org)/i, "Trend Micro Email Reputation"],
  [/\bpsbl\b|surriel/i, "PSBL"],
  [/spamrats/i, "SpamRATS"],
  [/hostkarma|junkemailfilter/i, "Hostkarma"],
  [/mailspike/i, "Mailspike"],
  [/senderscore/i, "Validity Sender Score"],
  [/invaluement|ivmsip/i, "Invaluement ivmSIP"],
  [/abusix/i, "Abusix Mail Intelligence"],
  [/backscatterer/i, "Backscatterer"],
  [/blocklist\.de/i, "blocklist.de"],
  [/manitu|nix ?spam/i, "NiX Spam"],
];

/** The blocklist named in a reply: a known list, else the zone after "blocked using"/"listed at", else a generic name. */
function listName(reply: ParsedReply): string {
  for (const [pattern, name] of IP_LISTS) if (pattern.test(reply.text)) return name;
  const zone = /(?:blocked (?:using|by)|listed (?:at|in|on|by)(?: the)?(?: lookup site)?|(?:rbl|dnsbl|black ?list) (?:at|on))\s+'?(?:https?:\/\/)?([a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)+)/i.exec(reply.text);
  return zone?.[1]?.replace(/\.$/, "") ?? "a DNS blocklist";
}

/** The provider reason code a rule matched, upper-cased, for the reason text. */
const code = (m: RegExpMatchArray | undefined): string => (m?.[1] ?? m?.[0] ?? "").toUpperCase();

/** A provider's reason codes: the class and the administrator's words for each. */
type CodeTable = Readonly<Record<string, readonly [ReplyClass, string]>>;

/** A rule for a provider's published reason codes: the first group of `pattern` is looked up in `table`. */
function codeRule(name: string, provider: string, pattern: RegExp, table: CodeTable): ReplyRule {
  const entry = (m: RegExpMatchArray | undefined) => table[code(m)]!;
  return {
    name,
    test: (reply) => {
      const m = pattern.exec(reply.text);
      return m && table[code(m)] ? m : null;
    },
    class: (_r, m) => entry(m)[0],
    reason: (_r, m) => `${provider} ${code(m)}: ${entry(m)[1]}`,
  };
}

/** Hotmail/Outlook.com's legacy codes (mail.live.com troubleshooting page). */
const HOTMAIL_CODES: CodeTable = {
  "SC-001": ["ip-blocklist", "sending IP or its network on the block list"],
  "SC-002": ["ip-blocklist", "sending IP blocked for namespace mining"],
  "SC-003": ["ip-blocklist", "sending IP looks like an open proxy or relay"],
  "SC-004": ["ip-blocklist", "sending IP blocked after complaints"],
  "SC-005": ["ip-blocklist", "sending IP blocked"],
  "DY-001": ["ip-dynamic", "dynamic IP range refused"],
  "RP-001": ["rate-limit", "sending rate limit"],
  "RP-002": ["rate-limit", "sending rate limit"],
  "RP-003": ["rate-limit", "sending rate limit"],
};

/** Cox's AUP# codes (Cox postmaster error codes). */
const COX_CODES: CodeTable = {
  CXBL: ["ip-blocklist", "sending IP blocked for spam-like behaviour"],
  CDRBL: ["ip-blocklist", "sending IP temporarily blocked for spam-like behaviour"],
  CXRBL: ["ip-blocklist", "sending IP listed on a DNS blocklist"],
  CXDNS: ["ip-no-ptr", "reverse DNS of the sending IP fails"],
  CXCNCT: ["rate-limit", "too many connections from the IP"],
  CXMXRT: ["rate-limit", "too many recipients; wait before sending more"],
  CXSNDR: ["auth-spf-dkim-dmarc", "sender domain failed SPF/DKIM"],
};

/** GoDaddy's IB codes (GoDaddy help: rejected email bounce errors). */
const GODADDY_CODES: CodeTable = {
  IB007: ["rate-limit", "too many sessions from the IP"],
  IB101: ["rate-limit", "server busy; try again later"],
  IB103: ["ip-blocklist", "sending IP has a poor Cloudmark CSI reputation"],
  IB104: ["ip-blocklist", "sending IP listed on Spamhaus SBL"],
  IB105: ["ip-blocklist", "sending IP listed on Spamhaus XBL"],
  IB106: ["ip-dynamic", "sending IP listed on Spamhaus PBL (dynamic range)"],
  IB108: ["ip-no-ptr", "reverse DNS of the sending IP failed"],
  IB110: ["ip-blocklist", "sending IP blocked for an hour for spam"],
  IB111: ["ip-blocklist", "sending IP blocked for the day for spam"],
  IB112: ["ip-blocklist", "sending IP blocked for an hour for invalid recipients"],
  IB113: ["ip-blocklist", "sending IP blocked for the day for invalid recipients"],
  IB212: ["content-spam", "content judged to be spam"],
  IB504: ["rate-limit", "too many messages from the IP this hour"],
  IB508: ["auth-spf-dkim-dmarc", "the sender domain's SPF record does not cover the sending IP"],
  IB510: ["rate-limit", "too many messages in one session"],
  IB605: ["rate-limit", "too many recipients"],
  IB607: ["rate-limit", "too many recipients from the IP this hour"],
};

/** Orange (OFR…) and La Poste (LPN…) numeric reason codes, as far as their meaning is published. */
const ORANGE_CODES: CodeTable = {
  "101": ["ip-blocklist", "sending IP blocked (Spamhaus listing)"],
  "102": ["ip-blocklist", "sending IP blocked for spam (Cloudmark/Sender Score listing)"],
  "104": ["rate-limit", "too many connections"],
  "401": ["auth-spf-dkim-dmarc", "SPF of the sender domain failed"],
  "416": ["recipient-unknown", "invalid recipient"],
  "417": ["mailbox-full", "recipient over quota"],
  "420": ["recipient-unknown", "recipient mailbox archived"],
  "426": ["recipient-unknown", "recipient account blocked"],
  "506": ["content-spam", "message rejected as spam"],
  "514": ["message-size", "message size limit"],
  "517": ["auth-spf-dkim-dmarc", "DMARC verification failed"],
};

/**
 * The rule families, in evaluation order: the first matching rule decides. Specific evidence (a
 * provider's reason code, a receiver's broken DNSBL lookup, greylisting, a listed *domain*) comes
 * before the IP families, because those replies also mention blocklists or IP addresses; the IP
 * families come before the generic families (rate limit, sender, relay, recipient, content, policy),
 * whose words ("blocked", "spam", "rejected") also appear in IP refusals.
 */
export const REPLY_RULE_FAMILIES: readonly ReplyRuleFamily[] = [
  {
    name: "provider-codes",
    why: "Large receivers publish stable reason codes that name the exact cause; they are more precise than any wording, so they decide first.",
    rules: [
      {
        name: "yahoo-spamhaus",
        test: text(/\[(BL2\d)\]/),
        class: "ip-blocklist",
        reason: (_r, m) => `Yahoo ${code(m)}: sending IP listed on Spamhaus`,
      },
      {
        name: "yahoo-ip-reputation",
        test: text(/\[((?:TSS?|IPTS|GL)\d\d)\]/),
        class: byPermanence,
        reason: (r, m) => `Yahoo ${code(m)}: mail from the sending IP ${isTemporary(r) ? "deferred for its reputation (complaints or unexpected volume)" : "refused for its reputation"}`,
      },
      {
        name: "aol-dynamic",
        // AOL defers (DYN:T1) or refuses (RTR:DU) dynamic and residential ranges.
        test: text(/\b(RTR:DU|DYN:[A-Z]\d)\b/),
        class: (r) => (isTemporary(r) ? "ip-reputation-temp" : "ip-dynamic"),
        reason: (_r, m) => `AOL ${code(m)}: dynamic or residential sending IP`,
      },
      {
        name: "aol-reverse-dns",
        test: text(/\b(RTR:RD|RTR:DN|RLY:IR)\b/),
        class: "ip-no-ptr",
        reason: (_r, m) => `AOL ${code(m)}: sending IP has no valid reverse DNS`,
      },
      {
        name: "aol-ip-block",
        test: text(/\b(RTR:(?:BB|BL|SC)|RLY:(?:B\d|BL|NW|OB)|CON:[A-Z]\d)\b/),
        class: byPermanence,
        reason: (_r, m) => `AOL ${code(m)}: sending IP blocked`,
      },
      {
        name: "aol-message",
        // Content (HVU, DAT, RLY:BD/CH), RFC format (RTR:GE) and sender (RLY:SN) codes: not the IP.
        test: text(/\b(HVU:[A-Z]\d|DAT:[A-Z]\d|RTR:(?:GE|CH)|RLY:(?:BD|CH|SN))\b/),
        class: (_r, m) => (/^(?:HVU|DAT|RLY:BD|RLY:CH)/.test(code(m)) ? "content-spam" : "policy-other"),
        reason: (_r, m) => `AOL ${code(m)}: the message or its sender was refused, not the IP`,
      },
      codeRule("hotmail-legacy", "Hotmail", /\b(SC-00[1-5]|DY-001|RP-00[1-3])\b/, HOTMAIL_CODES),
      {
        name: "microsoft-banned-ip",
        // 5.7.606–649 "banned sending IP", 5.7.511 banned sender [IP], 5.7.507 blocked by the
        // recipient's organisation, 5.7.513 customer block list, 5.7.708 traffic not accepted from this IP.
        test: either(enhanced(["5.7.", 606, 649], "5.7.507", "5.7.513", "5.7.708"), both(enhanced("5.7.511"), text(/banned sender/i))),
        class: "ip-blocklist",
        reason: (r) => `Microsoft ${r.enhanced}: sending IP banned (delisting: sender.office.com)`,
      },
      {
        name: "microsoft-ip-throttle",
        // 4.7.500–699 and 4.7.850–899: "Access denied, please try again later" while the IP is evaluated; 4.7.650 IP reputation.
        test: both(enhanced(["4.7.", 500, 699], ["4.7.", 850, 899]), text(/access denied|reputation|busy|try again later|rate limited/i)),
        class: "ip-reputation-temp",
        reason: (r) => `Microsoft ${r.enhanced}: sending IP throttled for its reputation`,
      },
      {
        name: "microsoft-s-codes",
        // S3140/S3150 "part of their network is on our block list", S3113–S3115 IP reputation throttling.
        test: text(/\((?:AS)?(S31\d\d)\)/),
        class: byPermanence,
        reason: (_r, m) => `Microsoft ${code(m)}: sending IP or its network on the block list`,
      },
      {
        name: "comcast-blocklist",
        // BL000000 … BL000111: which DNSBLs list the IP, one bit each.
        test: text(/\b(BL[01]{6})\b/),
        class: "ip-blocklist",
        reason: (_r, m) => `Comcast ${code(m)}: sending IP found on DNS blocklists`,
      },
      codeRule("cox", "Cox", /AUP#(CX[A-Z]+|CDRBL)\b/, COX_CODES),
      {
        name: "cox-ip-lists",
        // AUP#IPBL0001 … IPBL1111: which of Spamhaus ZEN, Return Path, ivmSIP and Cloudmark CSI list the IP.
        test: text(/AUP#(IPBL\d+)/),
        class: "ip-blocklist",
        reason: (_r, m) => `Cox ${code(m)}: sending IP listed on DNS blocklists`,
      },
      {
        name: "cox-url-lists",
        test: text(/\b(URLBL\d+)\b/),
        class: "content-spam",
        reason: (_r, m) => `Cox ${code(m)}: a URL in the message is on a blocklist`,
      },
      {
        name: "spectrum",
        // AUP#I-1000 IP blocked, 1100–1150 reverse DNS, 1200–1250 Cloudmark/Spamhaus listing; the rest is about senders and volume.
        test: text(/AUP#(?:In?|O)[-_ ]?(1000|11[0-5]\d|12[0-5]\d)\b/i),
        class: (_r, m) => (m?.[1]?.startsWith("11") ? "ip-no-ptr" : "ip-blocklist"),
        reason: (_r, m) => `Spectrum ${m?.[1]}: ${m?.[1]?.startsWith("11") ? "reverse DNS of the sending IP fails" : "sending IP blocked or listed"}`,
      },
      codeRule("godaddy", "GoDaddy", /\b(IB\d{3})\b/, GODADDY_CODES),
      codeRule("orange-laposte", "Orange/La Poste", /\b(?:OFR|LPN|OUK)[A-Z0-9]*_(\d{3})\b/, ORANGE_CODES),
      {
        name: "united-internet",
        // GMX, web.de, mail.com and IONOS link to their sender guidelines with the cause as `c=`.
        test: text(/(?:senderguidelines|error-messages)\?\S*\bc=(rdns|bl|pbl|dyn)\b/i),
        class: (_r, m) => (({ RDNS: "ip-no-ptr", PBL: "ip-dynamic", DYN: "ip-dynamic" }) as Record<string, ReplyClass>)[code(m)] ?? "ip-blocklist",
        reason: (_r, m) => `GMX/web.de/IONOS c=${m?.[1]}: the sending IP is refused`,
      },
      {
        name: "t-online",
        // "554 IP=192.0.2.1 - A problem occurred. (Ask your postmaster …) (BL)": T-Online refuses the connecting IP.
        test: text(/\bIP[=:]\s*\S+ - A problem occurred/i),
        class: "ip-blocklist",
        reason: "T-Online refuses the sending IP (its blocklist or its rules for unknown servers)",
      },
      {
        name: "barracuda-ess",
        // Barracuda Email Security Service names each refused recipient `(address:blocked)` when it refuses the connecting IP.
        test: text(/\(\S+@\S+:blocked\)/i),
        class: "ip-blocklist",
        reason: "Barracuda: the recipient's filter blocks the sending IP",
      },
    ],
  },
  {
    name: "receiver-dnsbl-error",
    why: "A receiver whose own DNSBL queries are refused (public resolver, over quota) rejects every sender; the reply names a blocklist, so this must precede the blocklist families.",
    rules: [
      {
        name: "query-refused",
        test: phrases(String.raw`
          open resolver
          query refused
          /returnc/
          127\.255\.255\.25\d
          excessive number of queries
          (?:dnsbl|rbl|blocklist|blacklist) (?:lookup|query|check) (?:error|fail(?:ed|ure)?|timed? ?out)
        `),
        class: "policy-other",
        reason: "the receiver's own blocklist lookups fail (its DNS resolver is refused by the list); not about the sending IP",
      },
    ],
  },
  {
    name: "greylist",
    why: "Greylisting is a temporary deferral that clears by itself; some sites implement it as a pseudo-DNSBL (grey.rbl), so it precedes the blocklist families.",
    rules: [
      {
        name: "greylisted",
        test: phrases(String.raw`
          gr[ae]y[- ]?list
          gr[ae]y\.rbl
          internal resources are temporarily unavailable
        `),
        class: "greylist",
        reason: "greylisted: the receiver accepts a retry after a few minutes",
      },
    ],
  },
  {
    name: "receiver-allowlist",
    why: "A recipient domain that only accepts listed gateways refuses every other address, a clean one too: not an IP problem another route would solve.",
    rules: [
      {
        name: "not-allowlisted",
        test: phrases(String.raw`
          not (?:in|on) (?:the |our |recipient'?s? )?(?:white|allow|safe)[ -]?list
          not (?:white|allow)[ -]?listed
        `),
        class: "policy-other",
        reason: "the recipient domain accepts mail only from its allowlisted gateways",
      },
    ],
  },
  {
    name: "domain-listing",
    why: "Domain blocklists (Spamhaus DBL, URIBL, SURBL, rhsbl) list the sender domain or a URL in the message, not the IP; they share words with IP listings, so they precede them.",
    rules: [
      {
        name: "sender-domain-listed",
        test: phrases(String.raw`
          (?:(?:mail ?from|sender'?s?|envelope(?:[- ]from)?|from:?|your e-?mail) (?:domain|address)|(?:helo|your|sending) domain) (?:\S+ )?(?:is |was |has been )?(?:black|block)?listed
          (?:sender|helo|recipient) (?:address|command)[^;]{0,100}?blocked using
          your domain has been (?:black|block)?listed
        `),
        class: "policy-other",
        reason: (r) => `sender domain listed on ${/dbl|spamhaus/i.test(r.text) ? "Spamhaus DBL" : "a domain blocklist"} (fix the domain's reputation; another route will not help)`,
      },
      {
        name: "content-domain-listed",
        test: phrases(String.raw`
          \bDBL\b
          dbl\.spamhaus
          zrd\.spamhaus
          \bHBL\b
          uribl
          surbl
          ivmuri
          rhsbl
          \buri ?bl
          (?:url|uri|link|domain)s? (?:in|within|contained in|present in|found in) (?:the |your |this )?(?:message|body|e-?mail|mail)
          (?:having|contains?) a (?:domain|url|link) (?:present |listed )?(?:in|on)\b
          \b(?:url|uri|link)s?\b${SPAN}{0,40}?(?:listed|found in|found on|blacklisted|blocklisted)
          (?:blacklisted|blocklisted|listed|spam|malicious|phishing) (?:url|uri|link|domain)s?\b
        `),
        class: (r) => (/client host|helo|sender/i.test(r.text) ? "policy-other" : "content-spam"),
        reason: (r) =>
          `a domain or URL ${/client host|helo|sender/i.test(r.text) ? "of the sender" : "in the message"} is listed on a domain blocklist (${/uribl/i.test(r.text) ? "URIBL" : /surbl/i.test(r.text) ? "SURBL" : "Spamhaus DBL"}); not the IP`,
      },
    ],
  },
  {
    name: "ip-dynamic",
    why: "Policy lists of end-user ranges (Spamhaus PBL, DUL) and 'dynamic/residential/use your ISP's relay' wordings: exactly the case of a home server, and a static route cures it.",
    rules: [
      {
        name: "spamhaus-pbl",
        // ZEN answers 127.0.0.10/11 for PBL entries.
        test: phrases(String.raw`
          \bPBL\b
          pbl\.spamhaus
          spamhaus\.org/pbl
          policy block list
          spamhaus\S*[^;]{0,80}?127\.0\.0\.1[01]\b
        `),
        class: "ip-dynamic",
        reason: "sending IP listed on Spamhaus PBL (dynamic range)",
      },
      {
        name: "dialup-lists",
        test: phrases(String.raw`
          \bDUL\b
          \bdul\.
          dynablock
          dyna\.spamrats
          spamrats dyna
          rats-dyna
          dialups?\.mail-abuse
        `),
        class: "ip-dynamic",
        reason: (r) => `sending IP listed on a dynamic-range list (${/rats/i.test(r.text) ? "SpamRATS Dyna" : /sorbs/i.test(r.text) ? "SORBS DUL" : "DUL"})`,
      },
      {
        name: "dynamic-wording",
        test: phrases(String.raw`
          \bdynamic(?:ally)?(?:[- ]assigned)?\b${SPAN}{0,25}?\b(?:ips?|ip[- ]?address(?:es)?|address(?:es)?|ranges?|pools?|hosts?|ptr|rdns|reverse|helo|ehlo|hostnames?|clients?|dns|connections?|dial)\b
          \b(?:ip|address|host|hostname|client)\b${SPAN}{0,30}\b(?:is|are|looks|appears|seems)\b${SPAN}{0,20}\bdynamic\b
          residential
          dial-?up
          \bdialin\b
          end[- ]user (?:ip|range|address|network|connection)
          consumer (?:ip|connection|broadband|grade|range|network)
          broadband (?:ip|range|connection|customer|address)
          cable[ -]?modem
          generic (?:ptr|rdns|reverse|dns|hostname|host ?name|helo|name)
          generic\s*/\s*dynamic
        `),
        class: "ip-dynamic",
        reason: "sending IP is in a dynamic or residential range",
      },
      {
        name: "use-isp-relay",
        test: phrases(String.raw`
          not authori[sz]ed to send (?:e-?mail |mail |messages )?directly
          use (?:the |your )?(?:smtp |mail |outgoing )?(?:relay|server|smarthost|mail ?server)s? (?:at|of|from|provided by) your (?:service provider|isp|internet (?:service )?provider|provider)
          use the smtp server of your isp
          use your (?:isp|provider|internet service provider)'?s? (?:smtp|mail|outgoing|relay)
          NotAuthorizedError
          (?:relay|send) (?:through|via) your (?:isp|provider)
        `),
        class: "ip-dynamic",
        reason: "receiver wants mail from this end-user address to go through the ISP's relay",
      },
    ],
  },
  {
    name: "ip-no-ptr",
    why: "Missing, generic or mismatched reverse DNS of the sending IP (RFC 7372 X.7.25); a route from an address with proper PTR cures it.",
    rules: [
      {
        name: "reverse-dns-code",
        test: enhanced("5.7.25", "4.7.25"),
        class: "ip-no-ptr",
        reason: (r) => `${r.enhanced}: reverse DNS (PTR) of the sending IP missing or not matching`,
      },
      {
        name: "reverse-dns-wording",
        test: phrases(String.raw`
          \bPTR\b
          reverse (?:dns|lookup|hostname|name|resolution|mapping|record)
          \br-?dns\b
          forward[- ]confirmed
          cannot find your (?:reverse )?hostname
          (?:can(?:no|')t|could ?n[o']t|unable to|failed to) (?:resolve|find|verify|look ?up) (?:your|the|client'?s?|sender'?s?) (?:ip|address|host ?name|reverse)
          ip name lookup failed
          unresolvable (?:relay )?host ?name
          mismatches client ip
          unknown client host ?name
          rats-noptr
          noptr\.spamrats
        `),
        class: "ip-no-ptr",
        reason: "reverse DNS (PTR) of the sending IP missing, generic or not matching",
      },
    ],
  },
  {
    name: "auth",
    why: "SPF/DKIM/DMARC failures are fixed in the sender domain's DNS or signing; their texts show the IP (SPF results), so they precede the blocklist and generic IP families.",
    rules: [
      {
        name: "auth-codes",
        // RFC 7372 X.7.20–24, X.7.26/27; Gmail X.7.30/32/40; Microsoft 5.7.509/515 (DMARC, authentication level).
        test: enhanced(["5.7.", 20, 24], ["4.7.", 20, 24], "5.7.26", "4.7.26", "5.7.27", "4.7.27", "5.7.30", "4.7.30", "5.7.32", "4.7.32", "4.7.40", "5.7.509", "5.7.515"),
        class: "auth-spf-dkim-dmarc",
        reason: (r) => `${r.enhanced}: the sender domain failed SPF/DKIM/DMARC checks`,
      },
      {
        name: "auth-wording",
        test: phrases(String.raw`
          \bDMARC\b
          \bSPF\b${SPAN}{0,60}?(?:fail|did not pass|not pass|invalid|violation|not (?:authori[sz]ed|allowed|permitted|designated))
          (?:fail|not pass|invalid|not (?:permitted|authori[sz]ed|allowed|designated|listed|included|in))${SPAN}{0,60}?\bSPF\b
          \bSPF (?:record|check|validation|policy|authentication)
          permitted by domain of sender
          (?:permitted|authori[sz]ed|allowed) to send (?:e-?)?mail (?:for|on behalf of)\b
          sender policy framework
          openspf\.
          spf\.pobox
          per (?:its|it'?s) spf
          \bDKIM\b${SPAN}{0,40}?(?:fail|did not pass|not pass|invalid|broken)
          unauthenticated (?:e-?mail|mail|message)
          sender is unauthenticated
          authenticate with (?:either )?(?:spf|dkim)
          fails? to pass (?:spf|dkim|authentication)
          does not have authentication information
          domain authentication fail
          aligned with either the authenticated
        `),
        class: "auth-spf-dkim-dmarc",
        reason: (r) => (/dmarc/i.test(r.text) ? "the sender domain's DMARC policy rejected the message (SPF/DKIM not aligned)" : "SPF/DKIM of the sender domain did not pass for this message"),
      },
    ],
  },
  {
    name: "ip-blocklist-named",
    why: "A named IP blocklist (Spamhaus SBL/XBL/ZEN, SpamCop, SORBS, Barracuda, Cloudmark, Proofpoint, UCEPROTECT, …) or Postfix/sendmail/Exim RBL wording: the IP is listed, whatever the code (4xx too).",
    rules: [
      {
        name: "known-list",
        test: phrases(String.raw`
          spamhaus
          spamcop
          \bsorbs
          barracuda(?:central| reputation)
          \bBRBL\b
          csi\.cloudmark
          cloudmark (?:csi|sender intelligence|poor reputation)
          \bcm-csi
          ipcheck\.proofpoint
          proofpoint\.com/dnsbl
          dnsbl-lookup
          uceprotect
          abuseat\.org
          \bCBL\b
          \bpsbl\b
          spamrats
          rats-spam
          hostkarma
          junkemailfilter
          mailspike
          senderscore
          invaluement
          ivmsip
          trend ?micro (?:rbl|email reputation|ers|network)
          mail-abuse\.(?:com|org)
          backscatterer
          blocklist\.de
          dnsbl\.manitu
          dronebl
          abusix
          nerd\.dk
          spamrl\.com
          \b0spam
          gbudb
        `),
        class: "ip-blocklist",
        reason: (r) => `sending IP listed on ${listName(r)}`,
      },
      {
        name: "rbl-wording",
        // Postfix "Client host [IP] blocked using ZONE", sendmail "IP listed at ZONE", Exim "is in a black list at ZONE".
        test: phrases(String.raw`
          blocked using \S+
          blocked by (?:[a-z0-9-]+\.)+[a-z]{2,}\b
          \b(?:dnsbl|rbl|dnsrbl)\b
          real-?time (?:block|black)(?:ing)? ?list
          realtime blackhole
          \blisted (?:at|in|on|by)(?: the)?(?: lookup site)?\s+'?(?:https?://)?[a-z0-9-]+\.[a-z0-9.-]+
          is in (?:a|an|the) (?:black ?list|block ?list)
          found on one or more
          ${IP}\]?\)?\s+(?:is\s+)?(?:currently\s+)?(?:black|block)?listed
        `),
        class: "ip-blocklist",
        reason: (r) => `sending IP listed on ${listName(r)}`,
      },
    ],
  },
  {
    name: "ip-reputation",
    why: "Providers refuse or throttle an IP for its reputation (Gmail 'unsolicited mail originating from your IP', Yahoo complaints, 'poor reputation'); 4xx is throttling, 5xx a block.",
    rules: [
      {
        name: "reputation-wording",
        test: phrases(String.raw`
          unusual (?:rate|amount|volume) of (?:unsolicited )?mail originating from your (?:ip|network)
          unsolicited mail originating from your ip
          (?:low|poor|bad|negative) reputation of (?:the |your )?(?:sending )?(?:ip|mta|server|host|network)
          (?:ip|mta'?s?|server'?s?|host'?s?|network)(?: address)?'?s? (?:poor|bad|low|negative) reputation
          \b(?:ip|ip address|mta|host|server)\b${SPAN}{0,30}\b(?:has|have|with) (?:a )?(?:very )?(?:poor|bad|low|negative|suspicious) (?:e-?mail )?reputation
          \bip reputation
          due to (?:the )?(?:ip|sender|sending ip) reputation
          poor reputation sender
          poor email reputation score
          none/bad reputation
          extreme bad ip profile
          suspicious activity (?:has been )?detected on (?:the|your) ip
        `),
        class: byPermanence,
        reason: (r) => (isTemporary(r) ? "sending IP throttled for its reputation" : "sending IP refused for its reputation"),
      },
      {
        name: "complaints-and-spam-source",
        test: phrases(String.raw`
          deferred due to (?:unexpected volume or )?user complaints
          deferred due to unexpected volume
          (?:messages?|mail|e-?mails?|connections?) (?:will not be accepted )?from (?:ip )?[\[(]?${IP}[\])]?,? (?:(?:will be|are|is|has been|have been|was|were) )?(?:temporarily |permanently )?(?:deferred|rejected|blocked|refused|not accepted|not allowed)
          currently sending spam
          (?:known )?spam source
          source of spam
          \bip\b${SPAN}{0,20}identified as (?:a )?spam
          too many spams? from your ip
          you are sending spam
        `),
        class: byPermanence,
        reason: (r) => (isTemporary(r) ? "sending IP deferred after spam complaints or unusual volume" : "sending IP refused as a source of spam"),
      },
    ],
  },
  {
    name: "rate-limit",
    why: "Rate and connection limits clear by themselves and apply to any sender; they come before the generic IP wording, which their texts ('from your IP', 'Blocked IP') would otherwise hit.",
    rules: [
      {
        name: "rate-wording",
        test: phrases(String.raw`
          rate[- ]?limit
          rate[- ]controlled
          too many (?:connections|concurrent|sessions|messages|mails|e-?mails|recipients|simultaneous|smtp|errors)
          too much mail
          connection (?:rate|frequency|count) (?:limit|exceeded)
          frequency limited
          throttl
          slow(?:er| down)
          receiving mail (?:at a rate|too quickly)
          (?:message|sending|hourly|daily|connection) (?:rate|limit|quota) (?:exceeded|reached)
          exceeded (?:the )?(?:\w+ )?(?:message|sending|hourly|daily|connection) (?:rate|limit|quota)
          queue quota
          max(?:imum)? (?:number of )?(?:messages|connections|recipients) per
          limits? for how many messages
          excessive (?:volume|number of)
          trop de connexions
          session limit
          concurrency limit
          peak smtp
        `),
        class: "rate-limit",
        reason: "rate or connection limit reached; retry later",
      },
    ],
  },
  {
    name: "sender-policy",
    why: "Refusals of the sender address or domain (blocked senders, anti-spoofing, a sender domain without DNS): another IP sends the same sender, so no re-route; they precede the generic IP wording ('… blocked').",
    rules: [
      {
        name: "sender-refused",
        test: phrases(String.raw`
          (?:sender|envelope[- ]?(?:from|sender)|mail[- ]?from|return[- ]path|your e-?mail)[ -](?:address|domain)\b${SPAN}{0,60}?\b(?:black[- ]?listed|block[- ]?listed|blocked|banned|rejected|denied|refused|not (?:allowed|accepted|permitted)|invalid|not found|does not exist|unknown|unresolv)
          \bsender (?:address )?(?:rejected|denied|blocked|refused|not allowed|verify failed)
          badmailfrom
          blocked senders?
          envelope blocked
          spoof
          invalid dns (?:mx|a)\b
          domain (?:not found|does not exist)
          unresolvable (?:rfc\.?5321 )?(?:from )?domain
          null mx
          emetteur invalide
          invalid sender
        `),
        class: "policy-other",
        reason: "the sender address or domain is refused (blocked sender, spoofing rule, or a sender domain without valid DNS)",
      },
    ],
  },
  {
    name: "ip-blocked-generic",
    why: "Receivers' own words for refusing the connecting IP, host, network or country ('IP address blacklisted by recipient', 'Client host rejected: Access denied', 'Host network not allowed'); last of the IP families because the words are broad.",
    rules: [
      {
        name: "ip-refused",
        test: phrases(String.raw`
          \b(?:ip|ip[- ]address|ip range|netblock|subnet)\b\s*(?:\(?\[?${IP}\]?\)?\s*)?(?:address\s*)?(?:is |are |has been |have been |was |were )?(?:currently |temporarily |permanently )?(?:black[- ]?listed|block[- ]?listed|blocked|banned|denied|refused|rejected|not (?:allowed|permitted|accepted|welcome))
          (?:blocked|banned|refused|rejected|denied)\b${SPAN}{0,12}\b(?:your|the|sending|this|bad) (?:ip|ip address)\b
          bad (?:sender )?ip\b
          \bblocked ip\b
          access (?:from|denied (?:for|to)) (?:your )?(?:ip|network)
          not currently accepting mail from your ip
        `),
        class: byPermanence,
        reason: (r) => `the receiver ${isTemporary(r) ? "temporarily blocks" : "blocks"} the sending IP`,
      },
      {
        name: "host-refused",
        test: phrases(String.raw`
          client host rejected: access denied
          \b(?:your|sending|sender'?s?|connecting|source|originating) (?:mail )?(?:host|server|network|mta|connection|ip)\b${SPAN}{0,40}?\b(?:is |are |has been |was )?(?:black[- ]?listed|block[- ]?listed|blocked|banned|denied|refused|rejected|not (?:allowed|permitted|accepted))
          you are not allowed to connect
          your access to (?:submit messages to )?this (?:e-?mail|mail) system has been rejected
          connection rejected by policy
          host network,? not allowed
          not accepting (?:mail|connections|e-?mail) from (?:your|this) (?:ip|host|network|server)
          esmtp not accepting connections
        `),
        class: byPermanence,
        reason: (r) => `the receiver ${isTemporary(r) ? "temporarily refuses" : "refuses"} connections from the sending host or its network`,
      },
      {
        name: "own-blocklist",
        test: phrases(String.raw`
          network is on (?:our|the) block ?list
          \b(?:on|in) (?:our|the|a|my) (?:private )?(?:black|block|deny|ban)[ -]?list
          (?:black|block)[ -]?listed (?:by|at|in|on) (?:[a-z0-9-]+\.)+[a-z]{2,}
          rejected due to (?:a )?listing
        `),
        class: byPermanence,
        reason: "the sending IP is on the receiver's own blocklist",
      },
      {
        name: "country-block",
        test: phrases(String.raw`
          geo-?ip
          geographic(?:al)? location
          (?:your|sender'?s?) country
          country (?:is )?not allowed
        `),
        class: "ip-blocklist",
        reason: "the receiver refuses mail from the sending IP's country",
      },
    ],
  },
  {
    name: "mailbox-full",
    why: "Quota wording before the recipient family: some receivers send 'recipient overquota' with 5.1.1.",
    rules: [
      {
        name: "quota",
        test: either(
          phrases(String.raw`
            over ?quota
            quota (?:exceeded|full)
            (?:mailbox|inbox|mail ?box)(?: size)?(?: limit)? (?:is )?(?:exceeded|full)
            mailbox full
            exceeded (?:its |the )?(?:storage|disk|mailbox)
            storage (?:allocation|limit)
            out of storage
            boite (?:du destinataire )?pleine
          `),
          enhanced("5.2.2", "4.2.2"),
        ),
        class: "mailbox-full",
        reason: "the recipient's mailbox is full",
      },
    ],
  },
  {
    name: "message-size",
    why: "Size limits (X.2.3, X.3.4): the message, not the route.",
    rules: [
      {
        name: "size",
        test: either(
          phrases(String.raw`
            (?:message|mail|e-?mail|data)\b${SPAN}{0,30}(?:size|too (?:big|large|long))
            size (?:limit|exceed)
            exceeds? (?:the )?(?:maximum|max|fixed)
            message too (?:big|large)
            recipsizelimit
            taille limite
          `),
          enhanced("5.2.3", "5.3.4", "4.3.4", "4.2.3"),
        ),
        class: "message-size",
        reason: "the message is larger than the receiver accepts",
      },
    ],
  },
  {
    name: "recipient-policy",
    why: "Recipient-side restrictions (groups open to internal senders only, transport rules): policy, not the IP; before relay-denied because Exchange says 'authentication required' for them.",
    rules: [
      {
        name: "recipient-restriction",
        test: phrases(String.raw`
          RESOLVER\.RST\.
          delivery not authori[sz]ed
          not authori[sz]ed to send to
          not (?:in|on) (?:the )?allowed[- ]senders
          restricted to (?:internal|authenticated)
          sender was not authenticated (?:by|for)
          policy that prohibited
          (?:transport|mail flow) rule
        `),
        class: "policy-other",
        reason: "the recipient accepts mail only from authorised or internal senders",
      },
    ],
  },
  {
    name: "relay-denied",
    why: "The host is not an MX for the recipient domain, or wants SMTP AUTH: a routing or MX problem, not the sending IP.",
    rules: [
      {
        name: "relay-wording",
        test: phrases(String.raw`
          relay(?:ing)? (?:access )?(?:is )?(?:denied|not (?:permitted|allowed|authori[sz]ed)|prohibited|refused|disallowed)
          unable to relay
          (?:not|isn'?t) (?:configured|allowed|permitted) to relay
          \bas a relay\b
          we do not relay
          open relay (?:is )?not allowed
          no relaying
          \bauthentication (?:is )?required\b
          client (?:was )?not authenticated
          must (?:be )?authenticated?
          smtp auth(?:entication)? (?:is )?required
        `),
        class: "relay-denied",
        reason: "relaying denied: the host does not accept mail for this recipient domain without authentication (check the MX)",
      },
      {
        name: "auth-required-code",
        test: (r) => r.code === 530 || r.enhanced === "5.7.57",
        class: "relay-denied",
        reason: "the host requires SMTP authentication before accepting mail",
      },
    ],
  },
  {
    name: "recipient",
    why: "Unknown, disabled or locked recipients (X.1.1, X.1.10, X.1.6, X.2.1 and wordings).",
    rules: [
      {
        name: "recipient-wording",
        test: phrases(String.raw`
          user unknown
          unknown user
          no such (?:user|mailbox|recipient|address|account)
          (?:user|mailbox|recipient|address|account)\b${SPAN}{0,40}?(?:does not exist|doesn'?t exist|not found|unknown|unavailable|disabled|inactive|suspended|deactivated|expired|locked|no longer (?:valid|active|exists?))
          invalid (?:recipient|mailbox|user)
          recipient (?:rejected|not found|unknown|invalid)
          (?:doesn'?t|does not) have an? \S+ account
          unrouteable address
          recipient address rejected: (?:access denied|undeliverable)
          no mailbox here
          unknown or illegal alias
          no longer on server
        `),
        class: "recipient-unknown",
        reason: "the recipient address does not exist or is disabled",
      },
      {
        name: "recipient-codes",
        test: enhanced("5.1.1", "5.1.10", "5.1.6", "5.2.1", "4.1.1"),
        class: "recipient-unknown",
        reason: (r) => `${r.enhanced}: the recipient address does not exist or is disabled`,
      },
    ],
  },
  {
    name: "message-format",
    why: "Header and syntax faults of the message (RFC 5322): fixed in the sending software, on any route.",
    rules: [
      {
        name: "rfc-violation",
        test: phrases(String.raw`
          not rfc ?\d* ?compliant
          rfc ?5322
          rfc ?2822
          multiple addresses in from
          missing a valid
          malformed
          bare (?:lf|linefeed|newline)
          stray linefeeds
          line too long
          encoded-word syntax
        `),
        class: "other",
        reason: "the message's headers or format violate RFC 5322",
      },
    ],
  },
  {
    name: "content",
    why: "Spam, virus and content filters judge the message: the same message through another IP would be judged alike. Late, because 'spam' appears in IP refusals too.",
    rules: [
      {
        name: "content-wording",
        test: phrases(String.raw`
          \bspam
          junk ?mail
          \bbulk (?:mail|e-?mail)
          unsolicited
          likely suspicious
          nature of the content
          links within
          reputation of the sending domain
          domain reputation
          message content
          content (?:rejected|filter|policy|examination)
          \bvirus
          malware
          phish
          (?:banned|illegal|forbidden|prohibited) (?:attachment|content|file)
          attachment${SPAN}{0,30}(?:not allowed|forbidden|blocked|prohibited)
          message filtered
          potential security issue
        `),
        class: "content-spam",
        reason: "the message was judged as spam or unsafe content",
      },
    ],
  },
  {
    name: "fallback",
    why: "Nothing specific matched: a policy code (X.7.x, sender X.1.7/X.1.8) or a generic policy wording gives policy-other; nothing here re-routes.",
    rules: [
      {
        name: "policy",
        test: either(
          enhanced(["5.7.", 0, 999], ["4.7.", 0, 999], "5.1.7", "5.1.8", "4.1.8"),
          phrases(String.raw`
            polic(?:y|ies)
            administrative(?:ly)? prohibit
            prohibited
            not allowed
            not permitted
            \bblocked\b
            \bdenied\b
            tls (?:is )?required
            starttls
            helo command rejected
            fully[- ]qualified
          `),
        ),
        class: "policy-other",
        reason: (r) => (r.enhanced ? `${r.enhanced}: refused by the receiver's policy` : "refused by the receiver's policy"),
      },
    ],
  },
];

/**
 * Classify `reply` (raw multi-line text, or its parts). `families` defaults to the full table;
 * tests pass a reduced table to measure what each family contributes.
 */
export function classifyReply(reply: SmtpReplyInput, families: readonly ReplyRuleFamily[] = REPLY_RULE_FAMILIES): ReplyVerdict {
  const parsed = parseReply(reply);
  const temporary = isTemporary(parsed);
  for (const family of families) {
    for (const rule of family.rules) {
      const m = rule.test(parsed);
      if (!m) continue;
      const match = typeof m === "object" ? m : undefined;
      const cls = typeof rule.class === "function" ? rule.class(parsed, match) : rule.class;
      const reason = typeof rule.reason === "function" ? rule.reason(parsed, match) : rule.reason;
      return { class: cls, reroute: REROUTE_CLASSES.has(cls), temporary, reason, rule: `${family.name}/${rule.name}` };
    }
  }
  return { class: "other", reroute: false, temporary, reason: "no known cause in the reply", rule: "none" };
}

/** A reply with its known answer, e.g. a fixture row. */
export interface LabelledReply {
  reply: SmtpReplyInput;
  reroute: boolean;
}

/** Confusion counts for `reroute` and the precision and recall they give. */
export interface RerouteScore {
  tp: number;
  fp: number;
  fn: number;
  tn: number;
  /** tp / (tp + fp); 1 when nothing was predicted. */
  precision: number;
  /** tp / (tp + fn); 1 when nothing was to be found. */
  recall: number;
}

/** Score the `reroute` decision of `classify` (default: `classifyReply`) on labelled replies. */
export function scoreReroute(rows: readonly LabelledReply[], classify: (reply: SmtpReplyInput) => ReplyVerdict = (r) => classifyReply(r)): RerouteScore {
  let tp = 0;
  let fp = 0;
  let fn = 0;
  let tn = 0;
  for (const row of rows) {
    const predicted = classify(row.reply).reroute;
    if (predicted && row.reroute) tp++;
    else if (predicted) fp++;
    else if (row.reroute) fn++;
    else tn++;
  }
  return { tp, fp, fn, tn, precision: tp + fp === 0 ? 1 : tp / (tp + fp), recall: tp + fn === 0 ? 1 : tp / (tp + fn) };
}
