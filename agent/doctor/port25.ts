/**
 * port25 — can this line reach a mail server on port 25 at all? Many ISPs block outbound port 25
 * on home lines: the connection then times out (packets dropped) or is refused, and direct-to-MX
 * delivery can never work. A real SMTP greeting (and EHLO, then QUIT) from a well-known MX says it can.
 */
import type { MailResolver } from "../../shared/dns/resolver.js";
import type { HostPort } from "../../shared/net.js";
import { SmtpClient, SmtpSessionError } from "../../shared/smtp/smtp-client.js";
import { failIfDirect, ok, warn, type Check } from "./check.js";

/** What the probe needs. */
export interface Port25Probe {
  resolver: MailResolver;
  /** The well-known MX to try, e.g. gmail-smtp-in.l.google.com:25. */
  target: HostPort;
  /** Our EHLO name. */
  helo: string;
  /** Seconds for the connection and for the greeting each. */
  timeoutSeconds: number;
  direct: boolean;
}

const BLOCKED_FIX = "send through a smarthost (your ISP's relay, on port 587 with AUTH) or the cloud route";

/** Connect, read the greeting, EHLO, QUIT. */
export async function port25Check(p: Port25Probe): Promise<Check> {
  const found = await p.resolver.resolveAddresses(p.target.host, "ipv4");
  if (found.kind !== "ok") return warn("port25", `the port 25 probe target ${p.target.host} could not be resolved (${found.reason})`, "check doctor.port25 and the resolvers in dns.servers");
  const address = found.addresses[0]!;
  try {
    const client = await SmtpClient.open({
      address,
      port: p.target.port,
      hostname: p.target.host,
      tls: "none",
      helo: p.helo,
      connectTimeout: p.timeoutSeconds,
      commandTimeout: p.timeoutSeconds,
    });
    client.close();
    return ok("port25", `outbound port 25 is open: ${client.relay} greeted this box`);
  } catch (err) {
    if (!(err instanceof SmtpSessionError)) throw err;
    if (err.replyCode !== undefined) {
      return failIfDirect(p.direct, "port25", `outbound port 25 is open, but ${err.message}: that receiver refuses this address`, `see the PTR and blocklist checks; meanwhile ${BLOCKED_FIX}`);
    }
    const blocked = /timed out/i.test(err.message) ? " — blocked by your ISP?" : /refused/i.test(err.message) ? " — a firewall on the way (your ISP's?) refuses it" : "";
    return failIfDirect(p.direct, "port25", `outbound port 25: ${err.message}${blocked}`, BLOCKED_FIX);
  }
}
