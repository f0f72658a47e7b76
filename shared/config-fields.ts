/**
 * config-fields — configuration fields that the agent's and the cloud's files share, so both
 * read them alike: sender patterns (`*@example.net`) and the AUTH block of an SMTP upstream.
 */
import * as z from "zod";

/** An envelope sender pattern: `user@domain`, `*@domain`, `user@*` or `*`. */
export const senderPattern = z
  .string()
  .regex(/^(\*|[^@\s*]+@[^@\s*]+|\*@[^@\s*]+|[^@\s*]+@\*)$/, "expected an address, *@domain, local@* or *");

/** AUTH towards an SMTP upstream: the password inline or in a file others may not read. */
export const smtpAuthSchema = z
  .object({
    user: z.string().min(1),
    password: z.string().optional(),
    /** A file holding the password; it must not be readable by others (checked at start). */
    passwordFile: z.string().optional(),
    mechanism: z.enum(["PLAIN", "LOGIN", "CRAM-MD5"]).default("PLAIN"),
  })
  .strict()
  .refine((a) => (a.password === undefined) !== (a.passwordFile === undefined), "give exactly one of password or passwordFile");

/** An SMTP upstream (the agent's smarthosts, the cloud's `smtp` onward transport). */
export const smtpUpstreamFields = {
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(587),
  tls: z.enum(["starttls", "implicit", "none"]).default("starttls"),
  /** Check the upstream's certificate against its name (off only for hosts with self-signed certificates). */
  verify: z.boolean().default(true),
  /** A PEM file of CAs to trust for this upstream instead of the system store. */
  ca: z.string().min(1).optional(),
  auth: smtpAuthSchema.optional(),
};
