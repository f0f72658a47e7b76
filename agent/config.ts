/**
 * config — the agent's configuration: its YAML schema, the embedded defaults that work with no
 * file at all, and where the file is looked for (`--config`, `$HOMERELAY_CONFIG`, `./homerelay.yaml`).
 */
import { existsSync } from "node:fs";
import { isIP } from "node:net";
import { hostname as osHostname } from "node:os";
import { resolve } from "node:path";
import * as z from "zod";
import { loadConfigFile, parseConfigText } from "../shared/config-file.js";
import { senderPattern, smtpUpstreamFields } from "../shared/config-fields.js";
import { isCidr, isLoopback, parseHostPort, type HostPort } from "../shared/net.js";
import { isDnsName } from "./dkim/dkim-record.js";
import { isPasswordHash } from "./smtpd/password.js";

const hostnamePattern = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const domain = z.string().regex(hostnamePattern, "expected a domain name such as example.net").transform((d) => d.toLowerCase());
const listenAddress = z.string().refine((s) => parseHostPort(s) !== null, "expected host:port, e.g. 127.0.0.1:2525 or [::1]:25");
const cidr = z.string().refine(isCidr, "expected an address range such as 192.0.2.0/24 or ::1/128");
const bytes = z.number().int().positive();
/**
 * Seconds that set a timer: a Node timer waits at most 2^31-1 ms, and a longer one fires at once,
 * over and over (a CPU spinning idle). Durations only compared with clocks may be longer.
 */
const MAX_TIMER_SECONDS = 2_147_483;
const seconds = z.number().positive().max(MAX_TIMER_SECONDS, `expected at most ${MAX_TIMER_SECONDS} seconds (about 24 days)`);
const longSeconds = z.number().positive();

const listenerSchema = z
  .object({
    /** `submission`: trusted networks and AUTH may relay. `mx`: strangers, local domains only. */
    role: z.enum(["submission", "mx"]),
    listen: listenAddress,
    /** `starttls` offers STARTTLS on a plain connection; `implicit` is TLS from the first byte (port 465). */
    tls: z.enum(["starttls", "implicit", "none"]).default("starttls"),
    /** Pause before the greeting to catch clients that talk first; default 100 ms on mx, 0 on submission. */
    greetingDelay: z.number().int().min(0).max(30000).optional(),
    /** Refuse mail from clients that have not authenticated. Default: on for submission off loopback. */
    requireAuth: z.boolean().optional(),
  })
  .strict();

const userSchema = z
  .object({
    /** scrypt hash from `homerelay hash-password`. */
    password: z.string().refine(isPasswordHash, "expected a hash made by `homerelay hash-password`").optional(),
    /** Shared secret for CRAM-MD5, for clients that use it (the secret is stored in clear). */
    cramMd5Secret: z.string().min(1).optional(),
    /** Envelope senders this account may use (Postfix smtpd_sender_login_maps). Default: <name>@each local domain. */
    senders: z.array(senderPattern).optional(),
  })
  .strict()
  .refine((u) => u.password !== undefined || u.cramMd5Secret !== undefined, "an account needs password or cramMd5Secret");

const limitsSchema = z
  .object({
    /** Postfix message_size_limit. */
    messageSize: bytes.default(25 * 1024 * 1024),
    /** Postfix smtpd_recipient_limit. */
    recipients: z.number().int().positive().default(1000),
    /** Longest line in a message, without CRLF (RFC 5322: 998). */
    lineLength: z.number().int().min(78).default(998),
    /** Longest SMTP command line. */
    commandLength: z.number().int().min(512).default(4096),
    /** Concurrent connections from one client address (Postfix smtpd_client_connection_count_limit). */
    clientsPerAddress: z.number().int().positive().default(50),
    /** Concurrent connections in total (Postfix default_process_limit). */
    clients: z.number().int().positive().default(200),
    /** New connections per client address per minute, 0 = unlimited (smtpd_client_connection_rate_limit). */
    connectionRate: z.number().int().min(0).default(0),
    /** Commands per connection per minute before the client is told to slow down, 0 = unlimited. */
    commandRate: z.number().int().min(0).default(600),
    /** Idle time allowed between client commands or data (Postfix smtpd_timeout). */
    idleTimeout: seconds.default(300),
    /** Time allowed for one whole DATA transfer. */
    dataTimeout: seconds.default(600),
    /** Refuse MAIL FROM while the spool's file system has less free space (Postfix queue_minfree). */
    queueMinFree: bytes.optional(),
    /** Mail loop detection (Postfix hopcount_limit). */
    hopCount: z.number().int().positive().default(50),
  })
  .strict();

