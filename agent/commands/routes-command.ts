/**
 * routes-command — `homerelay routes test ADDRESS` (which way a recipient goes and why, with the
 * MX hosts the resolver returns) and `homerelay routes import FILE --format …` (seed formats to YAML).
 */
import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { MailResolver } from "../../shared/dns/resolver.js";
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
  if (choice.steps.some((s) => s.kind === "mx")) {
    const resolver = new MailResolver({ ...(config.dns.servers ? { servers: config.dns.servers } : {}), timeoutSeconds: config.dns.timeout });
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
}
