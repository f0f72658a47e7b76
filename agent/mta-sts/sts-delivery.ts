/**
 * sts-delivery — an MTA-STS policy applied to one direct-to-MX delivery (RFC 8461 section 5):
 * `enforce` means verified TLS to MX hosts the policy lists, else deferral; `testing` means delivery
 * as usual, with what enforce would have refused logged in the terms of TLS reporting (RFC 8460).
 */
import type { MailLog } from "../../shared/log.js";
import type { MxDeliveryOptions, StsViolation } from "../../shared/smtp/mx-delivery.js";
import type { AppliedStsPolicy } from "./policy-cache.js";
import { policyListsMx } from "./sts-policy.js";

/** The TLS policy and MTA-STS check of a delivery of message `queueId`, given the domain's `policy` and its configured `tls`. */
export function stsDelivery(policy: AppliedStsPolicy | null, tls: MxDeliveryOptions["tls"], log: MailLog, queueId: string): Pick<MxDeliveryOptions, "tls" | "sts"> {
  if (policy === null || policy.mode === "none") return { tls };
  const { mode, domain, id } = policy;
  return {
    tls: mode === "enforce" ? "verify" : tls,
    sts: {
      mode,
      lists: (exchange) => policyListsMx(policy, exchange),
      report: (violation) =>
        log.warn(
          `${queueId}: MTA-STS policy of ${domain} (id=${id}) in testing mode: result-type=${resultType(violation)}, receiving-mx-hostname=${violation.exchange}: ${violation.detail}; enforce mode would defer this delivery`,
        ),
    },
  };
}

/** The RFC 8460 result type of a violation, from the failure's own words. */
function resultType(violation: StsViolation): string {
  if (violation.kind === "mx") return "validation-failure";
  const { detail } = violation;
  if (/not offered/.test(detail)) return "starttls-not-supported";
  if (/does not match certificate/i.test(detail)) return "certificate-host-mismatch";
  if (/certificate has expired/i.test(detail)) return "certificate-expired";
  if (/certificate|self[- ]signed|issuer/i.test(detail)) return "certificate-not-trusted";
  return "validation-failure";
}
