/**
 * mx-delivery — direct delivery to a domain's mail exchangers (RFC 5321 section 5): MX hosts in
 * preference order, each address in turn, the next host on connection failure or a 4xx, plaintext
 * again after a failed handshake under the `may` TLS policy, bounces for null MX and NXDOMAIN.
 * Used by the agent and by the cloud's `mx` transport.
 */
import type { Readable } from "node:stream";
import type { Envelope, EnvelopeRecipient } from "../envelope.js";
import type { MailResolver } from "../dns/resolver.js";
import { SmtpSessionError, temporaryDsn, type RecipientOutcome, type SmtpClient, type SmtpTarget } from "./smtp-client.js";

/** Opens sessions (possibly from a cache) and takes them back after use. */
export interface SessionSource {
  acquire(target: SmtpTarget): Promise<SmtpClient>;
  /** Hand a session back; `reusable` is false after an error. */
  release(client: SmtpClient, reusable: boolean): void;
}

/** One delivery to one domain: the message and its recipients, grouped into transactions. */
export interface MxDeliveryRequest {
  domain: string;
  envelope: Envelope;
  /** Recipients grouped so that each group shares its DSN parameters (one SMTP transaction each). */
  transactions: EnvelopeRecipient[][];
  content(): Readable;
  size: number;
}

/** How to reach MX hosts. */
export interface MxDeliveryOptions {
  resolver: MailResolver;
  port: number;
  helo: string;
  tls: "may" | "encrypt" | "verify";
  ca?: SmtpTarget["ca"];
  addressPreference: "ipv4" | "ipv6" | "any";
  connectTimeout: number;
  commandTimeout: number;
  sessions: SessionSource;
  /** The recipient domain's MTA-STS policy (RFC 8461), when one applies. */
  sts?: StsCheck;
}

/**
 * An MTA-STS policy as delivery applies it. `enforce`: MX hosts it does not list are skipped, and
 * `tls` is `verify`. `testing`: delivery goes on as usual, but what enforce would have refused is
 * reported: an unlisted MX host, or TLS that fails verification (tried first, then as usual).
 */
export interface StsCheck {
  mode: "enforce" | "testing";
  lists(exchange: string): boolean;
  report(violation: StsViolation): void;
}

/** What an MTA-STS policy in `testing` mode would have refused. */
export interface StsViolation {
  exchange: string;
  /** `mx`: the policy does not list the host; `tls`: TLS was not offered or did not verify. */
  kind: "mx" | "tls";
  detail: string;
}