const secondsOrZero = z.number().min(0);

/**
 * Where routes may send mail: `mx`, `smarthost:<name>`, `local`, `hold`, `reject`, `cloud`, or
 * `auto`: direct to MX unless the receiver is learned to refuse the home address, then the fallback.
 */
const routeName = z
  .string()
  .regex(/^(mx|auto|local|hold|reject|cloud|smarthost:[A-Za-z0-9._-]+)$/, "expected mx, auto, smarthost:<name>, local, hold, reject or cloud");

const routeSchema = z
  .object({
    /** `example.org` (exact), `.example.org` (subdomains, as in mailertable/transport), or `*`. */
    match: z.string().regex(/^(\*|\.?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$/, "expected a domain, .domain for subdomains, or *"),
    /** Only for envelope senders matching this pattern (sender-dependent relay), e.g. `*@work.example`. */
    sender: senderPattern.optional(),
    route: routeName,
    /** Routes to try in turn when this one fails temporarily (Postfix smtp_fallback_relay). */
    fallback: z.array(routeName).default([]),
    /** The bounce text of a `reject` route. */
    text: z.string().max(200).optional(),
  })
  .strict();

const smarthostSchema = z.object(smtpUpstreamFields).strict();

const dnsSchema = z
  .object({
    /** Resolver addresses, `ip` or `ip:port`; default: the system resolver. */
    servers: z.array(z.string().refine((s) => isIP(s) !== 0 || parseHostPort(s) !== null, "expected an IP address or ip:port")).min(1).optional(),
    timeout: seconds.default(5),
  })
  .strict();

const deliverySchema = z
  .object({
    /** Port of direct-to-MX delivery (25; tests use others). */
    mxPort: z.number().int().min(1).max(65535).default(25),
    /** Which MX addresses to try first (Postfix smtp_address_preference); home IPv6 rarely has a PTR. */
    addressPreference: z.enum(["ipv4", "ipv6", "any"]).default("ipv4"),
    /** Concurrent deliveries to one destination (Postfix default_destination_concurrency_limit). */
    destinationConcurrency: z.number().int().positive().default(20),
    /** Concurrent deliveries in total. */
    concurrency: z.number().int().positive().default(100),
    connectTimeout: seconds.default(30),
    /** Time allowed for each SMTP reply (Postfix smtp_*_timeout, simplified). */
    commandTimeout: seconds.default(300),
    /** TLS policy of direct-to-MX delivery: `may` (opportunistic), `encrypt`, `verify`. */
    tlsPolicy: z.enum(["may", "encrypt", "verify"]).default("may"),
    /** A PEM file of CAs trusted for the `verify` policy, besides the system store (Postfix smtp_tls_CAfile). */
    ca: z.string().min(1).optional(),
    /** Per-domain TLS policy overrides (Postfix smtp_tls_policy_maps). */
    tlsPolicies: z.record(domain, z.enum(["may", "encrypt", "verify"])).default({}),
    /** MTA-STS (RFC 8461): honour the TLS policies receivers publish; the policy host's port is 443 (tests use others). */
    mtaSts: z
      .object({ enabled: z.boolean().default(true), port: z.number().int().min(1).max(65535).default(443) })
      .strict()
      .default({ enabled: true, port: 443 }),
    /** How long a receiver that refused the home address gets mail by the fallback route before direct delivery is tried again (default 30 days). */
    learnedRouteExpiry: longSeconds.default(30 * 86400),
  })
  .strict();

const queueSchema = z
  .object({
    /** Seconds before the first retry (Postfix minimal_backoff_time). */
    minBackoff: seconds.default(300),
    /** Upper bound of the doubling retry interval (maximal_backoff_time). */
    maxBackoff: seconds.default(4000),
    /** Give up and bounce after this many seconds (maximal_queue_lifetime, 5 days). */
    lifetime: longSeconds.default(5 * 86400),
    /** Warn the sender once after this many seconds undelivered; 0 = never (delay_warning_time, 4 h). */
    delayWarning: secondsOrZero.default(4 * 3600),
    /** How often deferred/ is scanned for messages whose retry time has come (queue_run_delay). */
    scanInterval: seconds.default(60),
    /** Send postmaster a copy of undeliverable bounces (never bounce a bounce). */
    notifyPostmaster: z.boolean().default(true),
  })
  .strict();

const cloudSchema = z
  .object({
    /** The cloud half's base URL; `POST {url}/v1/messages`. HTTPS, except to a loopback host. */
    url: z
      .string()
      .superRefine((u, ctx) => {
        const url = urlOf(u);
        if (url === null || !/^https?:$/.test(url.protocol)) ctx.addIssue({ code: "custom", message: "expected a URL such as https://relay.example.net" });
        else if (url.search !== "" || url.hash !== "") ctx.addIssue({ code: "custom", message: "the URL may not have a query or fragment (the cloud refuses any query string)" });
        else if (url.username !== "" || url.password !== "") ctx.addIssue({ code: "custom", message: "the URL may not carry credentials: the agent signs its requests with keyFile" });
      })
      .transform((u) => u.replace(/\/+$/, "")),
    /** The key's id in the cloud's `keys:` list. */
    keyId: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "expected a key id of letters, digits, . _ - (as given to homerelay keygen --id)"),
    /** The Ed25519 private key (PKCS#8 PEM from `homerelay keygen`); others must not read it (checked at start). */
    keyFile: z.string().min(1),
    /** Seconds allowed for one request, the cloud's onward relay included. */
    timeout: seconds.default(60),
  })
  .strict();

