// doctor: `homerelay doctor` run as the built CLI against a loopback DNS server with a good zone (every
// check ✓, exit 0) and broken ones (each ✗ with its fix, the same in --json), a loopback port 25 listener
// open and closed, a real cloud app that refuses a key, an expired certificate; the dynamic-PTR heuristic
// and the SPF reading on their own.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generate } from "selfsigned";
import { stringify } from "yaml";
import { dkimRecordText } from "../../agent/dkim/dkim-record.js";
import type { Check } from "../../agent/doctor/check.js";
import { judgePtrName, type PtrKind } from "../../agent/doctor/dynamic-ptr.js";
import { parseSpf, spfCovers } from "../../agent/doctor/spf-record.js";
import { MailResolver } from "../../shared/dns/resolver.js";
import { pkcs8PemFromSeed } from "../../shared/protocol/ed25519.js";
import { CLI } from "../support/agent-process.js";
import { makeKey } from "../support/cloud-client.js";
import { startDnsServer, type DnsServer, type DnsZone } from "../support/dns-server.js";
import { FaultyMx } from "../support/faulty-mx.js";
import { NatCloud } from "../support/nat-cloud.js";

const HOST = "home.example.net";
const ADDRESS = "203.0.113.7";
const PTR_NAME = "7.113.0.203.in-addr.arpa";
const KEY = makeKey("home-1");
const STRANGER = makeKey("stranger");
const DAY = 86400_000;

/** What `homerelay doctor --json` prints. */
interface Report {
  configuration: string;
  publicAddress: string | null;
  checks: Check[];
  summary: { ok: number; warn: number; fail: number };
}

/** One doctor run, as text and as JSON (two processes, run at once). */
interface Run {
  code: number;
  text: string;
  json: Report;
  jsonCode: number;
}

let dir: string;
let dns: DnsServer;
let cloud: NatCloud;
let mx: FaultyMx;
let dkimRecord: string;
let runs = 0;
const files = { cloudKey: "", strangerKey: "", dkimKey: "", cert: "", key: "", expiredCert: "", expiredKey: "" };

/** The zone of a well set-up home.example.net on 203.0.113.7, with `changes` laid over it. */
function zone(changes: DnsZone = {}): DnsZone {
  return {
    [PTR_NAME]: { PTR: [HOST] },
    [HOST]: { A: [ADDRESS], MX: [{ exchange: HOST, preference: 10 }], TXT: ["v=spf1 a:home.example.net include:_spf.relay.example ~all"] },
    "_spf.relay.example": { TXT: ["v=spf1 ip4:198.51.100.0/24 -all"] },
    "mail._domainkey.home.example.net": { TXT: [dkimRecord] },
    "_dmarc.home.example.net": { TXT: ["v=DMARC1; p=reject; adkim=s; aspf=r; rua=mailto:postmaster@home.example.net"] },
    ...changes,
  };
}

/** The agent configuration of the good setup, with `changes` laid over it. */
function config(changes: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hostname: HOST,
    spool: join(dir, "spool"),
    localDomains: [HOST],
    dns: { servers: [dns.server], timeout: 1 },
    tls: { cert: files.cert, key: files.key },
    cloud: { url: cloud.url, keyId: KEY.id, keyFile: files.cloudKey, timeout: 5 },
    routes: [{ match: "*", route: "mx", fallback: ["cloud"] }],
    dkim: { domains: { [HOST]: { selector: "mail", keyFile: files.dkimKey } } },
    limits: { messageSize: 1_000_000 },
    doctor: { port25: `127.0.0.1:${mx.port}`, timeout: 3 },
    ...changes,
  };
}

/** Run the built CLI with `args`; resolves with its exit status and output. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"], timeout: 30_000 });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Serve `dnsZone` and run doctor with `agentConfig`, as text and as JSON. */
async function doctor(dnsZone: DnsZone, agentConfig: Record<string, unknown>): Promise<Run> {
  dns.set(dnsZone);
  const file = join(dir, `homerelay-${++runs}.yaml`);
  await writeFile(file, stringify(agentConfig));
  const [text, json] = await Promise.all([cli(["doctor", "--config", file]), cli(["doctor", "--config", file, "--json"])]);
  assert.equal(text.stderr, "", text.stderr);
  return { code: text.code, text: text.stdout, json: JSON.parse(json.stdout) as Report, jsonCode: json.code };
}

