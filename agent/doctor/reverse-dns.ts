/**
 * reverse-dns — the public address's names as receivers check them before they read a word: a PTR
 * record, forward-confirmed (the PTR name resolves back to the address), not an ISP's pool name,
 * and a HELO name (the configured hostname) that resolves to the address.
 */
import type { MailResolver } from "../../shared/dns/resolver.js";
import { RESOLVER_FIX, SEND_ELSEWHERE, failIfDirect, ok, warn, type Check } from "./check.js";
import { dnsAnswer } from "./dns-answer.js";
import { judgePtrName } from "./dynamic-ptr.js";

/** How to see the address's names. */
export interface ReverseDnsSubject {
  resolver: MailResolver;
  address: string;
  /** The HELO name (`hostname`). */
  hostname: string;
  /** The configuration sends mail direct to MX. */
  direct: boolean;
}


/** PTR, forward confirmation, the look of the PTR name, and the HELO name. */
export async function reverseDnsChecks(s: ReverseDnsSubject): Promise<Check[]> {
  const { resolver, address, hostname, direct } = s;
  const ptr = await dnsAnswer(resolver.resolvePtr(address));
  const names = ptr.kind === "found" ? ptr.value.map((n) => n.toLowerCase().replace(/\.$/, "")) : [];
  const checks: Check[] = [];
  if (ptr.kind === "failed") {
    checks.push(warn("ptr", `the PTR of ${address} could not be looked up (${ptr.code})`, RESOLVER_FIX));
  } else if (names.length === 0) {
    checks.push(
      failIfDirect(direct, "ptr", `${address} has no PTR record: many receivers refuse mail from an address without one`, `ask whoever holds the address (your ISP) to set its PTR to ${hostname}, or ${SEND_ELSEWHERE}`),
    );
  } else {
    checks.push(
      names.length === 1
        ? ok("ptr", `PTR of ${address} is ${names[0]}`)
        : warn("ptr", `${address} has ${names.length} PTR records (${names.join(", ")}); receivers pick one at random`, `ask your ISP to keep one, ${hostname}`),
    );
    checks.push(await forwardConfirmation(resolver, address, names, direct));
    checks.push(ptrLook(names[0]!, address, hostname, direct));
  }
  checks.push(await heloCheck(resolver, address, hostname, names, direct));
  return checks;
}

/** FCrDNS: some PTR name resolves back to the address. */
async function forwardConfirmation(resolver: MailResolver, address: string, names: string[], direct: boolean): Promise<Check> {
  const seen: string[] = [];
  for (const name of names) {
    const forward = await resolver.resolveAddresses(name, "any");
    if (forward.kind === "ok" && forward.addresses.includes(address)) return ok("fcrdns", `${name} resolves back to ${address} (forward-confirmed reverse DNS)`);
    seen.push(forward.kind === "ok" ? `${name} resolves to ${forward.addresses.join(", ")}` : `${name} does not resolve (${forward.reason})`);
  }
  return failIfDirect(
    direct,
    "fcrdns",
    `the PTR is not forward-confirmed: ${seen.join("; ")}, not to ${address}; receivers such as Gmail refuse mail from such addresses`,
    `give ${names[0]} an address record for ${address}, or have the PTR set to a name that has one`,
  );
}

/** The PTR name's look: an ISP's pool name, an address spelled out, or a name of its own. */
function ptrLook(name: string, address: string, hostname: string, direct: boolean): Check {
  const verdict = judgePtrName(name, address);
  if (verdict.kind === "custom") return ok("ptr-dynamic", `PTR name ${name} looks like a mail server's own name (${verdict.reason})`);
  if (verdict.kind === "generic") {
    return warn("ptr-dynamic", `PTR name ${name} is an ISP's generic name (${verdict.reason}); some receivers treat it like a dynamic one`, `ask your ISP to set the PTR to ${hostname}`);
  }
  return failIfDirect(
    direct,
    "ptr-dynamic",
    `PTR name ${name} looks like a dynamic subscriber address (${verdict.reason}); Outlook, Spamhaus PBL users and many others refuse such senders`,
    `ask your ISP for a static address with the PTR ${hostname}, or ${SEND_ELSEWHERE}`,
  );
}

/** The HELO name resolves to the address (and, ideally, is the PTR name). */
async function heloCheck(resolver: MailResolver, address: string, hostname: string, names: string[], direct: boolean): Promise<Check> {
  const forward = await resolver.resolveAddresses(hostname, "any");
  // The PTR name is worth offering as the HELO name only when it is a name of its own.
  const ownName = names.find((n) => judgePtrName(n, address).kind === "custom");
  if (forward.kind === "temporary") return warn("helo", `HELO name ${hostname} could not be looked up (${forward.reason})`, RESOLVER_FIX);
  if (forward.kind === "nxdomain" || !forward.addresses.includes(address)) {
    const seen = forward.kind === "ok" ? `resolves to ${forward.addresses.join(", ")}` : "does not resolve";
    return failIfDirect(
      direct,
      "helo",
      `HELO name ${hostname} ${seen}, not to the public address ${address}`,
      `point ${hostname} at ${address} (a dyndns: section keeps it current)${ownName ? `, or set hostname: ${ownName}` : ""}`,
    );
  }
  if (names.length > 0 && !names.includes(hostname)) {
    return warn("helo", `HELO name ${hostname} resolves to ${address}, but the PTR names ${names[0]}; some receivers score the mismatch`, `have the PTR set to ${hostname}${ownName ? `, or set hostname: ${ownName}` : ""}`);
  }
  return ok("helo", `HELO name ${hostname} resolves to ${address}`);
}