const dkimSchema = z
  .object({
    /** The signing key of each sender domain (its subdomains too): `homerelay dkim keygen` makes one. */
    domains: z.record(
      domain,
      z
        .object({
          selector: z.string().refine(isDnsName, "expected a selector of letters, digits and - (labels separated by dots)"),
          /** RSA private key, PEM; others must not read it (checked at start). */
          keyFile: z.string().min(1),
        })
        .strict(),
    ),
  })
  .strict();

/** A bearer token as RFC 6750 allows it (b64token); long enough that it cannot be guessed. */
const bearerToken = z.string().regex(/^[A-Za-z0-9._~+/-]{16,}=*$/, "expected a token of at least 16 letters, digits and - . _ ~ + / (e.g. openssl rand -base64 32)");

const httpTokenSchema = z
  .object({
    /** The name in log lines (`token=NAME`); default `token-<position>`. */
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "expected a name of letters, digits, . _ -").optional(),
    /** The token itself (kept in memory only as its SHA-256). */
    token: bearerToken.optional(),
    /** Or its SHA-256 only: `printf %s "$TOKEN" | sha256sum`. */
    hash: z.string().regex(/^sha256:[0-9a-f]{64}$/i, "expected sha256:<64 hex digits> (printf %s \"$TOKEN\" | sha256sum)").optional(),
    /** Or a file holding it (mode 0600), made with a new token on first start when missing. */
    file: z.string().min(1).optional(),
    /** Envelope senders and header From: addresses this token may use. Default: *@<each local domain>. */
    senders: z.array(senderPattern).optional(),
    /** May send with the null sender <> (bounces): off unless granted. */
    nullSender: z.boolean().default(false),
  })
  .strict()
  .refine((t) => [t.token, t.hash, t.file].filter((v) => v !== undefined).length === 1, "give exactly one of token, hash or file");

