// The systemd units of both halves: `systemd-analyze verify` finds nothing to say about them (where
// the tool exists), their hardening is in place (read from the unit files), and their
// ExecStartPre command lines are real commands of the built CLIs that accept a real configuration.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { REPOSITORY_ROOT } from "../../infra/lib/lambda-bundle.js";

const run = promisify(execFile);
const UNITS = join(REPOSITORY_ROOT, "infra/systemd");
const AGENT = "homerelay-agent.service";
const CLOUD = "homerelay-cloud.service";
/** Where the units expect the repository and Node.js. */
const INSTALLED = "/opt/homerelay";
const NODE = "/usr/bin/node";

/** A unit file's settings: section → key → every value given, in order (systemd's keys may repeat). */
type Unit = Map<string, Map<string, string[]>>;

function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    if (line.startsWith("[") && line.endsWith("]")) {
      section = new Map();
      unit.set(line.slice(1, -1), section);
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(section !== undefined && eq > 0, `not a setting inside a section: ${line}`);
    const key = line.slice(0, eq).trim();
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return unit;
}

/** The last value of `key` in [Service] (the one systemd uses for single-valued keys), or undefined. */
function service(unit: Unit, key: string): string | undefined {
  return unit.get("Service")?.get(key)?.at(-1);
}

/** Is `tool` on the PATH? */
async function available(tool: string): Promise<boolean> {
  try {
    await run("sh", ["-c", `command -v ${tool}`]);
    return true;
  } catch {
    return false;
  }
}

describe("systemd units", () => {
  let agent: Unit;
  let cloud: Unit;
  let dir: string;
  before(async () => {
    agent = parseUnit(await readFile(join(UNITS, AGENT), "utf8"));
    cloud = parseUnit(await readFile(join(UNITS, CLOUD), "utf8"));
    dir = await mkdtemp(join(tmpdir(), "hr-systemd-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("systemd-analyze verify reports nothing for either unit", async (t) => {
    if (!(await available("systemd-analyze"))) {
      t.skip("systemd-analyze is not installed (Debian: apt-get install systemd): the units were not verified");
      return;
    }
    // verify checks that the programs exist: where Node.js is not /usr/bin/node, a copy names this test's node.
    for (const name of [AGENT, CLOUD]) {
      const text = await readFile(join(UNITS, name), "utf8");
      await writeFile(join(dir, name), existsSync(NODE) ? text : text.replaceAll(NODE, process.execPath));
    }
    const { stdout, stderr } = await run("systemd-analyze", ["verify", "--man=no", join(dir, AGENT), join(dir, CLOUD)]);
    // Unknown keys and unparsable values are only warnings (exit 0): any output at all is a finding.
    assert.equal(stdout + stderr, "");
  });

  test("the agent runs as its own user with CAP_NET_BIND_SERVICE only, on a read-only system but for the spool and mailboxes, restarted on failure", () => {
    assert.equal(service(agent, "User"), "homerelay");
    assert.equal(service(agent, "NoNewPrivileges"), "yes");
    assert.equal(service(agent, "CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    assert.equal(service(agent, "AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert.equal(service(agent, "ProtectSystem"), "strict");
    assert.deepEqual(agent.get("Service")!.get("ReadWritePaths")!.join(" ").split(/\s+/).sort(), ["/var/mail/homerelay", "/var/spool/homerelay"]);
    assert.equal(service(agent, "ProtectHome"), "yes");
    assert.equal(service(agent, "PrivateTmp"), "yes");
    assert.equal(service(agent, "SystemCallFilter"), "@system-service");
    assert.equal(service(agent, "Restart"), "on-failure");
    assert.equal(service(agent, "RestartPreventExitStatus"), "78");
    assert.equal(service(agent, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert.match(service(agent, "ExecStart")!, new RegExp(`^${NODE} --max-semi-space-size=4 ${INSTALLED}/dist/agent/cli\\.js agent --config /etc/homerelay/homerelay\\.yaml$`));
    assert.equal(agent.get("Install")?.get("WantedBy")?.[0], "multi-user.target");
  });

  test("the cloud runs `homerelay-cloud serve` as its own user with no capability, writing only its state directory, restarted on failure, reloaded with SIGHUP", () => {
    assert.equal(service(cloud, "User"), "homerelay-cloud");
    assert.equal(service(cloud, "NoNewPrivileges"), "yes");
    assert.equal(service(cloud, "CapabilityBoundingSet"), "");
    assert.equal(service(cloud, "AmbientCapabilities"), "");
    assert.equal(service(cloud, "ProtectSystem"), "strict");
    assert.equal(service(cloud, "ReadWritePaths"), undefined);
    assert.equal(service(cloud, "StateDirectory"), "homerelay-cloud");
    assert.equal(service(cloud, "ProtectHome"), "yes");
    assert.equal(service(cloud, "PrivateUsers"), "yes");
    assert.equal(service(cloud, "SystemCallFilter"), "@system-service");
    assert.equal(service(cloud, "Restart"), "on-failure");
    assert.equal(service(cloud, "RestartPreventExitStatus"), "78");
    assert.equal(service(cloud, "ExecReload"), "/bin/kill -HUP $MAINPID", "systemctl reload: keys rotated without a restart");
    assert.match(service(cloud, "ExecStart")!, new RegExp(`^${NODE} ${INSTALLED}/dist/cloud/cli\\.js serve --config /etc/homerelay-cloud/cloud\\.yaml$`));
    assert.equal(cloud.get("Install")?.get("WantedBy")?.[0], "multi-user.target");
  });

  test("each unit's ExecStartPre, run against the built CLI with a real configuration, checks it and says OK", async () => {
    const agentConfig = join(dir, "homerelay.yaml");
    await writeFile(agentConfig, `spool: ${join(dir, "spool")}\nmailboxes: ${join(dir, "mail")}\n`);
    const cloudConfig = join(dir, "cloud.yaml");
    await writeFile(
      cloudConfig,
      [
        'authority: ["relay.example.net"]',
        'keys: [{ id: home-1, publicKey: "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", senders: ["*@example.net"] }]',
        "onward: { transport: mx, helo: relay.example.net }",
        `store: ${join(dir, "store")}`,
        "",
      ].join("\n"),
    );
    for (const [unit, file, installedConfig] of [
      [agent, agentConfig, "/etc/homerelay/homerelay.yaml"],
      [cloud, cloudConfig, "/etc/homerelay-cloud/cloud.yaml"],
    ] as const) {
      const [program, ...args] = service(unit, "ExecStartPre")!
        .split(" ")
        .map((word) => (word === installedConfig ? file : word.replace(INSTALLED, REPOSITORY_ROOT)));
      assert.equal(program, NODE);
      const { stdout } = await run(process.execPath, args);
      assert.equal(stdout, `${file}: configuration OK\n`);
    }
  });
});
