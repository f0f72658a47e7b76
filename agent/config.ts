/**
 * config — the agent's configuration: its YAML schema, the embedded defaults that work with no
 * file at all, and where the file is looked for (`--config`, `$HOMERELAY_CONFIG`, `./homerelay.yaml`).
 */
import { existsSync } from "node:fs";
import { isIP } from "node:net";
import { hostname as osHostname } from "node:os";
import { resolve } from "node:path";
import { z } from "zod";
import { loadConfigFile, parseConfigText } from "../shared/config-file.js";
import { senderPattern, smtpUpstreamFields } from "../shared/config-fields.js";
import { isCidr, isLoopback, parseHostPort, type HostPort } from "../shared/net.js";
import { isPasswordHash } from "./smtpd/password.js";

const hostnamePattern = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const domain = z.string().regex(hostnamePattern, "expected a domain name such as example.net").transform((d) => d.toLowerCase());
const listenAddress = z.string().refine((s) => parseHostPort(s) !== null, "expected host:port, e.g. 127.0.0.1:2525 or [::1]:25");
const cidr = z.string().refine(isCidr, "expected an address range such as 192.0.2.0/24 or ::1/128");
const bytes = z.number().int().positive();
const seconds = z.number().positive();

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
    /** How long a receiver that refused the home address gets mail by the fallback route before direct delivery is tried again (default 30 days). */
    learnedRouteExpiry: seconds.default(30 * 86400),
  })
  .strict();

const queueSchema = z
  .object({
    /** Seconds before the first retry (Postfix minimal_backoff_time). */
    minBackoff: seconds.default(300),
    /** Upper bound of the doubling retry interval (maximal_backoff_time). */
    maxBackoff: seconds.default(4000),
    /** Give up and bounce after this many seconds (maximal_queue_lifetime, 5 days). */
    lifetime: seconds.default(5 * 86400),
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

const configSchema = z
  .object({
    hostname: domain.optional(),
    spool: z.string().min(1).default("./var/spool"),
    mailboxes: z.string().min(1).default("./var/mail"),
    aliases: z.string().min(1).optional(),
    listeners: z.array(listenerSchema).min(1).default([{ role: "submission", listen: "127.0.0.1:2525", tls: "starttls" }]),
    trustedNetworks: z.array(cidr).default(["127.0.0.0/8", "::1/128"]),
    localDomains: z.array(domain).optional(),
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

/** The agent's configuration, validated and with every default filled in. */
export interface AgentConfig extends Omit<z.output<typeof configSchema>, "listeners" | "localDomains" | "limits" | "hostname"> {
  hostname: string;
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
  return completeConfig(raw, file ?? "embedded defaults");
}

function completeConfig(raw: z.output<typeof configSchema>, source: string): AgentConfig {
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
  return {
    ...raw,
    hostname,
    spool: resolve(raw.spool),
    mailboxes: resolve(raw.mailboxes),
    aliases: raw.aliases === undefined ? undefined : resolve(raw.aliases),
    listeners,
    localDomains,
    limits: { ...raw.limits, queueMinFree: raw.limits.queueMinFree ?? Math.ceil(raw.limits.messageSize * 1.5) },
    source,
  };
}