/** Where the API listens by default, and the embedded defaults' token file under the spool (made on first start). */
const EMBEDDED_HTTP = { listen: "127.0.0.1:8025", tokenFile: "private/http-token" };

const httpSchema = z
  .object({
    /** The local submission API; plain HTTP, so keep it on loopback or behind a TLS proxy. */
    listen: listenAddress.default(EMBEDDED_HTTP.listen),
    tokens: z.array(httpTokenSchema).default([]),
  })
  .strict()
  .superRefine((h, ctx) => {
    const names = new Set<string>();
    h.tokens.forEach((t, i) => {
      const name = t.name ?? `token-${i + 1}`;
      if (names.has(name)) ctx.addIssue({ code: "custom", path: ["tokens", i, "name"], message: `token name ${name} is used twice` });
      names.add(name);
    });
  });

const doctorSchema = z
  .object({
    /** DNS blocklists the public address is looked up in (RFC 5782 zones). */
    dnsbl: z.array(domain).default(["zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net"]),
    /** A well-known MX to try port 25 with: does this line let outbound SMTP through? */
    port25: z.string().refine((s) => parseHostPort(s) !== null, "expected host:port, e.g. gmail-smtp-in.l.google.com:25").default("gmail-smtp-in.l.google.com:25"),
    /** Seconds allowed for each probe (the port 25 connection and greeting, each answer of the cloud). */
    timeout: seconds.default(10),
    /** Sender domains whose MX, SPF, DKIM and DMARC are checked; default: the local domains but localhost, and dkim.domains. */
    domains: z.array(domain).optional(),
    /** The DKIM selector to look for under sender domains that dkim.domains does not list. */
    dkimSelector: z.string().regex(hostnamePattern, "expected a selector such as mail or 2024a").optional(),
    /** Seconds between the agent's questions to the cloud about its public address (publicAddress auto). */
    watchInterval: seconds.default(300),
  })
  .strict();

const dyndnsSchema = z
  .object({
    /** The provider's update server, spoken to with the dyndns2 protocol (`GET {server}/nic/update?hostname=…&myip=…`). */
    server: z
      .string()
      .refine((u) => /^https?:$/.test(urlOf(u)?.protocol ?? "") && urlOf(u)!.search === "", "expected a URL such as https://members.dyndns.org, without a query")
      .transform((u) => u.replace(/\/+$/, "")),
    /** The name to keep on the current public address; default: hostname. */
    hostname: domain.optional(),
    user: z.string().min(1),
    /** A file holding the password or update key; others must not read it (checked at start). */
    passwordFile: z.string().min(1),
  })
  .strict();

