/**
 * routes-command — `homerelay routes test ADDRESS` (which way a recipient goes and why, with the
 * MX hosts the resolver returns), `routes import FILE --format …` (seed formats to YAML), and
 * `routes learned` / `routes forget KEY` (receivers learned to refuse the home address).
 */
import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { MailResolver } from "../../shared/dns/resolver.js";
import { silentLog } from "../../shared/log.js";
import { askAgent, AgentNotRunning, controlSocketPath } from "../control/control-socket.js";
import { Spool } from "../queue/spool.js";
import { DirectRouteAdvisor } from "../reroute/direct-route-advisor.js";
import { LearnedRoutes } from "../reroute/learned-routes.js";
import { importRoutes, routesToYaml, RouteImportError, type RouteFormat } from "../router/route-import.js";
import { Router, routeName } from "../router/router.js";
import { configOrExit } from "./load-config.js";

/** sysexits(3) EX_DATAERR: the input file has lines that cannot be read. */
const EX_DATAERR = 65;

/** Print the route of `address`; returns the exit status. */
export async function testRoute(configFile: string | undefined, address: string, sender: string): Promise<number> {
  const config = configOrExit(configFile);
  const choice = new Router(config).resolve(address, sender);
  const [first, ...fallback] = choice.steps;
  const lines = [
    `<${address}> from <${sender}>: route ${routeName(first!)}${fallback.length ? `, fallback ${fallback.map(routeName).join(" → ")}` : ""}`,
    `  why: ${choice.reason}`,
  ];
  const resolver = new MailResolver({ ...(config.dns.servers ? { servers: config.dns.servers } : {}), timeoutSeconds: config.dns.timeout });
  if (first?.kind === "mx" && first.auto && fallback.length > 0) {
    const learned = await LearnedRoutes.open(new Spool(config.spool).privateDir);
    const advisor = new DirectRouteAdvisor({ learned, resolver, log: silentLog, expirySeconds: config.delivery.learnedRouteExpiry });
    const skip = await advisor.skipReason(choice.domain);
    lines.push(skip ? `  direct delivery skipped, straight to ${routeName(fallback[0]!)}: ${skip}` : "  direct delivery first (nothing learned about this receiver)");
  }
  if (choice.steps.some((s) => s.kind === "mx")) {
    const mx = await resolver.resolveMx(choice.domain);
    if (mx.kind === "mx") {
      lines.push(`  MX hosts of ${choice.domain}, in the order they are tried:`);
      for (const h of mx.hosts) lines.push(`    ${String(h.preference).padStart(5)} ${h.exchange}${h.implicit ? " (implicit MX: the domain's own address)" : ""}`);
    } else if (mx.kind === "null-mx") lines.push(`  ${choice.domain} publishes a null MX: it accepts no mail (mail to it bounces with 5.1.10)`);
    else lines.push(`  MX lookup: ${mx.reason}${mx.kind === "temporary" ? " (temporary: mail would be deferred)" : " (mail would bounce)"}`);
  }
  process.stdout.write(lines.join("\n") + "\n");
  return 0;
}

/** Convert a mailertable/smtproutes/transport file and print the YAML; returns the exit status. */
export async function importRouteFile(file: string, format: RouteFormat): Promise<number> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    process.stderr.write(`homerelay: ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? "error"})\n`);
    return 66;
  }
  try {
    process.stdout.write(routesToYaml(importRoutes(text, format, file)));
    return 0;
  } catch (err) {
    if (err instanceof RouteImportError) {
      process.stderr.write(err.problems.join("\n") + "\n");
      return EX_DATAERR;
    }
    throw err;
  }
}

/** Print the learned routes (`--json`: one document for machines); returns the exit status. */
export async function printLearned(configFile: string | undefined, json: boolean): Promise<number> {
  const config = configOrExit(configFile);
  const routes = (await LearnedRoutes.open(new Spool(config.spool).privateDir)).list(Date.now());
  if (json) {
    process.stdout.write(JSON.stringify(routes.map((r) => ({ ...r, learned: new Date(r.learned).toISOString(), expires: new Date(r.expires).toISOString() })), null, 2) + "\n");
    return 0;
  }
  if (routes.length === 0) {
    process.stdout.write("No learned routes: every receiver is tried directly first.\n");
    return 0;
  }
  for (const r of routes) {
    const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);
    process.stdout.write(`${r.scope === "provider" ? "provider " : ""}${r.key}: learned ${day(r.learned)}, direct again after ${day(r.expires)}\n  ${r.reason}\n  reply: ${r.reply}\n`);
  }
  return 0;
}

/** Forget a learned domain or provider, through the running agent or in the spool; returns the exit status. */
export async function forgetLearned(configFile: string | undefined, key: string): Promise<number> {
  const config = configOrExit(configFile);
  const spool = new Spool(config.spool);
  try {
    const reply = await askAgent(controlSocketPath(spool.privateDir), { op: "forget-route", key });
    process.stdout.write(`${reply.ok ? reply.message : `homerelay: ${reply.error}`}\n`);
    return reply.ok ? 0 : 1;
  } catch (err) {
    if (!(err instanceof AgentNotRunning)) throw err;
  }
  // The agent is stopped: nobody else writes the table now.
  if (!(await (await LearnedRoutes.open(spool.privateDir)).forget(key, Date.now()))) {
    process.stderr.write(`homerelay: nothing is learned about ${key}\n`);
    return 1;
  }
  process.stdout.write(`${key}: forgotten; direct delivery is tried again\n`);
  return 0;
}

/** Add the `routes` subcommands to the program. */
export function addRoutesCommands(program: Command): void {
  const routes = program.command("routes").description("inspect and import routing");
  routes
    .command("test <address>")
    .description("show the route of a recipient, why it was chosen, and its MX hosts")
    .option("-c, --config <file>", "configuration file")
    .option("--from <sender>", "envelope sender (for sender-dependent routes)", "")
    .action((address: string, o: { config?: string; from: string }) => testRoute(o.config, address, o.from).then((code) => process.exit(code)));
  routes
    .command("import <file>")
    .description("convert a sendmail mailertable, qmail smtproutes or Postfix transport file to homerelay routes (YAML on stdout)")
    .requiredOption("--format <format>", "mailertable, smtproutes or transport")
    .action((file: string, o: { format: string }) => {
      if (!["mailertable", "smtproutes", "transport"].includes(o.format)) {
        process.stderr.write(`homerelay: --format must be mailertable, smtproutes or transport\n`);
        process.exit(64);
      }
      return importRouteFile(file, o.format as RouteFormat).then((code) => process.exit(code));
    });
  routes
    .command("learned")
    .description("list the receivers learned to refuse the home address (their mail goes by the fallback route)")
    .option("-c, --config <file>", "configuration file")
    .option("--json", "JSON for machines")
    .action((o: { config?: string; json?: boolean }) => printLearned(o.config, o.json === true).then((code) => process.exit(code)));
  routes
    .command("forget <domain>")
    .description("forget a learned domain or provider: direct delivery is tried again")
    .option("-c, --config <file>", "configuration file")
    .action((key: string, o: { config?: string }) => forgetLearned(o.config, key).then((code) => process.exit(code)));
}