/** The check `name` of a run's JSON, asserted to be there once. */
function jsonCheck(run: Run, name: string): Check {
  const found = run.json.checks.filter((c) => c.name === name);
  assert.equal(found.length, 1, `one check ${name} in ${JSON.stringify(run.json.checks.map((c) => c.name))}`);
  return found[0]!;
}

/** The check `name` of a run, asserted to be in the JSON once and to read the same in the text. */
function checkOf(run: Run, name: string): Check {
  const check = jsonCheck(run, name);
  const mark = { ok: "✓", warn: "!", fail: "✗" }[check.status];
  assert.ok(run.text.includes(`${mark} ${check.detail}${check.fix !== null ? ` — fix: ${check.fix}` : ""}\n`), `the text shows ${name} as the JSON does:\n${run.text}`);
  return check;
}

/** Assert that `run` failed (exit 1) on exactly the checks `names`, every other one passing. */
function assertFailures(run: Run, names: string[]): void {
  const failed = run.json.checks.filter((c) => c.status === "fail").map((c) => c.name);
  assert.deepEqual(failed.sort(), [...names].sort(), run.text);
  assert.equal(run.code, 1);
  assert.equal(run.jsonCode, 1);
  assert.equal(run.json.summary.fail, names.length);
}

/** A PEM certificate for HOST valid from `from` to `until` (ms). */
async function certificate(from: number, until: number): Promise<{ cert: string; key: string }> {
  const pems = await generate([{ name: "commonName", value: HOST }], {
    keyType: "ec",
    curve: "P-256",
    notBeforeDate: new Date(from),
    notAfterDate: new Date(until),
    extensions: [{ name: "subjectAltName", altNames: [{ type: 2, value: HOST }] }],
  });
  return { cert: pems.cert, key: pems.private };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hr-doctor-"));
  const dkim = generateKeyPairSync("rsa", { modulusLength: 2048 });
  dkimRecord = dkimRecordText(dkim.publicKey);
  const valid = await certificate(Date.now() - DAY, Date.now() + 90 * DAY);
  const expired = await certificate(Date.now() - 90 * DAY, Date.now() - DAY);
  for (const [name, content] of Object.entries({
    cloudKey: pkcs8PemFromSeed(KEY.seed),
    strangerKey: pkcs8PemFromSeed(STRANGER.seed),
    dkimKey: dkim.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    cert: valid.cert,
    key: valid.key,
    expiredCert: expired.cert,
    expiredKey: expired.key,
  })) {
    files[name as keyof typeof files] = join(dir, name);
    await writeFile(join(dir, name), content, { mode: 0o600 });
  }
  dns = await startDnsServer({});
  cloud = await NatCloud.start(ADDRESS, [KEY]);
  mx = await FaultyMx.start();
});

after(async () => {
  await mx.close();
  await cloud.close();
  await dns.close();
  await rm(dir, { recursive: true, force: true });
});