const configSchema = z
  .object({
    hostname: domain.optional(),
    spool: z.string().min(1).default("./var/spool"),
    mailboxes: z.string().min(1).default("./var/mail"),
    aliases: z.string().min(1).optional(),
    listeners: z.array(listenerSchema).min(1).default([{ role: "submission", listen: "127.0.0.1:2525", tls: "starttls" }]),
    trustedNetworks: z.array(cidr).default(["127.0.0.0/8", "::1/128"]),
    localDomains: z.array(domain).min(1, "expected at least one local domain (postmaster must have a home)").optional(),
    tls: z.object({ cert: z.string().min(1), key: z.string().min(1) }).strict().optional(),
    users: z.record(z.string().regex(/^[a-z0-9._-]{1,64}$/i, "expected an account name of letters, digits, . _ -"), userSchema).default({}),
    limits: limitsSchema.default(limitsSchema.parse({})),
    /** SMTP intake processes (node:cluster), sharing the listeners; the queue manager runs once, in the main process. */
    intakeProcesses: z.number().int().min(1).max(64).default(1),
    dns: dnsSchema.default(dnsSchema.parse({})),
    delivery: deliverySchema.default(deliverySchema.parse({})),
    queue: queueSchema.default(queueSchema.parse({})),
    smarthosts: z.record(z.string().regex(/^[A-Za-z0-9._-]+$/, "expected a name of letters, digits, . _ -"), smarthostSchema).default({}),
    routes: z.array(routeSchema).default([]),
    /** The cloud half that `cloud` routes send to. */
    cloud: cloudSchema.optional(),
    /** DKIM-sign mail leaving by mx, smarthost and cloud routes. */
    dkim: dkimSchema.optional(),
    /** The local HTTP submission API (POST /v1/messages); off unless configured (on in the embedded defaults). */
    http: httpSchema.optional(),
    /** The address receivers see: `auto` (the default with a cloud) asks the cloud's GET /v1/whoami; or a fixed IP address. */
    publicAddress: z.string().refine((a) => a === "auto" || isIP(a) !== 0, "expected auto or an IP address such as 203.0.113.7").optional(),
    /** What `homerelay doctor` checks, and how often the agent asks for its public address. */
    doctor: doctorSchema.default(doctorSchema.parse({})),
    /** Keep a DynDNS name on the public address the cloud sees (dyndns2 update protocol). */
    dyndns: dyndnsSchema.optional(),
    log: z
      .object({ format: z.enum(["text", "json"]).default("text"), level: z.enum(["debug", "info", "warn", "error"]).default("info") })
      .strict()
      .default({ format: "text", level: "info" }),
  })
  .strict()
  .superRefine((c, ctx) => {
    c.listeners.forEach((l, i) => {
      if (l.role === "mx" && l.requireAuth) {
        ctx.addIssue({ code: "custom", path: ["listeners", i, "requireAuth"], message: "an mx listener cannot require AUTH (other servers never authenticate)" });
      }
    });
    if (c.cloud !== undefined && !cloudUrlIsSafe(c.cloud.url)) {
      ctx.addIssue({ code: "custom", path: ["cloud", "url"], message: "the cloud must be reached over https:// (plain http:// only to a loopback host)" });
    }
    if (c.publicAddress === "auto" && c.cloud === undefined) {
      ctx.addIssue({ code: "custom", path: ["publicAddress"], message: "auto asks the cloud (GET /v1/whoami), so it needs a cloud: section; or give the address" });
    }
    if (c.dyndns !== undefined && !cloudUrlIsSafe(c.dyndns.server)) {
      ctx.addIssue({ code: "custom", path: ["dyndns", "server"], message: "the update server must be reached over https:// (plain http:// only to a loopback host): the password goes with every update" });
    }
    if (c.dyndns !== undefined && (c.cloud === undefined || (c.publicAddress ?? "auto") !== "auto")) {
      ctx.addIssue({ code: "custom", path: ["dyndns"], message: "dyndns updates follow the address the cloud sees: they need a cloud: section and publicAddress auto (or unset)" });
    }
    c.routes.forEach((r, i) => {
      [r.route, ...r.fallback].forEach((name, j) => {
        const path = j === 0 ? ["routes", i, "route"] : ["routes", i, "fallback", j - 1];
        if (name.startsWith("smarthost:") && !Object.hasOwn(c.smarthosts, name.slice(10))) {
          ctx.addIssue({ code: "custom", path, message: `no smarthost named "${name.slice(10)}" in smarthosts` });
        }
        if (name === "cloud" && c.cloud === undefined) {
          ctx.addIssue({ code: "custom", path, message: "the cloud route needs a cloud: section (url, keyId, keyFile; see homerelay keygen)" });
        }
        if (name === "auto" && j > 0) ctx.addIssue({ code: "custom", path, message: "auto can only be a route's first step (use mx as a fallback)" });
        if (j > 0 && ["local", "hold", "reject"].includes(name)) {
          ctx.addIssue({ code: "custom", path, message: `${name} cannot be a fallback: fallbacks are ways out (mx, smarthost:<name>, cloud)` });
        }
      });
    });
  });

/** `text` as a URL, or null when it is not one. */
function urlOf(text: string): URL | null {
  return URL.canParse(text) ? new URL(text) : null;
}

/** HTTPS, or plain HTTP to a loopback host (127.0.0.0/8, ::1, localhost), where nothing travels over a network. */
function cloudUrlIsSafe(url: string): boolean {
  const parsed = urlOf(url);
  if (parsed === null) return true; // reported by the url field's own check
  const { protocol, hostname } = parsed;
  return protocol === "https:" || hostname === "localhost" || isLoopback(hostname.replace(/^\[(.*)\]$/, "$1"));
}

