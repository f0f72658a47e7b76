/**
 * dynamic-ptr — does a PTR name look like an ISP's name for a pool of subscriber addresses
 * (`c-73-45-123-9.hsd1.ca.comcast.net`, `p5b0d1e2f.dip0.t-ipconnect.de`) rather than a mail
 * server's own name? Big receivers refuse or penalise mail from such names; this is the heuristic.
 */
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";

/**
 * `dynamic`: the name says it is a subscriber pool; `generic`: it merely spells out an address
 * (often a static line with an unchanged ISP name: some receivers still refuse it); `custom`: it
 * looks like a name someone chose for this host.
 */
export type PtrKind = "dynamic" | "generic" | "custom";

/** The verdict on one PTR name, with the part of the name that decided it. */
export interface PtrVerdict {
  kind: PtrKind;
  reason: string;
}

/**
 * Words ISPs put in the names of subscriber addresses. Each must be a whole word of the name
 * (letters between dots, dashes and digits), so `dslreports` or `poolparty` do not count.
 */
const SUBSCRIBER_WORDS = new Set([
  "dynamic", "dyn", "dynip", "dip", "dhcp", "pool", "pools", "dsl", "adsl", "vdsl", "xdsl", "dslb",
  "cable", "ppp", "pppoe", "dialup", "dial", "client", "clients", "customer", "cust", "res", "resi",
  "residential", "broadband", "bband", "cpe", "hsd", "fios", "mobile", "wireless", "ftth", "fttx",
]);

/** Words that say an address is static: with an address spelled out, the name is generic, not dynamic. */
const STATIC_WORDS = new Set(["static", "fixed", "sta", "stat"]);

/** Second-level labels under a country code that are registries' own (`co.uk`, `com.au`): the registered domain has three labels then. */
const PUBLIC_SECOND_LEVEL = new Set(["co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go"]);

/**
 * Judge `name`, the PTR of `address`. The registered domain (the ISP's own, `comcast.net`) is
 * left out of the word search: only the labels the ISP chose per address speak about it.
 */
export function judgePtrName(name: string, address: string): PtrVerdict {
  const labels = name.toLowerCase().replace(/\.$/, "").split(".");
  const own = labels.slice(0, Math.max(0, labels.length - registeredLabels(labels)));
  const words = own.flatMap((label) => label.split(/[^a-z]+/)).filter((w) => w !== "");
  const subscriber = words.find((w) => SUBSCRIBER_WORDS.has(w));
  const spelled = spelledAddress(name.toLowerCase(), address);
  if (subscriber !== undefined) return { kind: "dynamic", reason: `the name has the word "${subscriber}"${spelled ? ` and spells out the address (${spelled})` : ""}` };
  if (spelled !== null) {
    const fixed = words.find((w) => STATIC_WORDS.has(w));
    if (fixed !== undefined) return { kind: "generic", reason: `the name spells out the address (${spelled}) and says "${fixed}"` };
    return { kind: "dynamic", reason: `the name spells out the address (${spelled}), as ISPs name their subscriber pools` };
  }
  return { kind: "custom", reason: "no subscriber-pool words, no address spelled out" };
}

/** How many trailing labels form the registered domain: 2, or 3 under `co.uk`-style second levels. */
function registeredLabels(labels: string[]): number {
  const tld = labels[labels.length - 1] ?? "";
  const second = labels[labels.length - 2] ?? "";
  return tld.length === 2 && PUBLIC_SECOND_LEVEL.has(second) ? 3 : 2;
}

/**
 * The piece of `name` that spells out `address` — or any IPv4 address — or null. Counted: four
 * decimal numbers of at most 255 in a row (forward or reversed, zero-padded or not:
 * `73-45-123-9`, `088-072-145-010`), the address's own four octets in hexadecimal
 * (`p5b0d1e2f`), and for IPv6 four or more of the address's groups in a row.
 */
function spelledAddress(name: string, address: string): string | null {
  const runs = [...name.matchAll(/\d+/g)];
  for (let i = 0; i + 4 <= runs.length; i++) {
    const four = runs.slice(i, i + 4);
    // Numbers "in a row": only separators between them, no letters.
    const between = name.slice(four[0]!.index, four[3]!.index + four[3]![0].length);
    if (/[a-z]/.test(between) || four.some((m) => m[0].length > 3 || Number(m[0]) > 255)) continue;
    return between;
  }
  if (isIP(address) === 4) {
    const hex = ipaddr.parse(address).toByteArray().map((b) => b.toString(16).padStart(2, "0")).join("");
    if (name.includes(hex)) return hex;
  }
  if (isIP(address) === 6) {
    const groups = (ipaddr.parse(address) as ipaddr.IPv6).parts.map((p) => p.toString(16));
    for (let i = 0; i + 4 <= groups.length; i++) {
      const piece = groups.slice(i, i + 4);
      const match = new RegExp(piece.map((g) => `0*${g}`).join("[-.]")).exec(name);
      if (match && !piece.every((g) => g === "0")) return match[0];
    }
  }
  return null;
}
