/**
 * public-address — the address receivers see this box connect from: configured (`publicAddress:
 * 203.0.113.7`), or as the cloud sees it (`GET /v1/whoami`). Every reputation check hangs on it,
 * so a private address (the LAN side of the router) is refused as the mistake it is.
 */
import ipaddr from "ipaddr.js";
import type { CloudAnswer, CloudFailure, CloudIdentity } from "../cloud/cloud-probe.js";
import { fail, ok, warn, type Check } from "./check.js";

/** Ranges no receiver can see a connection from. */
const NOT_PUBLIC = new Set(["private", "loopback", "linkLocal", "carrierGradeNat", "uniqueLocal", "unspecified"]);

/** The range of `ip` when no receiver can see a connection from it (`private`, `loopback`, …), else null. */
export function privateRange(ip: string): string | null {
  const range = ipaddr.parse(ip).range();
  return NOT_PUBLIC.has(range) ? range : null;
}

/** The public address to check, with the check that says where it came from. */
export function publicAddress(configured: string | undefined, whoami: CloudAnswer<CloudIdentity> | CloudFailure | null, cloudUrl: string | null): { address: string | null; check: Check } {
  const seen = whoami?.ok ? whoami.value.ip : null;
  if (configured !== undefined && configured !== "auto") {
    const range = privateRange(configured);
    if (range !== null) {
      return { address: null, check: fail("public-address", `publicAddress ${configured} is a ${range} address, not the one receivers see`, `set publicAddress to the address your router has on the internet${cloudUrl ? ", or to auto" : ""}`) };
    }
    if (seen !== null && seen !== configured) {
      return { address: configured, check: warn("public-address", `publicAddress is ${configured}, but the cloud at ${cloudUrl} sees this box as ${seen}`, `set publicAddress: auto, or to ${seen}`) };
    }
    return { address: configured, check: ok("public-address", `public address ${configured} (publicAddress)`) };
  }
  if (cloudUrl === null) {
    return {
      address: null,
      check: warn("public-address", "the public address is unknown, so the PTR, blocklist, SPF and MX checks of it are skipped", "set publicAddress to your router's internet address, or configure a cloud: it tells the agent"),
    };
  }
  if (seen === null) return { address: null, check: fail("public-address", `the public address is unknown: the cloud did not say (${whoami && !whoami.ok ? whoami.detail : "not asked"})`, "see the cloud checks") };
  const range = privateRange(seen);
  if (range !== null) {
    return { address: null, check: fail("public-address", `the cloud at ${cloudUrl} sees this box as ${seen}, a ${range} address: it is reached without crossing the internet, so it cannot tell the public address`, "set publicAddress to your router's internet address") };
  }
  return { address: seen, check: ok("public-address", `public address ${seen}, as the cloud at ${cloudUrl} sees it`) };
}
