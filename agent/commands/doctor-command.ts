/**
 * doctor-command — `homerelay doctor [--json]`: checks the setup and prints a line per finding
 * (`✓`, `!` for a warning, `✗` with its fix), or one JSON document for machines. Exit status 0
 * when nothing fails (warnings allowed), 1 when something does, 78 for a bad configuration.
 */
import type { Command } from "commander";
import { formatCheck, type CheckStatus } from "../doctor/check.js";
import { runDoctor } from "../doctor/doctor.js";
import { configOrExit } from "./load-config.js";

/** The exit status when some check fails. */
const EXIT_FAILED = 1;

/** Run doctor with `configFile` and print its findings; returns the exit status. */
export async function doctor(configFile: string | undefined, json: boolean): Promise<number> {
  const config = configOrExit(configFile);
  const report = await runDoctor(config);
  const count = (status: CheckStatus) => report.checks.filter((c) => c.status === status).length;
  const summary = { ok: count("ok"), warn: count("warn"), fail: count("fail") };
  if (json) {
    process.stdout.write(JSON.stringify({ configuration: config.source, publicAddress: report.publicAddress, checks: report.checks, summary }, null, 2) + "\n");
  } else {
    const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
    const verdict = summary.fail === 0 ? `no problems${summary.warn > 0 ? `, ${plural(summary.warn, "warning")}` : ""}` : `${plural(summary.fail, "problem")}, ${plural(summary.warn, "warning")}`;
    const lines = [`homerelay doctor: configuration ${config.source}, hostname ${config.hostname}`, ...report.checks.map(formatCheck), `${verdict} (${report.checks.length} checks)`];
    process.stdout.write(lines.join("\n") + "\n");
  }
  return summary.fail > 0 ? EXIT_FAILED : 0;
}

/** Add `doctor` to the program. */
export function addDoctorCommand(program: Command): void {
  program
    .command("doctor")
    .description("check the setup as a postmaster would: public address, PTR, blocklists, port 25, SPF/DKIM/DMARC/MX, the cloud, the certificate")
    .option("-c, --config <file>", "configuration file")
    .option("--json", "one JSON document with every check (name, status ok|warn|fail, detail, fix)")
    .action((o: { config?: string; json?: boolean }) => doctor(o.config, o.json === true).then((code) => process.exit(code)));
}
