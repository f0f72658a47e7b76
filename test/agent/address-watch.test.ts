// address-watch: the agent asks the cloud's /v1/whoami for its public address; when the answer changes it logs
// `public address changed from A to B`, moves the DynDNS name with a dyndns2 update (answers good, badauth, 911
// handled), runs the DNS checks of the new address and emits `address`. In process, and in the built agent.
import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { stringify } from "yaml";
import { loadAgentConfig } from "../../agent/config.js";
import type { ConfigError } from "../../shared/config-file.js";
import { AddressWatch, addressWatchSettings, type AddressChange } from "../../agent/doctor/address-watch.js";
import { DynDnsUpdater } from "../../agent/doctor/dyndns-update.js";
import { MailResolver } from "../../shared/dns/resolver.js";
import { createMailLog, type MailLog } from "../../shared/log.js";
import { pkcs8PemFromSeed } from "../../shared/protocol/ed25519.js";
import { startAgent } from "../support/agent-process.js";
import { makeKey } from "../support/cloud-client.js";
import { startDnsServer, type DnsServer, type DnsZone } from "../support/dns-server.js";
import { DynDnsServer } from "../support/dyndns-server.js";
import { NatCloud } from "../support/nat-cloud.js";

const HOST = "home.example.net";
const OLD = "203.0.113.7";
const NEW = "198.51.100.20";
const ACCOUNT = { user: "homeuser", password: "s3cret-update-key" };
const KEY = makeKey("home-1");

/** The zone as it stands before the change: the DynDNS name and the PTR on the old address. */
const ZONE: DnsZone = {
  [HOST]: { A: [OLD], MX: [{ exchange: HOST, preference: 10 }], TXT: ["v=spf1 a:home.example.net -all"] },
  "7.113.0.203.in-addr.arpa": { PTR: [HOST] },
};

let dir: string;
let dns: DnsServer;
let cloud: NatCloud;
let dyndns: DynDnsServer;

/** A mail log in the agent's text format, kept in memory. */
function recordingLog(): { log: MailLog; text(): string } {
  let text = "";
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString();
      done();
    },
  });
  return { log: createMailLog({ format: "text", level: "info", destination }, "address"), text: () => text };
}

/** What every agent of these tests is configured with: the loopback DNS, the cloud, the DynDNS account. */
function watchedConfig(): Record<string, unknown> {
  return {
    localDomains: [HOST],
    dns: { servers: [dns.server], timeout: 1 },
    cloud: { url: cloud.url, keyId: KEY.id, keyFile: join(dir, "home-1.key"), timeout: 5 },
    dyndns: { server: dyndns.url, user: ACCOUNT.user, passwordFile: join(dir, "dyndns.secret") },
  };
}

/** The agent configuration of these tests, as YAML in the temporary directory; `password` goes to the DynDNS password file. */
async function configFile(password: string): Promise<string> {
  await writeFile(join(dir, "dyndns.secret"), `${password}\n`, { mode: 0o600 });
  const file = join(dir, "homerelay.yaml");
  await writeFile(file, stringify({ hostname: HOST, spool: join(dir, "spool"), ...watchedConfig() }));
  return file;
}

/** A watch on the configuration `file`, with the first address learned. */
async function watching(file: string): Promise<{ watch: AddressWatch; first: AddressChange; log: () => string }> {
  const recorded = recordingLog();
  const watch = new AddressWatch(recorded.log);
  const first = once(watch, "address") as Promise<[AddressChange]>;
  watch.configure(await addressWatchSettings(loadAgentConfig(file), recorded.log, "homerelay/test"));
  const [change] = await first;
  return { watch, first: change, log: recorded.text };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hr-address-watch-"));
  await writeFile(join(dir, "home-1.key"), pkcs8PemFromSeed(KEY.seed), { mode: 0o600 });
  dns = await startDnsServer(ZONE);
  cloud = await NatCloud.start(OLD, [KEY]);
  dyndns = await DynDnsServer.start(ACCOUNT, { [HOST]: OLD });
});

after(async () => {
  await dyndns.close();
  await cloud.close();
  await dns.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  dns.set(ZONE);
  cloud.address = OLD;
  dyndns.forced = null;
  dyndns.names.set(HOST, OLD);
  dyndns.requests.length = 0;
});

