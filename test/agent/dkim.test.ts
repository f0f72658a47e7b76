// dkim: the agent DKIM-signs mail leaving by mx and cloud routes with keys from `homerelay dkim keygen`, checked by an
// independent verifier (mailauth) against the TXT records keygen printed; the cloud route's signature survives SES's
// rewriting of Message-ID and Date; local delivery stays unsigned; unsafe or unusable key files stop the agent.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { CLI, startAgent, type AgentProcess } from "../support/agent-process.js";
import { CloudProcess } from "../support/cloud-process.js";
import { mailbox, mxRecords as mx, startMxWorld, waitForDelivery, worldConfig, type MxHost, type MxWorld } from "../support/mx-world.js";
import { queueIdOf, sendMail, SENDER } from "../support/queue-durability.js";

/** mailauth's DKIM verifier (no type declarations of its own): one result per DKIM-Signature field. */
interface DkimResult {
  signingDomain: string;
  selector: string;
  status: { result: string; comment?: string };
  signingHeaders: { keys: string };
}
const { dkimVerify } = createRequire(import.meta.url)("mailauth/lib/dkim/verify") as {
  dkimVerify(message: Buffer, options: { resolver: (name: string, type: string) => Promise<string[][]> }): Promise<{ results: DkimResult[] }>;
};

/** TXT records by owner name, as `dkim keygen` printed them: the resolver the verifier asks (no network). */
const records = new Map<string, string[]>();

/** Verify every DKIM-Signature of `raw` against the records keygen printed. */
async function verify(raw: Buffer): Promise<DkimResult[]> {
  const { results } = await dkimVerify(raw, {
    resolver: async (name, type) => {
      const record = type === "TXT" ? records.get(name) : undefined;
      if (!record) throw Object.assign(new Error(`no ${type} record for ${name}`), { code: "ENOTFOUND" });
      return [record];
    },
  });
  return results;
}

/** A complete CRLF message with the given From: (Date: and Message-ID: included). */
function message(from: string, to: string, subject: string, extraHeaders = ""): string {
  return `${extraHeaders}From: ${from}\r\nTo: <${to}>\r\nSubject: ${subject}\r\nDate: Mon, 06 Jan 2025 09:00:00 +0000\r\nMessage-ID: <${subject.replace(/\W/g, "")}@home.example.net>\r\n\r\n${subject}: body\r\n`;
}

/** `raw` with its Message-ID: and Date: fields replaced, as Amazon SES does. */
function asSesRewritesIt(raw: Buffer): Buffer {
  const text = raw.toString("latin1");
  const rewritten = text.replace(/\r\nMessage-ID: [^\r]*/i, "\r\nMessage-ID: <0100019a-ses-rewritten@email.amazonses.com>").replace(/\r\nDate: [^\r]*/, "\r\nDate: Tue, 07 Jan 2025 10:11:12 +0000");
  assert.notEqual(rewritten, text);
  return Buffer.from(rewritten, "latin1");
}