/** Deliver to the MX hosts of `request.domain`; one outcome per recipient, never a throw. */
export async function deliverViaMx(request: MxDeliveryRequest, o: MxDeliveryOptions): Promise<RecipientOutcome[]> {
  const all = request.transactions.flat();
  const everyone = (status: RecipientOutcome["status"], dsn: string, detail: string, unreachable = false): RecipientOutcome[] =>
    all.map((r) => ({ recipient: r.address, status, dsn, relay: "none", detail, ...(unreachable ? { unreachable } : {}) }));

  const mx = await o.resolver.resolveMx(request.domain);
  if (mx.kind === "null-mx") return everyone("bounced", "5.1.10", `Domain ${request.domain} does not accept mail (nullMX)`);
  if (mx.kind === "nxdomain") return everyone("bounced", "5.4.4", mx.reason);
  if (mx.kind === "temporary") return everyone("deferred", "4.4.3", mx.reason, true);

  const outcomes = new Map<string, RecipientOutcome>();
  let pending = request.transactions.map((t) => [...t]).filter((t) => t.length > 0);
  // What last happened to each recipient still pending: its own deferral at a host (with that
  // host as relay), or a failure that kept every pending recipient from a host; logged when no host takes it.
  const lastDeferral = new Map<string, RecipientOutcome>();
  const noHost = (dsn: string, detail: string, unreachable: boolean, reply?: string) => {
    for (const r of pending.flat()) lastDeferral.set(r.address, { recipient: r.address, status: "deferred", dsn, relay: "none", detail, ...(unreachable ? { unreachable } : {}), ...(reply ? { reply } : {}) });
  };
  noHost("4.4.1", "no MX host could be reached", true);

  for (const host of mx.hosts) {
    if (pending.length === 0) break;
    const listed = o.sts?.lists(host.exchange) ?? true;
    if (!listed) {
      const detail = `MX host ${host.exchange} is not listed in the MTA-STS policy of ${request.domain}`;
      if (o.sts!.mode === "enforce") {
        noHost("4.7.5", detail, false);
        continue;
      }
      o.sts!.report({ exchange: host.exchange, kind: "mx", detail });
    }
    const addresses = await o.resolver.resolveAddresses(host.exchange, o.addressPreference);
    if (addresses.kind !== "ok") {
      noHost(addresses.kind === "nxdomain" ? "5.4.4" : "4.4.3", addresses.reason, true);
      // A domain whose only (implicit) MX has no address does not exist for mail.
      if (addresses.kind === "nxdomain" && mx.hosts.length === 1) return everyone("bounced", "5.4.4", addresses.reason);
      continue;
    }
    for (const address of addresses.addresses) {
      if (pending.length === 0) break;
      const target: SmtpTarget = {
        address,
        port: o.port,
        hostname: host.exchange,
        tls: o.tls,
        helo: o.helo,
        connectTimeout: o.connectTimeout,
        commandTimeout: o.commandTimeout,
        ...(o.ca ? { ca: o.ca } : {}),
      };
      const testing = o.sts?.mode === "testing" && listed ? (error: SmtpSessionError) => o.sts!.report({ exchange: host.exchange, kind: "tls", detail: error.message }) : undefined;
      const session = await openSession(o.sessions, target, testing);
      if (session instanceof SmtpSessionError) {
        const policy = o.sts?.mode === "enforce" && tlsRefused(session) ? ` (the MTA-STS policy of ${request.domain} requires verified TLS)` : "";
        noHost(session.enhanced, `${session.message}${policy}`, session.unreachable, session.reply);
        // A 5xx greeting or EHLO means this host refuses us: try the next one, like any failure here.
        continue;
      }
      const still: EnvelopeRecipient[][] = [];
      let reusable = true;
      let done = 0;
      let lastHere: RecipientOutcome | undefined;
      for (const transaction of pending) {
        if (!session.usable) break;
        const results = await session.send(request.envelope, transaction, request.content(), request.size);
        done++;
        const retry: EnvelopeRecipient[] = [];
        for (const [i, r] of results.entries()) {
          // A 4xx from one MX (greylisting, overload) is tried at the next; a 5xx is final.
          if (r.status === "deferred") {
            retry.push(transaction[i]!);
            lastDeferral.set(r.recipient, r);
            lastHere = r;
            if (r.unreachable) reusable = false;
          } else outcomes.set(r.recipient, r);
        }
        if (retry.length > 0) still.push(retry);
      }
      o.sessions.release(session, reusable && session.usable);
      // Transactions the session broke before: what broke it is their reason too.
      if (lastHere) for (const r of pending.slice(done).flat()) lastDeferral.set(r.address, { ...lastHere, recipient: r.address });
      pending = [...still, ...pending.slice(done)];
    }
  }
  for (const r of pending.flat()) {
    const last = lastDeferral.get(r.address)!;
    // A host that refused us with 5xx (greeting, EHLO) was one of several: still only a deferral.
    outcomes.set(r.address, { ...last, dsn: temporaryDsn(last.dsn) });
  }
  return all.map((r) => outcomes.get(r.address)!);
}

/**
 * Open a session, retrying in plaintext when the `may` policy's TLS handshake fails (as Postfix does).
 * With `testing` (an MTA-STS policy in testing mode), verified TLS is tried first; its failure is
 * reported, and the session opened as usual.
 */
async function openSession(sessions: SessionSource, target: SmtpTarget, testing?: (error: SmtpSessionError) => void): Promise<SmtpClient | SmtpSessionError> {
  if (testing && target.tls !== "verify") {
    const verified = await acquire(sessions, { ...target, tls: "verify" });
    if (!(verified instanceof SmtpSessionError) || !tlsRefused(verified)) return verified;
    testing(verified);
  }
  const session = await acquire(sessions, target);
  if (session instanceof SmtpSessionError && session.tlsFailure && target.tls === "may") return acquire(sessions, { ...target, tls: "none" });
  return session;
}

/** A session from `sessions`, or the SmtpSessionError that prevented it. */
async function acquire(sessions: SessionSource, target: SmtpTarget): Promise<SmtpClient | SmtpSessionError> {
  try {
    return await sessions.acquire(target);
  } catch (err) {
    if (err instanceof SmtpSessionError) return err;
    throw err;
  }
}

/** The session failed for want of TLS: a failed handshake or certificate check, or STARTTLS not offered (4.7.4, no reply). */
function tlsRefused(error: SmtpSessionError): boolean {
  return error.tlsFailure || (error.replyCode === undefined && error.enhanced === "4.7.4");
}