describe("the address watch in process", () => {
  test("a new address is logged, the DynDNS name follows it, its checks run, and the hook hears of it", async (t) => {
    const { watch, first, log } = await watching(await configFile(ACCOUNT.password));
    t.after(() => watch.stop());
    assert.deepEqual({ previous: first.previous, current: first.current }, { previous: null, current: OLD });
    assert.match(log(), /address\[\d+\]: public address is 203\.0\.113\.7 \(as the cloud at http:\/\/127\.0\.0\.1:\d+ sees it\)\n/);
    // The name already carries the address: no update (providers block repeated nochg updates).
    assert.equal(dyndns.requests.length, 0);
    assert.equal(first.checks.find((c) => c.name === "ptr")?.status, "ok");

    cloud.address = NEW;
    const changed = once(watch, "address") as Promise<[AddressChange]>;
    await watch.check();
    const [change] = await changed;
    assert.equal(change.previous, OLD);
    assert.equal(change.current, NEW);
    assert.equal(watch.current, NEW);
    assert.match(log(), /address\[\d+\]: public address changed from 203\.0\.113\.7 to 198\.51\.100\.20\n/);

    assert.deepEqual(
      dyndns.requests.map((r) => ({ hostname: r.hostname, myip: r.myip, user: r.user, password: r.password, userAgent: r.userAgent, answer: r.answer })),
      [{ hostname: HOST, myip: NEW, user: ACCOUNT.user, password: ACCOUNT.password, userAgent: "homerelay/test", answer: `good ${NEW}` }],
    );
    assert.equal(dyndns.names.get(HOST), NEW);
    assert.match(log(), new RegExp(`home\\.example\\.net: address set to 198\\.51\\.100\\.20 at ${dyndns.url.replace(/\./g, "\\.")} \\(good 198\\.51\\.100\\.20\\)\\n`));

    // The new address has no PTR: the re-run checks say so in the log and in the event.
    const ptr = change.checks.find((c) => c.name === "ptr");
    assert.equal(ptr?.status, "fail");
    assert.match(log(), /warning: check ptr of 198\.51\.100\.20: 198\.51\.100\.20 has no PTR record: many receivers refuse mail from an address without one; fix: ask whoever holds the address/);
    assert.match(log(), /checks of 198\.51\.100\.20: \d+ problems? \(homerelay doctor tells more\)\n/);

    // Asked again with no change: no event, no update.
    let heard = 0;
    watch.on("address", () => heard++);
    await watch.check();
    assert.equal(heard, 0);
    assert.equal(dyndns.requests.length, 1);
  });

  test("badauth stops the updates until the configuration is fixed", async (t) => {
    const { watch, log } = await watching(await configFile("wrong password"));
    t.after(() => watch.stop());
    cloud.address = NEW;
    await watch.check();
    assert.deepEqual(
      dyndns.requests.map((r) => r.answer),
      ["badauth"],
    );
    assert.match(log(), /error: home\.example\.net: update refused by http:\/\/127\.0\.0\.1:\d+ \(badauth: the user name or password is wrong\); no more updates until the dyndns: section is fixed and the agent reloaded\n/);
    cloud.address = "198.51.100.21";
    await watch.check();
    assert.match(log(), /public address changed from 198\.51\.100\.20 to 198\.51\.100\.21\n/);
    assert.equal(dyndns.requests.length, 1, "no update after badauth");
  });

  test("a cloud that sees a private address is not taken for the public one", async (t) => {
    cloud.address = "192.168.1.20";
    const recorded = recordingLog();
    const watch = new AddressWatch(recorded.log);
    t.after(() => watch.stop());
    let heard = 0;
    watch.on("address", () => heard++);
    watch.configure(await addressWatchSettings(loadAgentConfig(await configFile(ACCOUNT.password)), recorded.log, "homerelay/test"));
    await watch.check();
    assert.match(recorded.text(), /warning: the cloud at http:\/\/127\.0\.0\.1:\d+ sees this box as 192\.168\.1\.20, a private address: it cannot tell the public address\n/);
    assert.equal(heard, 0);
    assert.equal(watch.current, null);
    assert.equal(dyndns.requests.length, 0);
  });
});

