/**
 * policy-fetch — fetching a domain's MTA-STS policy file (RFC 8461 section 3.3):
 * `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`, over HTTPS with a certificate valid for that
 * name, no redirects, no HTTP cache, text/plain, at most 64 KiB. The host is found through the
 * agent's resolver, like MX hosts are.
 */
import { request } from "node:https";
import type { AddressPreference, MailResolver } from "../../shared/dns/resolver.js";

/** Largest policy file read (RFC 8461 section 3.3 suggests 64 KiB). */
const MAX_POLICY_OCTETS = 64 * 1024;

/** Why a policy could not be fetched, with its TLSRPT result type (RFC 8460 section 4.3.2). */
export class PolicyFetchError extends Error {
  constructor(
    readonly resultType: "sts-policy-fetch-error" | "sts-webpki-invalid" | "sts-policy-invalid",
    message: string,
  ) {
    super(message);
  }
}

/** How to reach policy hosts. */
export interface PolicyFetchOptions {
  resolver: MailResolver;
  addressPreference: AddressPreference;
  /** 443; tests serve policies elsewhere. */
  port: number;
  /** CAs trusted for the policy host's certificate; default the system store. */
  ca?: string | Buffer | (string | Buffer)[];
  /** Seconds allowed for one fetch. */
  timeout: number;
}

/** The policy URL of `domain`, as logs show it. */
export function policyUrl(domain: string, port: number): string {
  return `https://mta-sts.${domain}${port === 443 ? "" : `:${port}`}/.well-known/mta-sts.txt`;
}

/** The text of `domain`'s policy file; throws PolicyFetchError. Each address of the policy host is tried in turn. */
export async function fetchPolicyText(domain: string, o: PolicyFetchOptions): Promise<string> {
  const host = `mta-sts.${domain}`;
  const addresses = await o.resolver.resolveAddresses(host, o.addressPreference);
  if (addresses.kind !== "ok") throw new PolicyFetchError("sts-policy-fetch-error", addresses.reason);
  let failure: PolicyFetchError | undefined;
  for (const address of addresses.addresses) {
    try {
      return await fetchFrom(address, host, o);
    } catch (err) {
      failure = err as PolicyFetchError;
    }
  }
  throw failure!;
}

/** One GET of the policy file from the policy host at `address`. */
function fetchFrom(address: string, host: string, o: PolicyFetchOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const signal = AbortSignal.timeout(o.timeout * 1000);
    const req = request(
      {
        host: address,
        port: o.port,
        path: "/.well-known/mta-sts.txt",
        // The certificate must be valid for the policy host's name (checked against servername), whatever address it has.
        servername: host,
        headers: { host: o.port === 443 ? host : `${host}:${o.port}`, accept: "text/plain" },
        ...(o.ca ? { ca: o.ca } : {}),
        rejectUnauthorized: true,
        agent: false,
        signal,
      },
      (res) => {
        const status = res.statusCode ?? 0;
        const type = (res.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
        const refuse = (error: PolicyFetchError) => {
          res.destroy();
          reject(error);
        };
        // Redirects are not followed (RFC 8461 section 3.3): a 3xx is a failure like any other.
        if (status !== 200) return refuse(new PolicyFetchError("sts-policy-fetch-error", `HTTP ${status}${status >= 300 && status < 400 ? " (redirects are not followed)" : ""}`));
        if (type !== "text/plain") return refuse(new PolicyFetchError("sts-policy-invalid", `Content-Type is ${type || "missing"}, not text/plain`));
        const chunks: Buffer[] = [];
        let octets = 0;
        res.on("data", (chunk: Buffer) => {
          octets += chunk.length;
          if (octets > MAX_POLICY_OCTETS) return res.destroy(new PolicyFetchError("sts-policy-invalid", `the policy is larger than ${MAX_POLICY_OCTETS} octets`));
          chunks.push(chunk);
        });
        res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
        res.on("error", (err) => reject(fetchError(err, signal, o.timeout)));
      },
    );
    req.on("error", (err) => reject(fetchError(err, signal, o.timeout)));
    req.end();
  });
}

/** A request error as a PolicyFetchError: certificate problems are `sts-webpki-invalid`. */
function fetchError(err: Error & { code?: string }, signal: AbortSignal, timeout: number): PolicyFetchError {
  if (err instanceof PolicyFetchError) return err;
  if (signal.aborted) return new PolicyFetchError("sts-policy-fetch-error", `no answer within ${timeout} s`);
  const certificate = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME/.test(err.code ?? "");
  return new PolicyFetchError(certificate ? "sts-webpki-invalid" : "sts-policy-fetch-error", err.message.replace(/[\x00-\x1f\x7f]+/g, " ").trim());
}
