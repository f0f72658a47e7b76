/**
 * transactions — how recipients are split into SMTP transactions: nodemailer applies one NOTIFY
 * and one ORCPT per transaction, so recipients share one only when their DSN parameters allow it.
 */
import type { EnvelopeRecipient } from "../envelope.js";

/** Recipients grouped by NOTIFY; a recipient with an ORCPT goes alone. */
export function transactionsOf(recipients: EnvelopeRecipient[]): EnvelopeRecipient[][] {
  const groups = new Map<string, EnvelopeRecipient[]>();
  const single: EnvelopeRecipient[][] = [];
  for (const r of recipients) {
    if (r.orcpt) {
      single.push([r]);
      continue;
    }
    const key = (r.notify ?? []).join(",");
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  return [...groups.values(), ...single];
}
