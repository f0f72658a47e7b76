/**
 * router — which way out a recipient takes (Postfix trivial-rewrite with transport_maps and
 * sender_dependent_relayhost_maps): local domains go to local delivery; everything else follows
 * the first most specific `routes` entry, with its fallback chain (see RouteStep for `auto`).
 */
import { parseAddress, senderMatches } from "../../shared/address.js";
import type { AgentConfig } from "../config.js";

/** One way out of the queue. An `auto` mx step is skipped for receivers learned to refuse the home address. */
export type RouteStep =
  | { kind: "mx"; auto?: true }
  | { kind: "smarthost"; name: string }
  | { kind: "local" }
  | { kind: "hold" }
  | { kind: "reject"; text: string }
  | { kind: "cloud" };

/** The route of one recipient: the steps to try in order, and why this route was chosen. */
export interface RouteChoice {
  steps: RouteStep[];
  /** The recipient's domain, lower case (the destination of `mx`). */
  domain: string;
  /** For administrators: `routes[2] (match .example.org)`, `local domain`, `default`. */
  reason: string;
}

type RouteEntry = AgentConfig["routes"][number];

/** Parse a route name from the configuration (`smarthost:isp`, `mx`, …). */
export function routeStep(name: string, text?: string): RouteStep {
  if (name.startsWith("smarthost:")) return { kind: "smarthost", name: name.slice("smarthost:".length) };
  switch (name) {
    case "auto":
      return { kind: "mx", auto: true };
    case "mx":
    case "local":
    case "hold":
    case "cloud":
      return { kind: name };
    case "reject":
      return { kind: "reject", text: text ?? "delivery to this domain is not allowed" };
    default:
      throw new Error(`unknown route ${name}`);
  }
}

/** `mx`, `auto`, `smarthost:isp`, … as written in the configuration and the logs. */
export function routeName(step: RouteStep): string {
  if (step.kind === "mx" && step.auto) return "auto";
  return step.kind === "smarthost" ? `smarthost:${step.name}` : step.kind;
}

/** The routing table of one configuration. */
export class Router {
  private readonly localDomains: Set<string>;

  constructor(private readonly config: Pick<AgentConfig, "routes" | "localDomains">) {
    this.localDomains = new Set(config.localDomains.map((d) => d.toLowerCase()));
  }

  /** Choose the route for `recipient` from `sender` (the empty string for the null sender). */
  resolve(recipient: string, sender: string): RouteChoice {
    const parsed = parseAddress(recipient);
    const domain = parsed.ok ? parsed.mailbox.domain : recipient.slice(recipient.lastIndexOf("@") + 1).toLowerCase();
    if (this.localDomains.has(domain)) return { steps: [{ kind: "local" }], domain, reason: "local domain" };
    let best: { entry: RouteEntry; index: number; score: number } | null = null;
    this.config.routes.forEach((entry, index) => {
      const score = matchScore(entry, domain, sender);
      if (score > 0 && (best === null || score > best.score)) best = { entry, index, score };
    });
    if (best === null) return { steps: [{ kind: "mx" }], domain, reason: "default (no route matches)" };
    const { entry, index } = best as { entry: RouteEntry; index: number };
    const steps = [routeStep(entry.route, entry.text), ...entry.fallback.map((f) => routeStep(f))];
    // The catch-all entry's direct delivery with a fallback behind it is `auto` by default: explicit
    // entries for a domain are followed as written, learning never overrides them.
    if (entry.match === "*" && steps[0]!.kind === "mx" && steps.length > 1) steps[0] = { kind: "mx", auto: true };
    const senderNote = entry.sender ? `, sender ${entry.sender}` : "";
    return { steps, domain, reason: `routes[${index}] (match ${entry.match}${senderNote})` };
  }
}

/**
 * How well an entry fits: 0 = not at all. An exact domain beats a subdomain pattern, a longer
 * subdomain pattern beats a shorter one, any domain pattern beats `*`; at equal domain fit an
 * entry for this sender beats one for every sender; at a tie the first entry wins.
 */
function matchScore(entry: RouteEntry, domain: string, sender: string): number {
  if (entry.sender !== undefined && !(sender !== "" && senderMatches(sender, entry.sender))) return 0;
  const match = entry.match.toLowerCase();
  let fit: number;
  if (match === "*") fit = 1;
  else if (match.startsWith(".")) fit = domain.endsWith(match) ? 2 + match.length : 0;
  else fit = domain === match ? 1000 : 0;
  if (fit === 0) return 0;
  return fit * 2 + (entry.sender !== undefined ? 1 : 0);
}