describe("dyndns2 updates", () => {
  test("911 from the provider: no new update for 30 minutes, then one", async () => {
    const recorded = recordingLog();
    let now = Date.UTC(2025, 0, 6, 9, 0, 0);
    const resolver = new MailResolver({ servers: [dns.server], timeoutSeconds: 1 });
    const updater = new DynDnsUpdater({ server: dyndns.url, hostname: HOST, user: ACCOUNT.user, password: ACCOUNT.password, userAgent: "homerelay/test" }, resolver, recorded.log, () => now);
    dyndns.forced = "911";
    assert.deepEqual(await updater.follow(NEW), { kind: "provider-trouble", answer: "911" });
    assert.match(recorded.text(), /warning: home\.example\.net: http:\/\/127\.0\.0\.1:\d+ has trouble \(911\); next update in 30 minutes at the earliest\n/);
    now += 29 * 60_000;
    assert.equal(await updater.follow(NEW), null);
    assert.equal(dyndns.requests.length, 1);
    dyndns.forced = null;
    now += 2 * 60_000;
    assert.deepEqual(await updater.follow(NEW), { kind: "updated", answer: `good ${NEW}` });
    assert.equal(dyndns.requests.length, 2);
  });

  test("nohost is a refusal; nochg is remembered as done", async () => {
    const recorded = recordingLog();
    const resolver = new MailResolver({ servers: [dns.server], timeoutSeconds: 1 });
    const other = new DynDnsUpdater({ server: dyndns.url, hostname: "other.example.net", user: ACCOUNT.user, password: ACCOUNT.password, userAgent: "homerelay/test" }, resolver, recorded.log);
    assert.deepEqual(await other.follow(NEW), { kind: "refused", answer: "nohost" });
    assert.equal(await other.follow("198.51.100.22"), null);
    // The provider already has NEW, but DNS still says OLD (its TTL): the update answers nochg.
    dyndns.names.set(HOST, NEW);
    const updater = new DynDnsUpdater({ server: dyndns.url, hostname: HOST, user: ACCOUNT.user, password: ACCOUNT.password, userAgent: "homerelay/test" }, resolver, recorded.log);
    assert.deepEqual(await updater.follow(NEW), { kind: "unchanged", answer: `nochg ${NEW}` });
    assert.equal(await updater.follow(NEW), null);
    assert.equal(dyndns.requests.length, 2);
    assert.match(recorded.text(), /home\.example\.net: already had address 198\.51\.100\.20 at http:\/\/127\.0\.0\.1:\d+ \(nochg 198\.51\.100\.20\)\n/);
  });
});

describe("configuration of the watch", () => {
  const problems = async (yaml: Record<string, unknown>): Promise<string[]> => {
    const file = join(dir, "refused.yaml");
    await writeFile(file, stringify(yaml));
    try {
      loadAgentConfig(file);
      return [];
    } catch (err) {
      return (err as ConfigError).problems.map((p) => `${p.path}: ${p.message}`);
    }
  };
  const cloudSection = { url: "https://relay.example.net", keyId: "home-1", keyFile: "/etc/homerelay/home-1.key" };
  const dyndnsSection = { server: "http://members.dyndns.example", user: "u", passwordFile: "/etc/homerelay/dyndns.secret" };

  test("publicAddress auto needs a cloud; dyndns needs https and the cloud's view of the address", async () => {
    assert.deepEqual(await problems({ publicAddress: "auto" }), ["publicAddress: auto asks the cloud (GET /v1/whoami), so it needs a cloud: section; or give the address"]);
    assert.deepEqual(await problems({ publicAddress: "home" }), ["publicAddress: expected auto or an IP address such as 203.0.113.7"]);
    assert.deepEqual(await problems({ cloud: cloudSection, dyndns: dyndnsSection }), [
      "dyndns.server: the update server must be reached over https:// (plain http:// only to a loopback host): the password goes with every update",
    ]);
    assert.deepEqual(await problems({ cloud: cloudSection, publicAddress: "203.0.113.7", dyndns: { ...dyndnsSection, server: "https://members.dyndns.example" } }), [
      "dyndns: dyndns updates follow the address the cloud sees: they need a cloud: section and publicAddress auto (or unset)",
    ]);
  });

  test("doctor's defaults are the well-known lists and Gmail's MX", () => {
    const config = loadAgentConfig(null);
    assert.deepEqual(config.doctor, { dnsbl: ["zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net"], port25: "gmail-smtp-in.l.google.com:25", timeout: 10, watchInterval: 300 });
    assert.equal(config.publicAddress, undefined);
  });
});

describe("the address watch in the agent", () => {
  test("the running agent logs the change and updates the DynDNS name", async (t) => {
    await writeFile(join(dir, "dyndns.secret"), `${ACCOUNT.password}\n`, { mode: 0o600 });
    const agent = await startAgent({ ...watchedConfig(), doctor: { watchInterval: 0.2 } });
    t.after(() => agent.cleanup());
    await agent.waitForLog(/homerelay\/address\[\d+\]: public address is 203\.0\.113\.7 \(as the cloud at http:\/\/127\.0\.0\.1:\d+ sees it\)\n/);
    await agent.waitForLog(/homerelay\/dyndns\[\d+\]: home\.example\.net already has address 203\.0\.113\.7\n/);
    const mark = agent.log().length;
    cloud.address = NEW;
    await agent.waitForLog(/homerelay\/address\[\d+\]: public address changed from 203\.0\.113\.7 to 198\.51\.100\.20\n/, 10_000, mark);
    await agent.waitForLog(/homerelay\/dyndns\[\d+\]: home\.example\.net: address set to 198\.51\.100\.20 at http:\/\/127\.0\.0\.1:\d+ \(good 198\.51\.100\.20\)\n/, 10_000, mark);
    await agent.waitForLog(/homerelay\/address\[\d+\]: checks of 198\.51\.100\.20: /, 10_000, mark);
    assert.deepEqual(
      dyndns.requests.map((r) => [r.myip, r.userAgent]),
      [[NEW, "homerelay/0.1.0"]],
    );
    assert.equal(await agent.stop(), 0);
  });
});