describe("homerelay doctor on a good setup", () => {
  test("every check passes, the text shows only ✓ lines, and the exit status is 0", async () => {
    const run = await doctor(zone(), config());
    assert.equal(run.code, 0, run.text);
    assert.equal(run.jsonCode, 0);
    assert.deepEqual(
      run.json.checks.filter((c) => c.status !== "ok"),
      [],
      run.text,
    );
    assert.equal(run.json.publicAddress, ADDRESS);
    assert.deepEqual(
      run.json.checks.map((c) => c.name),
      [
        "public-address",
        "ptr",
        "fcrdns",
        "ptr-dynamic",
        "helo",
        "dnsbl:zen.spamhaus.org",
        "dnsbl:b.barracudacentral.org",
        "dnsbl:bl.spamcop.net",
        "port25",
        `mx:${HOST}`,
        `spf:${HOST}`,
        `dkim:${HOST}`,
        `dmarc:${HOST}`,
        "cloud",
        "cloud-key",
        "cloud-clock",
        "cloud-size",
        "certificate",
      ],
    );
    assert.equal(checkOf(run, "public-address").detail, `public address ${ADDRESS}, as the cloud at ${cloud.url} sees it`);
    assert.equal(checkOf(run, "fcrdns").detail, `${HOST} resolves back to ${ADDRESS} (forward-confirmed reverse DNS)`);
    assert.equal(checkOf(run, `spf:${HOST}`).detail, `SPF of ${HOST} covers ${ADDRESS} (a:home.example.net); it also authorises include:_spf.relay.example`);
    assert.equal(checkOf(run, `dkim:${HOST}`).detail, `DKIM record mail._domainkey.${HOST} has a 2048-bit RSA key (the configured one)`);
    assert.equal(checkOf(run, `dmarc:${HOST}`).detail, `DMARC of ${HOST}: p=reject, adkim=s, aspf=r (_dmarc.${HOST}); the mail aligns through SPF and DKIM`);
    assert.match(checkOf(run, "port25").detail, new RegExp(`^outbound port 25 is open: 127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${mx.port} greeted this box$`));
    assert.equal(checkOf(run, "cloud-key").detail, `cloud accepts key home-1; it sees this box as ${ADDRESS}`);
    assert.equal(checkOf(run, "cloud-size").detail, "the cloud takes messages up to 4400000 octets (smtpd accepts up to 1000000)");
    assert.match(checkOf(run, "cloud-clock").detail, /^clock agrees with the cloud's \(signatures allow ±300 s\)$/);
    assert.match(run.text, /^homerelay doctor: configuration .*homerelay-\d+\.yaml, hostname home\.example\.net\n/);
    assert.match(run.text, /\nno problems \(18 checks\)\n$/);
    assert.doesNotMatch(run.text, /^[!✗]/m);
  });
});

describe("homerelay doctor on broken setups", () => {
  test("no PTR record", async () => {
    const run = await doctor(zone({ [PTR_NAME]: {} }), config());
    assertFailures(run, ["ptr"]);
    const ptr = checkOf(run, "ptr");
    assert.equal(ptr.detail, `${ADDRESS} has no PTR record: many receivers refuse mail from an address without one`);
    assert.match(ptr.fix!, /^ask whoever holds the address \(your ISP\) to set its PTR to home\.example\.net, or send through the cloud or a smarthost/);
    assert.ok(!run.json.checks.some((c) => c.name === "fcrdns"), "no forward confirmation without a PTR");
  });

  test("a PTR name that looks dynamic", async () => {
    const pool = "c-203-0-113-7.hsd1.ca.comcast.net";
    const run = await doctor(zone({ [PTR_NAME]: { PTR: [pool] }, [pool]: { A: [ADDRESS] } }), config());
    // The HELO name is not the PTR name: a warning, not a failure.
    assertFailures(run, ["ptr-dynamic"]);
    const look = checkOf(run, "ptr-dynamic");
    assert.equal(look.detail, `PTR name ${pool} looks like a dynamic subscriber address (the name has the word "hsd" and spells out the address (203-0-113-7)); Outlook, Spamhaus PBL users and many others refuse such senders`);
    assert.match(look.fix!, /^ask your ISP for a static address with the PTR home\.example\.net, or send through the cloud or a smarthost/);
    assert.equal(checkOf(run, "fcrdns").status, "ok");
    assert.equal(checkOf(run, "helo").status, "warn");
  });

  test("a PTR that is not forward-confirmed", async () => {
    const run = await doctor(zone({ [PTR_NAME]: { PTR: ["mail.example.org"] }, "mail.example.org": { A: ["192.0.2.99"] } }), config());
    assertFailures(run, ["fcrdns"]);
    const fcrdns = checkOf(run, "fcrdns");
    assert.equal(fcrdns.detail, `the PTR is not forward-confirmed: mail.example.org resolves to 192.0.2.99, not to ${ADDRESS}; receivers such as Gmail refuse mail from such addresses`);
    assert.equal(fcrdns.fix, `give mail.example.org an address record for ${ADDRESS}, or have the PTR set to a name that has one`);
  });

  test("listed on a blocklist, its TXT reason shown", async () => {
    const listing = `7.113.0.203.bl.spamcop.net`;
    const run = await doctor(zone({ [listing]: { A: ["127.0.0.2"], TXT: [`Blocked - see https://www.spamcop.net/bl.shtml?${ADDRESS}`] } }), config());
    assertFailures(run, ["dnsbl:bl.spamcop.net"]);
    const listed = checkOf(run, "dnsbl:bl.spamcop.net");
    assert.equal(
      listed.detail,
      `${ADDRESS} is listed on bl.spamcop.net (127.0.0.2: listed): "Blocked - see https://www.spamcop.net/bl.shtml?${ADDRESS}"; receivers that use bl.spamcop.net refuse mail from it`,
    );
    assert.match(listed.fix!, /^find out why \(a compromised device on your network\?\), then ask bl\.spamcop\.net for removal/);
    assert.ok(dns.queries.some((q) => q.name === listing && q.type === "A"), "the list was asked through the configured resolver");
  });

  test("Spamhaus answers 127.255.255.254: a refused query, not a listing", async () => {
    const run = await doctor(zone({ "7.113.0.203.zen.spamhaus.org": { A: ["127.255.255.254"] } }), config());
    assertFailures(run, ["dnsbl:zen.spamhaus.org"]);
    const refused = checkOf(run, "dnsbl:zen.spamhaus.org");
    assert.equal(
      refused.detail,
      `zen.spamhaus.org refused the query (127.255.255.254: the query came through a public or open resolver, which Spamhaus does not answer); this is not a listing, and says nothing about ${ADDRESS}`,
    );
    assert.match(refused.fix!, /resolver of your own .* or use a Spamhaus DQS key \(zone <key>\.zen\.dq\.spamhaus\.net in doctor\.dnsbl\)$/);
    assert.doesNotMatch(refused.detail, /is listed/);
  });

  test("no SPF record", async () => {
    const run = await doctor(zone({ [HOST]: { A: [ADDRESS], MX: [{ exchange: HOST, preference: 10 }] } }), config());
    // DMARC p=reject still passes through DKIM.
    assertFailures(run, [`spf:${HOST}`]);
    const spf = checkOf(run, `spf:${HOST}`);
    assert.equal(spf.detail, `${HOST} has no SPF record: receivers cannot tell who may send as ${HOST} (Gmail and Yahoo require SPF or DKIM)`);
    assert.equal(spf.fix, `add a TXT record to ${HOST}: "v=spf1 a:home.example.net include:<your cloud's onward relay> ~all"`);
  });

  test("an SPF record that does not cover the home address", async () => {
    const run = await doctor(zone({ [HOST]: { A: [ADDRESS], MX: [{ exchange: HOST, preference: 10 }], TXT: ["v=spf1 ip4:192.0.2.0/24 include:_spf.relay.example -all"] } }), config());
    assertFailures(run, [`spf:${HOST}`]);
    const spf = checkOf(run, `spf:${HOST}`);
    assert.equal(
      spf.detail,
      `the SPF record of ${HOST} ("v=spf1 ip4:192.0.2.0/24 include:_spf.relay.example -all") does not cover ${ADDRESS}: -all decides against it (checked ip4, ip6, a, mx and one level of include)`,
    );
    assert.equal(spf.fix, "add a:home.example.net to the record (it follows the address when the address changes)");
  });

  test("no DMARC record", async () => {
    const run = await doctor(zone({ "_dmarc.home.example.net": {} }), config());
    assertFailures(run, [`dmarc:${HOST}`]);
    const dmarc = checkOf(run, `dmarc:${HOST}`);
    assert.match(dmarc.detail, /^home\.example\.net has no DMARC record \(_dmarc\.home\.example\.net\)/);
    assert.equal(dmarc.fix, `add a TXT record at _dmarc.${HOST}: "v=DMARC1; p=none; rua=mailto:postmaster@${HOST}"`);
    assert.ok(dns.queries.some((q) => q.name === "_dmarc.example.net"), "the organisational domain was asked too");
  });

  test("an MX that points elsewhere", async () => {
    const run = await doctor(zone({ [HOST]: { A: [ADDRESS], MX: [{ exchange: "mx.provider.example", preference: 10 }], TXT: ["v=spf1 a -all"] }, "mx.provider.example": { A: ["192.0.2.25"] } }), config());
    assertFailures(run, [`mx:${HOST}`]);
    const mxCheck = checkOf(run, `mx:${HOST}`);
    assert.equal(mxCheck.detail, `MX of ${HOST} is mx.provider.example (192.0.2.25), not this box (${HOST}, ${ADDRESS})`);
    assert.match(mxCheck.fix!, /^point the MX of home\.example\.net at home\.example\.net \(home\.example\.net\. MX 10 home\.example\.net\.\)/);
  });

  test("a cloud that does not know the key: 401 unknown-key, and the listing to add", async () => {
    const run = await doctor(zone(), config({ cloud: { url: cloud.url, keyId: STRANGER.id, keyFile: files.strangerKey, timeout: 5 } }));
    // Without whoami there is no public address, so nothing that hangs on it is checked.
    assertFailures(run, ["cloud-key", "public-address"]);
    const key = checkOf(run, "cloud-key");
    assert.match(key.detail, /^cloud refused key stranger: \/v1\/whoami answered 401 unknown-key: /);
    assert.equal(key.fix, `add the key to the cloud's keys: list: { id: stranger, publicKey: "${STRANGER.publicKey}", senders: [...] }`);
    assert.equal(run.json.publicAddress, null);
    assert.ok(!run.json.checks.some((c) => c.name === "ptr" || c.name.startsWith("dnsbl:")));
  });

  test("a clock ten minutes off the cloud's: signatures refused as expired, and the skew named", async (t) => {
    cloud.clockOffsetMs = 600_000;
    t.after(() => (cloud.clockOffsetMs = 0));
    const run = await doctor(zone(), config());
    assertFailures(run, ["cloud-key", "cloud-clock", "public-address"]);
    const clock = checkOf(run, "cloud-clock");
    assert.match(clock.detail, /^clock is about 600 s behind the cloud's \(signatures allow ±300 s\): the cloud refuses every request as signature-expired$/);
    assert.equal(clock.fix, "set this machine's clock right (timedatectl set-ntp true, or chrony)");
    // The cloud's words name the signature's time, which differs between the two runs: only the JSON is read whole.
    const key = jsonCheck(run, "cloud-key");
    assert.match(key.detail, /^cloud refused key home-1: \/v1\/whoami answered 401 signature-expired: /);
    assert.equal(key.fix, clock.fix);
    assert.match(run.text, /^✗ cloud refused key home-1: \/v1\/whoami answered 401 signature-expired: .* — fix: set this machine's clock right/m);
  });

  test("an expired certificate", async () => {
    const run = await doctor(zone(), config({ tls: { cert: files.expiredCert, key: files.expiredKey } }));
    assertFailures(run, ["certificate"]);
    const cert = checkOf(run, "certificate");
    assert.match(cert.detail, /^certificate .*expiredCert expired on \d{4}-\d\d-\d\d: senders that verify refuse STARTTLS$/);
    assert.equal(cert.fix, "renew it (certbot renew) and send the agent SIGHUP");
  });

  test("port 25 closed: the connection is refused", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as { port: number }).port;
    await new Promise((resolve) => closed.close(resolve));
    const run = await doctor(zone(), config({ doctor: { port25: `127.0.0.1:${port}`, timeout: 3 } }));
    assertFailures(run, ["port25"]);
    const port25 = checkOf(run, "port25");
    assert.equal(port25.detail, `outbound port 25: connect to 127.0.0.1[127.0.0.1]:${port}: Connection refused — a firewall on the way (your ISP's?) refuses it`);
    assert.equal(port25.fix, "send through a smarthost (your ISP's relay, on port 587 with AUTH) or the cloud route");
  });

  test("a configuration that never sends direct only warns about the home address's reputation", async () => {
    const run = await doctor(zone({ [PTR_NAME]: {} }), config({ routes: [{ match: "*", route: "cloud" }] }));
    assert.equal(run.code, 0, run.text);
    const ptr = checkOf(run, "ptr");
    assert.equal(ptr.status, "warn");
    assert.match(ptr.detail, /\(this configuration sends nothing direct to MX, so receivers never see it\)$/);
  });
});

describe("the dynamic-PTR heuristic", () => {
  const cases: [string, string, PtrKind][] = [
    ["c-73-45-123-9.hsd1.ca.comcast.net", "73.45.123.9", "dynamic"],
    ["cpe-72-182-45-10.austin.res.rr.com", "72.182.45.10", "dynamic"],
    ["pool-71-105-23-11.nycmny.fios.verizon.net", "71.105.23.11", "dynamic"],
    ["p5b0d1e2f.dip0.t-ipconnect.de", "91.13.30.47", "dynamic"],
    ["ip5f5a1b2c.dynamic.kabel-deutschland.de", "95.90.27.44", "dynamic"],
    ["dslb-088-072-145-010.088.072.pools.vodafone-ip.de", "88.72.145.10", "dynamic"],
    ["host81-152-34-12.range81-152.btcentralplus.com", "81.152.34.12", "dynamic"],
    ["ppp-94-64-12-3.home.otenet.gr", "94.64.12.3", "dynamic"],
    ["adsl-99-12-34-56.dsl.irvnca.sbcglobal.net", "99.12.34.56", "dynamic"],
    ["24-55-110-33.dhcp.roch.mn.charter.com", "24.55.110.33", "dynamic"],
    ["customer-187-141-10-3.uninet-ide.com.mx", "187.141.10.3", "dynamic"],
    ["bband-dyn34.178-41-13.t-com.sk", "178.41.13.34", "dynamic"],
    ["5-12-34-56.residential.rdsnet.ro", "5.12.34.56", "dynamic"],
    ["2001-db8-1234-5678-abcd.ipv6.example-isp.net", "2001:db8:1234:5678::abcd", "dynamic"],
    ["static-203-0-113-7.isp.example", "203.0.113.7", "generic"],
    ["203.0.113.7.static.example-isp.net", "203.0.113.7", "generic"],
    ["mail.example.net", "203.0.113.7", "custom"],
    ["home.example.net", "203.0.113.7", "custom"],
    ["mx1.mail-provider.com", "198.51.100.4", "custom"],
    ["mail.dslreports.com", "64.91.255.98", "custom"],
    ["smtp.poolparty.example", "192.0.2.8", "custom"],
    ["mail2.example.co.uk", "192.0.2.9", "custom"],
    ["relay.cable-ag.de", "192.0.2.10", "custom"],
    ["mx01.example.org", "192.0.2.11", "custom"],
  ];
  for (const [name, address, kind] of cases) {
    test(`${name} (${address}) is ${kind}`, () => {
      assert.equal(judgePtrName(name, address).kind, kind);
    });
  }
});

describe("reading SPF records", () => {
  let spfDns: DnsServer;
  let resolver: MailResolver;
  before(async () => {
    spfDns = await startDnsServer({
      "home.example.net": { A: ["203.0.113.7"], MX: [{ exchange: "mx.example.net", preference: 10 }] },
      "mx.example.net": { A: ["198.51.100.25"] },
      "_spf.provider.example": { TXT: ["v=spf1 ip6:2001:db8::/32 ip4:192.0.2.0/25 include:_deeper.provider.example -all"] },
      "_spf.redirect.example": { TXT: ["v=spf1 a:home.example.net -all"] },
    });
    resolver = new MailResolver({ servers: [spfDns.server], timeoutSeconds: 1 });
  });
  after(() => spfDns.close());

  const covers = (record: string, address: string) => spfCovers(resolver, "home.example.net", parseSpf(record), address);

  test("ip4, ip6, a, mx, include and redirect terms are followed one level", async () => {
    assert.deepEqual(await covers("v=spf1 ip4:203.0.113.0/24 -all", "203.0.113.7"), { covered: true, by: "ip4:203.0.113.0/24" });
    assert.deepEqual(await covers("v=spf1 a -all", "203.0.113.7"), { covered: true, by: "a" });
    assert.deepEqual(await covers("v=spf1 a/24 -all", "203.0.113.200"), { covered: true, by: "a/24" });
    assert.deepEqual(await covers("v=spf1 mx -all", "198.51.100.25"), { covered: true, by: "mx" });
    assert.deepEqual(await covers("v=spf1 include:_spf.provider.example -all", "2001:db8::25"), { covered: true, by: "include:_spf.provider.example (its ip6:2001:db8::/32)" });
    assert.deepEqual(await covers("v=spf1 redirect=_spf.redirect.example", "203.0.113.7"), { covered: true, by: "redirect=_spf.redirect.example (its a:home.example.net)" });
  });

  test("the first matching term decides, and what was not followed is named", async () => {
    assert.deepEqual(await covers("v=spf1 -ip4:203.0.113.7 a -all", "203.0.113.7"), { covered: false, failedBy: "-ip4:203.0.113.7", unchecked: [] });
    assert.deepEqual(await covers("v=spf1 include:_spf.provider.example exists:%{i}.spf.example ~all", "203.0.113.7"), {
      covered: false,
      failedBy: "~all",
      unchecked: ["include:_deeper.provider.example inside include:_spf.provider.example", "exists:%{i}.spf.example"],
    });
  });

  test("a record that is not SPF, or has an unknown term, is refused with the term", () => {
    assert.throws(() => parseSpf("v=spf2 -all"), /not an SPF record/);
    assert.throws(() => parseSpf("v=spf1 ip5:1.2.3.4 -all"), /unknown SPF term "ip5:1\.2\.3\.4"/);
  });
});