/** A listener with its defaults filled in. */
export interface ListenerConfig {
  role: "submission" | "mx";
  listen: HostPort;
  tls: "starttls" | "implicit" | "none";
  greetingDelay: number;
  requireAuth: boolean;
}

/** One API token with its defaults filled in and its file path resolved. */
export interface HttpTokenConfig {
  name: string;
  /** Exactly one of these three. */
  token?: string;
  hash?: string;
  file?: string;
  senders: string[];
  nullSender: boolean;
}

/** The local submission API's settings. */
export interface HttpConfig {
  listen: HostPort;
  tokens: HttpTokenConfig[];
}

/** The agent's configuration, validated and with every default filled in. */
export interface AgentConfig extends Omit<z.output<typeof configSchema>, "listeners" | "localDomains" | "limits" | "hostname" | "http"> {
  hostname: string;
  /** Absent: no HTTP submission API. */
  http?: HttpConfig;
  listeners: ListenerConfig[];
  localDomains: string[];
  limits: z.output<typeof limitsSchema> & { queueMinFree: number };
  /** Where the configuration came from: a file path, or `embedded defaults`. */
  source: string;
}

/** Where to read the configuration: `--config`, then $HOMERELAY_CONFIG, then ./homerelay.yaml; null = embedded defaults. */
export function configPath(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  if (explicit) return explicit;
  if (env.HOMERELAY_CONFIG) return env.HOMERELAY_CONFIG;
  return existsSync("homerelay.yaml") ? "homerelay.yaml" : null;
}

/** Load, validate and complete the configuration. Throws ConfigError naming file:line:column. */
export function loadAgentConfig(file: string | null): AgentConfig {
  const raw = file === null ? parseConfigText("", "embedded defaults", configSchema) : loadConfigFile(file, configSchema);
  return completeConfig(raw, file);
}

function completeConfig(raw: z.output<typeof configSchema>, file: string | null): AgentConfig {
  const hostname = raw.hostname ?? osHostname().toLowerCase();
  const listeners = raw.listeners.map((l): ListenerConfig => {
    const listen = parseHostPort(l.listen)!;
    const loopbackOnly = /^(127\.|::1$|localhost$)/.test(listen.host);
    return {
      role: l.role,
      listen,
      tls: l.tls,
      greetingDelay: l.greetingDelay ?? (l.role === "mx" ? 100 : 0),
      // A NAT router or container proxy can make internet clients look local: off loopback, submission needs AUTH.
      requireAuth: l.requireAuth ?? (l.role === "submission" && !loopbackOnly),
    };
  });
  const localDomains = raw.localDomains ?? [hostname, "localhost"];
  const spool = resolve(raw.spool);
  // With no file at all, the API is on with a token the agent makes, so that curl works at once.
  const { http: configured, ...rest } = raw;
  const http = configured ?? (file === null ? { listen: EMBEDDED_HTTP.listen, tokens: [{ name: "local", file: resolve(spool, EMBEDDED_HTTP.tokenFile), nullSender: false }] } : undefined);
  return {
    ...rest,
    hostname,
    spool,
    mailboxes: resolve(raw.mailboxes),
    aliases: raw.aliases === undefined ? undefined : resolve(raw.aliases),
    listeners,
    localDomains,
    limits: { ...raw.limits, queueMinFree: raw.limits.queueMinFree ?? Math.ceil(raw.limits.messageSize * 1.5) },
    ...(http
      ? {
          http: {
            listen: parseHostPort(http.listen)!,
            tokens: http.tokens.map((t, i) => ({
              ...t,
              name: t.name ?? `token-${i + 1}`,
              ...(t.file !== undefined ? { file: resolve(t.file) } : {}),
              senders: t.senders ?? localDomains.map((d) => `*@${d}`),
            })),
          },
        }
      : {}),
    source: file ?? "embedded defaults",
  };
}
