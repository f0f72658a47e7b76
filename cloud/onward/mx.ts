/**
 * mx — the direct-to-MX onward transport, for a cloud on a static address with port 25 open: the
 * recipients grouped by domain, each domain delivered through the shared MX client (RFC 5321
 * section 5) with a session opened and closed per host, the domains in parallel.
 */
import { Readable } from "node:stream";
import { MailResolver } from "../../shared/dns/resolver.js";
import type { EnvelopeRecipient } from "../../shared/envelope.js";
import { deliverViaMx, type SessionSource } from "../../shared/smtp/mx-delivery.js";
import { SmtpClient } from "../../shared/smtp/smtp-client.js";
import type { CloudConfig } from "../config.js";
import type { OnwardTransport } from "./onward.js";
import { transactionsOf } from "../../shared/smtp/transactions.js";
import { COMMAND_TIMEOUT, CONNECT_TIMEOUT, onwardEnvelope, relayResult } from "./smtp.js";

/** The `onward` section of the cloud configuration when it names direct MX delivery. */
export type MxOnwardConfig = Extract<CloudConfig["onward"], { transport: "mx" }>;

/** Sessions opened for one delivery and closed after it: the cloud keeps no connections between requests. */
const freshSessions: SessionSource = {
  acquire: (target) => SmtpClient.open(target),
  release: (client) => client.close(),
};

/** The direct-MX transport. */
export function createMxTransport(config: MxOnwardConfig): OnwardTransport {
  const resolver = new MailResolver({ ...(config.dns.servers ? { servers: config.dns.servers } : {}), timeoutSeconds: config.dns.timeout });
  return {
    name: "mx",
    async relay(message) {
      const envelope = onwardEnvelope(message);
      const byDomain = new Map<string, EnvelopeRecipient[]>();
      for (const r of envelope.recipients) {
        const domain = r.address.slice(r.address.lastIndexOf("@") + 1).toLowerCase();
        byDomain.set(domain, [...(byDomain.get(domain) ?? []), r]);
      }
      const outcomes = await Promise.all(
        [...byDomain].map(([domain, recipients]) =>
          deliverViaMx(
            { domain, envelope, transactions: transactionsOf(recipients), content: () => Readable.from([message.raw]), size: message.raw.length },
            {
              resolver,
              port: config.port,
              helo: config.helo,
              tls: config.tlsPolicy,
              addressPreference: "any",
              connectTimeout: CONNECT_TIMEOUT,
              commandTimeout: COMMAND_TIMEOUT,
              sessions: freshSessions,
            },
          ),
        ),
      );
      return relayResult(envelope.recipients, outcomes.flat());
    },
  };
}
