/**
 * config — the cloud half's configuration: accepted authorities, agent keys and the senders each
 * may use, the onward transport (SES, SMTP upstream or direct MX) and the store. A YAML file for
 * `homerelay-cloud serve`; on Lambda the same document comes from the environment.
 */
import * as z from "zod";
import { loadConfigFile, parseConfigText } from "../shared/config-file.js";
import { senderPattern, smtpUpstreamFields } from "../shared/config-fields.js";
import { parseHostPort } from "../shared/net.js";

const base64Key = z
  .string()
  .refine((s) => /^[A-Za-z0-9+/]{43}=$/.test(s) && Buffer.from(s, "base64").length === 32, "expected the base64 of a raw 32-byte Ed25519 public key (from homerelay keygen)");

const keySchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "expected a key id of letters, digits, . _ -"),
    publicKey: base64Key,
    /** Envelope senders and header From: addresses this key may use, e.g. `*@example.net`. */
    senders: z.array(senderPattern).min(1),
    /** May send with the null sender `<>` (bounces): off unless granted. */
    nullSender: z.boolean().default(false),
    /** Requests per minute for this key. */
    ratePerMinute: z.number().int().positive().default(600),
  })
  .strict();


const onwardSchema = z.discriminatedUnion("transport", [
  z
    .object({
      transport: z.literal("ses"),
      region: z.string().min(1),
      /** Tests point the SDK at a loopback SES endpoint. */
      endpoint: z.string().url().optional(),
      configurationSet: z.string().min(1).optional(),
    })
    .strict(),
  z
    .object({
      transport: z.literal("smtp"),
      ...smtpUpstreamFields,
    })
    .strict(),
  z
    .object({
      transport: z.literal("mx"),
      /** EHLO name: the static address's PTR name. */
      helo: z.string().min(1),
      port: z.number().int().min(1).max(65535).default(25),
      dns: z.object({ servers: z.array(z.string()).min(1).optional(), timeout: z.number().positive().default(5) }).strict().default({ timeout: 5 }),
      tlsPolicy: z.enum(["may", "encrypt", "verify"]).default("may"),
    })
    .strict(),
]);

const storeSchema = z.union([
  /** A directory for the embedded store (`cloud serve`). */
  z.string().min(1),
  z.object({ dynamodb: z.object({ table: z.string().min(1), region: z.string().optional(), endpoint: z.string().url().optional() }).strict() }).strict(),
]);

const cloudSchema = z
  .object({
    listen: z.string().refine((s) => parseHostPort(s) !== null, "expected host:port").default("127.0.0.1:8443"),
    /** Accepted `@authority` values (host, and :port when not the default), e.g. the Function URL host. */
    authority: z.array(z.string().min(1)).min(1),
    keys: z.array(keySchema).min(1),
    onward: onwardSchema,
    store: storeSchema,
    /** Accepted distance of a signature's `created` from now, seconds. */
    signatureWindow: z.number().int().positive().default(300),
    /** Largest message accepted, octets after decompression (Lambda: about 4.4 MB). */
    maxMessageSize: z.number().int().positive().default(4_400_000),
    /** How long idempotency answers are kept, seconds. */
    idempotencyTtl: z.number().int().positive().default(86_400),
    log: z.object({ format: z.enum(["text", "json"]).default("json"), level: z.enum(["debug", "info", "warn", "error"]).default("info") }).strict().default({ format: "json", level: "info" }),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.keys.forEach((k, i) => {
      if (seen.has(k.id)) ctx.addIssue({ code: "custom", path: ["keys", i, "id"], message: `key id ${k.id} is listed twice` });
      seen.add(k.id);
    });
  });

/** The cloud's configuration, validated, with defaults filled in. */
export type CloudConfig = z.output<typeof cloudSchema>;

/** Validate a configuration document (YAML or JSON text); throws ConfigError with file:line:column. */
export function parseCloudConfig(text: string, source: string): CloudConfig {
  return parseConfigText(text, source, cloudSchema);
}

/** Load the configuration file of `homerelay-cloud serve`. */
export function loadCloudConfig(file: string): CloudConfig {
  return loadConfigFile(file, cloudSchema);
}