/** `homerelay dkim keygen` into `dir`: the key file and the TXT record it printed, parsed back. */
function dkimKeygen(dir: string, domain: string, selector: string): { keyFile: string; name: string; strings: string[]; stdout: string } {
  const run = spawnSync(process.execPath, [CLI, "dkim", "keygen", "--domain", domain, "--selector", selector, "--out", dir], { encoding: "utf8", timeout: 30_000 });
  assert.equal(run.status, 0, run.stderr);
  const keyFile = /^wrote (\S+) \(RSA 2048-bit private key, PKCS#8 PEM, mode 0600\)$/m.exec(run.stdout)?.[1];
  const txt = /^(\S+)\. IN TXT ((?:"[^"]*" ?)+)$/m.exec(run.stdout);
  assert.ok(keyFile && txt, run.stdout);
  return { keyFile, name: txt[1]!, strings: [...txt[2]!.matchAll(/"([^"]*)"/g)].map((m) => m[1]!), stdout: run.stdout };
}

let world: MxWorld;
let mx1: MxHost;
let keyDir: string;
let homeKey: ReturnType<typeof dkimKeygen>;
let orgKey: ReturnType<typeof dkimKeygen>;

before(async () => {
  world = await startMxWorld(["mx1.example.org"]);
  mx1 = world.host("mx1.example.org");
  keyDir = await mkdtemp(join(tmpdir(), "hr-dkim-keys-"));
  homeKey = dkimKeygen(keyDir, "home.example.net", "home");
  orgKey = dkimKeygen(keyDir, "example.com", "s2025");
  for (const k of [homeKey, orgKey]) records.set(k.name, k.strings);
});
after(async () => {
  await world.close();
  await rm(keyDir, { recursive: true, force: true });
});

describe("dkim keygen", () => {
  test("writes a PKCS#8 RSA key (0600) and prints a TXT record, in strings of at most 255 octets, whose p= is that key's public key", async () => {
    assert.equal(homeKey.name, "home._domainkey.home.example.net");
    assert.equal(homeKey.keyFile, join(keyDir, "home._domainkey.home.example.net.key"));
    assert.equal((await stat(homeKey.keyFile)).mode & 0o777, 0o600);
    const pem = await readFile(homeKey.keyFile, "utf8");
    assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.equal(createPrivateKey(pem).asymmetricKeyDetails?.modulusLength, 2048);

    assert.ok(homeKey.strings.length >= 2 && homeKey.strings.every((s) => s.length <= 255), `${homeKey.strings.map((s) => s.length)}`);
    const record = homeKey.strings.join("");
    const p = /^v=DKIM1; k=rsa; p=([A-Za-z0-9+/=]+)$/.exec(record)?.[1];
    assert.equal(p, createPublicKey(pem).export({ type: "spki", format: "der" }).toString("base64"));
    assert.match(homeKey.stdout, new RegExp(`^dkim:\\n  domains:\\n    home\\.example\\.net: \\{ selector: home, keyFile: ${homeKey.keyFile.replace(/[.]/g, "\\.")} \\}$`, "m"));

    const again = spawnSync(process.execPath, [CLI, "dkim", "keygen", "--domain", "home.example.net", "--selector", "home", "--out", keyDir], { encoding: "utf8" });
    assert.equal(again.status, 73);
    assert.match(again.stderr, /home\._domainkey\.home\.example\.net\.key: already exists; not overwritten/);
    assert.equal(await readFile(homeKey.keyFile, "utf8"), pem, "the first key is untouched");
  });

  test("refuses a selector or domain that is not a DNS name, and key sizes receivers do not take (exit 64)", () => {
    for (const [args, message] of [
      [["--domain", "home.example.net", "--selector", "bad_selector"], "--selector must be letters, digits and -"],
      [["--domain", "not a domain", "--selector", "home"], "--domain must be a domain name"],
      [["--domain", "home.example.net", "--selector", "home", "--bits", "512"], "--bits must be one of 1024, 2048, 3072, 4096"],
    ] as const) {
      const run = spawnSync(process.execPath, [CLI, "dkim", "keygen", ...args, "--out", keyDir], { encoding: "utf8" });
      assert.equal(run.status, 64, run.stderr);
      assert.ok(run.stderr.includes(message), run.stderr);
    }
  });
});

describe("signing by the agent", () => {
  let agent: AgentProcess;
  let cloud: CloudProcess;
  before(async () => {
    const cloudKey = spawnSync(process.execPath, [CLI, "keygen", "--id", "home-1", "--out", keyDir], { encoding: "utf8" });
    assert.equal(cloudKey.status, 0, cloudKey.stderr);
    const publicKey = /^public key: (\S+)$/m.exec(cloudKey.stdout)![1]!;
    // The cloud relays onward to an SMTP upstream (the world's MX host), which keeps the bytes it got.
    cloud = await CloudProcess.start({
      keys: [{ id: "home-1", publicKey, senders: ["*@home.example.net"] }],
      onward: { transport: "smtp", host: mx1.address, port: world.port, tls: "none" },
    });
    const agentDir = await mkdtemp(join(tmpdir(), "hr-dkim-agent-"));
    agent = await startAgent(
      worldConfig(world, {
        dkim: { domains: { "home.example.net": { selector: "home", keyFile: homeKey.keyFile }, "example.com": { selector: "s2025", keyFile: orgKey.keyFile } } },
        cloud: { url: cloud.url, keyId: "home-1", keyFile: join(keyDir, "home-1.key"), timeout: 10 },
        routes: [{ match: "via-cloud.example", route: "cloud" }],
        aliases: join(agentDir, "aliases"),
      }),
      { dir: agentDir, files: { aliases: "fwd: bob@example.org\n" } },
    );
  });
  after(async () => {
    await agent.cleanup();
    await cloud.cleanup();
  });
  afterEach(() => world.reset());

  /** Submit `text` from SENDER to `to`, wait until it is sent, and return what the MX host received. */
  async function deliver(to: string, text: string): Promise<{ id: string; raw: Buffer; mark: number }> {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    const mark = agent.log().length;
    const id = queueIdOf(await sendMail(agent.ports[0]!, [to], text));
    await waitForDelivery(agent, id, to, "sent", mark);
    const [received, ...more] = mx1.messagesFor(to);
    assert.equal(more.length, 0);
    return { id, raw: received!.raw, mark };
  }

  test("mail to an MX carries one DKIM-Signature of the From: domain's key, which mailauth verifies", async () => {
    const { id, raw, mark } = await deliver("bob@example.org", message(`Carol <${SENDER}>`, "bob@example.org", "Signed direct"));
    assert.match(raw.toString("latin1"), /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=home\.example\.net;\r\n q=dns\/txt; s=home;/);
    const [result, ...more] = await verify(raw);
    assert.equal(more.length, 0, "one signature");
    assert.equal(result!.status.result, "pass", result!.status.comment);
    assert.equal(result!.signingDomain, "home.example.net");
    assert.equal(result!.selector, "home");
    assert.match(result!.signingHeaders.keys, /^From: .*Date: .*Message-ID/, "the direct route signs Date and Message-ID");
    await agent.waitForLog(new RegExp(`dkim\\[\\d+\\]: ${id}: DKIM-Signature field added \\(s=home, d=home\\.example\\.net\\)`), 5000, mark);
  });

  test("the key is the From: domain's (a parent's for a subdomain); without one, the envelope sender's domain signs", async () => {
    const sub = await deliver("bob@example.org", message("<news@lists.example.com>", "bob@example.org", "From a subdomain"));
    const [bySub] = await verify(sub.raw);
    assert.equal(bySub!.status.result, "pass", bySub!.status.comment);
    assert.equal(bySub!.signingDomain, "example.com");
    assert.equal(bySub!.selector, "s2025");
    world.reset();

    const foreign = await deliver("bob@example.org", message("<someone@unsigned.example>", "bob@example.org", "Foreign From"));
    const [byEnvelope] = await verify(foreign.raw);
    assert.equal(byEnvelope!.status.result, "pass", byEnvelope!.status.comment);
    assert.equal(byEnvelope!.signingDomain, "home.example.net", "the envelope sender carol@home.example.net's key");
  });

  test("a message that already carries a signature of the same d= and s= is not signed again", async () => {
    const earlier = "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=home.example.net;\r\n\ts=home; h=from; bh=AAAA; b=AAAA\r\n";
    const { id, raw, mark } = await deliver("bob@example.org", message(`<${SENDER}>`, "bob@example.org", "Signed before", earlier));
    assert.equal(raw.toString("latin1").match(/^DKIM-Signature:/gim)?.length, 1);
    assert.ok(raw.toString("latin1").includes(earlier), "the earlier field is passed on as it was");
    await agent.waitForLog(new RegExp(`${id}: not DKIM-signed: it carries a DKIM-Signature of s=home, d=home\\.example\\.net already`), 5000, mark);
  });

  test("through the cloud route, Message-ID and Date stay out of the signature: it still verifies after SES rewrites them, where a direct route's would not", async () => {
    const viaCloud = await deliver("dana@via-cloud.example", message(`<${SENDER}>`, "dana@via-cloud.example", "Through the cloud"));
    const [cloudSigned] = await verify(asSesRewritesIt(viaCloud.raw));
    assert.equal(cloudSigned!.status.result, "pass", cloudSigned!.status.comment);
    assert.equal(cloudSigned!.signingDomain, "home.example.net");
    assert.doesNotMatch(cloudSigned!.signingHeaders.keys, /Date|Message-ID/i);

    // The same rewrite breaks a signature over those fields: the test above is not vacuous.
    const direct = await deliver("bob@example.org", message(`<${SENDER}>`, "bob@example.org", "Signed direct again"));
    assert.equal((await verify(direct.raw))[0]!.status.result, "pass");
    assert.equal((await verify(asSesRewritesIt(direct.raw)))[0]!.status.result, "fail");
  });

  test("a forward is not signed, even when its From: claims our own domain (a spoof would pass DMARC)", async () => {
    world.setZone({ "example.org": mx(["mx1.example.org", 10]) });
    const mark = agent.log().length;
    const id = queueIdOf(await sendMail(agent.ports[0]!, ["fwd@home.example.net"], message("<ceo@home.example.net>", "fwd@home.example.net", "Spoofed and forwarded")));
    await waitForDelivery(agent, id, "fwd@home.example.net", "sent", mark);
    const forward = await agent.waitForLog(/(\w+): not DKIM-signed: a forwarded message is not ours to sign/, 10_000, mark);
    await waitForDelivery(agent, forward[1]!, "bob@example.org", "sent", mark);
    const [received] = mx1.messagesFor("bob@example.org");
    assert.doesNotMatch(received!.raw.toString("latin1"), /^DKIM-Signature:/im);
  });

  test("local delivery is not signed", async () => {
    const mark = agent.log().length;
    const id = queueIdOf(await sendMail(agent.ports[0]!, ["alice@home.example.net"], message(`<${SENDER}>`, "alice@home.example.net", "Stays at home")));
    await waitForDelivery(agent, id, "alice@home.example.net", "sent", mark);
    const delivered = (await mailbox(agent, "alice")).filter((m) => m.subject === "Stays at home");
    assert.equal(delivered.length, 1);
    assert.equal(delivered[0]!.headers.has("dkim-signature"), false);
    assert.doesNotMatch(agent.log().slice(mark), new RegExp(`${id}: DKIM-Signature field added`));
  });
});

describe("key files the agent refuses at start (exit 78)", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hr-dkim-refused-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("one others can read, one that is not RSA, and one too short for receivers", async () => {
    const readable = join(dir, "readable.key");
    await writeFile(readable, await readFile(homeKey.keyFile), { mode: 0o644 });
    const ed25519 = join(dir, "ed25519.key");
    await writeFile(ed25519, generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    const short = join(dir, "short.key");
    await writeFile(short, generateKeyPairSync("rsa", { modulusLength: 768 }).privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    const what = "dkim.domains.home.example.net.keyFile";
    for (const [file, refusal] of [
      [readable, `${what} ${readable} has mode 644; others must not read or write it (chmod 600 ${readable})`],
      [ed25519, `${what} ${ed25519}: a ed25519 key; DKIM signing needs an RSA key (make one with homerelay dkim keygen)`],
      [short, `${what} ${short}: a 768-bit RSA key; receivers ignore signatures by keys under 1024 bits (RFC 8301)`],
    ] as const) {
      const config = join(dir, "homerelay.yaml");
      await writeFile(
        config,
        stringify({
          spool: join(dir, "spool"),
          mailboxes: join(dir, "mail"),
          listeners: [{ role: "submission", listen: "127.0.0.1:0" }],
          dkim: { domains: { "home.example.net": { selector: "home", keyFile: file } } },
        }),
      );
      const run = spawnSync(process.execPath, [CLI, "agent", "--config", config], { encoding: "utf8", timeout: 15_000 });
      assert.equal(run.status, 78, run.stderr);
      assert.ok(run.stderr.includes(`fatal: ${refusal}`), run.stderr);
    }
  });
});
