/**
 * smtp — the SMTP upstream onward transport: one session per message to the configured smarthost
 * (STARTTLS or implicit TLS, AUTH) over the shared SMTP client, answers per recipient: 2xx sent,
 * 4xx deferred, 5xx failed; a session that cannot be opened defers every recipient.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import type { Envelope, EnvelopeRecipient } from "../../shared/envelope.js";
import { readSecretFile } from "../../shared/secret-file.js";
import { transactionsOf } from "../../shared/smtp/transactions.js";
import { SmtpClient, SmtpSessionError, type RecipientOutcome, type SmtpTarget } from "../../shared/smtp/smtp-client.js";
import type { CloudConfig } from "../config.js";
import type { OnwardMessage, OnwardTransport, RecipientResult, RelayResult } from "./onward.js";

/** The `onward` section of the cloud configuration when it names an SMTP upstream. */
export type SmtpOnwardConfig = Extract<CloudConfig["onward"], { transport: "smtp" }>;

/** Seconds to wait for a connection to the next hop. */
export const CONNECT_TIMEOUT = 30;
/** Seconds to wait for each reply of the next hop. */
export const COMMAND_TIMEOUT = 120;

/** The SMTP upstream transport; `helo` is the cloud's public name. Reads the password file and CA now. */
export function createSmtpTransport(config: SmtpOnwardConfig, helo: string): OnwardTransport {
  const target: SmtpTarget = {
    address: config.host,
    port: config.port,
    hostname: config.host,
    tls: config.tls === "implicit" ? "implicit" : config.tls === "none" ? "none" : config.verify ? "verify" : "encrypt",
    verifyImplicit: config.verify,
    helo,
    connectTimeout: CONNECT_TIMEOUT,
    commandTimeout: COMMAND_TIMEOUT,
    ...(config.ca ? { ca: readFileSync(config.ca) } : {}),
    ...(config.auth ? { auth: { user: config.auth.user, pass: config.auth.password ?? readSecretFile(config.auth.passwordFile!, "password file").replace(/\r?\n$/, ""), method: config.auth.mechanism } } : {}),
  };
  return {
    name: "smtp",
    async relay(message) {
      const recipients = message.envelope.recipients;
      let session: SmtpClient;
      try {
        session = await SmtpClient.open(target);
      } catch (err) {
        if (!(err instanceof SmtpSessionError)) throw err;
        // Unreachable, TLS or AUTH trouble is this relay's to fix, never the sender's: defer, do not fail.
        const dsn = `4${err.enhanced.slice(1)}`;
        return { id: randomUUID(), results: recipients.map((r) => ({ recipient: r.address, status: "deferred", dsn, detail: err.message })) };
      }
      try {
        const outcomes: RecipientOutcome[] = [];
        const envelope = onwardEnvelope(message);
        for (const transaction of transactionsOf(recipients)) {
          if (!session.usable) {
            outcomes.push(...transaction.map((r): RecipientOutcome => ({ recipient: r.address, status: "deferred", dsn: "4.4.2", relay: session.relay, detail: "lost connection before sending" })));
            continue;
          }
          outcomes.push(...(await session.send(envelope, transaction, Readable.from([message.raw]), message.raw.length)));
        }
        return relayResult(recipients, outcomes);
      } finally {
        session.close();
      }
    },
  };
}

/** The envelope to send onward: BODY=8BITMIME when the message has 8-bit bytes (the protocol does not carry BODY). */
export function onwardEnvelope(message: OnwardMessage): Envelope {
  return { ...message.envelope, body: message.raw.some((byte) => byte > 0x7f) ? "8BITMIME" : "7BIT" };
}

/** The answer for the agent: one result per envelope recipient, in envelope order; a bounce is `failed`. */
export function relayResult(recipients: EnvelopeRecipient[], outcomes: RecipientOutcome[]): RelayResult {
  const byAddress = new Map(outcomes.map((o) => [o.recipient, o]));
  const results = recipients.map((r): RecipientResult => {
    const o = byAddress.get(r.address)!;
    return { recipient: r.address, status: o.status === "bounced" ? "failed" : o.status, dsn: o.dsn, detail: o.detail };
  });
  return { id: randomUUID(), results };
}
