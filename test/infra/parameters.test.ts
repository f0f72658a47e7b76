// The deployment's parameters: agent keys read from what `homerelay keygen` leaves behind (its
// private key file, its printed output, a public key PEM, the bare base64), and the scripts'
// options checked and turned into CDK context before the CDK starts, with example values for a synth.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { EXAMPLE_AGENT_KEY, readAgentKey } from "../../infra/lib/agent-keys.js";
import { contextArguments, ParameterError, parametersFromContext, type Mode } from "../../infra/lib/parameters.js";
import { CLI } from "../support/agent-process.js";

const run = promisify(execFile);

/** The parameters the app would build from these context arguments. */
function appParameters(args: string[], mode: Mode) {
  const context = Object.fromEntries(args.filter((_, i) => i % 2 === 1).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
  return parametersFromContext({ tryGetContext: (key: string) => context[key] }, mode);
}

describe("agent keys and deployment parameters", () => {
  let dir: string;
  let keyFile: string;
  let printed: string;
  let publicKey: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hr-infra-keys-"));
    ({ stdout: printed } = await run(process.execPath, [CLI, "keygen", "--id", "home-1", "--out", dir]));
    keyFile = join(dir, "home-1.key");
    publicKey = /^public key: (\S+)$/m.exec(printed)![1]!;
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("keygen's private key file gives its public key, its id from the file name, and itself as the agent's keyFile", () => {
    assert.deepEqual(readAgentKey(keyFile), { id: "home-1", publicKey, keyFile });
  });

  test("keygen's printed output, saved to a file, gives the id, the public key and the keyFile it names", async () => {
    const saved = join(dir, "keygen-output.txt");
    await writeFile(saved, printed);
    assert.deepEqual(readAgentKey(saved), { id: "home-1", publicKey, keyFile });
  });

  test("a public key as PEM or as bare base64 gives the raw key, the id from the file name, and keygen's default key path", async () => {
    const { publicKey: spki } = generateKeyPairSync("ed25519");
    const raw = Buffer.from(spki.export({ format: "jwk" }).x!, "base64url").toString("base64");
    await writeFile(join(dir, "laptop-2.pub"), spki.export({ format: "pem", type: "spki" }));
    assert.deepEqual(readAgentKey(join(dir, "laptop-2.pub")), { id: "laptop-2", publicKey: raw, keyFile: "/etc/homerelay/laptop-2.key" });
    await writeFile(join(dir, "office.txt"), `${publicKey}\n`);
    assert.deepEqual(readAgentKey(join(dir, "office.txt")), { id: "office", publicKey, keyFile: "/etc/homerelay/office.key" });
  });

  test("an RSA key, a file of something else, and a missing file are refused with the file's name", async () => {
    const { publicKey: rsa } = generateKeyPairSync("rsa", { modulusLength: 1024 });
    await writeFile(join(dir, "rsa.pub"), rsa.export({ format: "pem", type: "spki" }));
    assert.throws(() => readAgentKey(join(dir, "rsa.pub")), { message: `${join(dir, "rsa.pub")}: not an Ed25519 public key: a rsa key, not Ed25519` });
    await writeFile(join(dir, "notes.txt"), "remember the milk\n");
    assert.throws(() => readAgentKey(join(dir, "notes.txt")), /notes\.txt: not an agent key: expected the private key written by homerelay keygen/);
    assert.throws(() => readAgentKey(join(dir, "absent.key")), /absent\.key: cannot read the agent key \(ENOENT\)/);
  });

  test("deploy options become context, key paths made absolute from where the person typed, and the app reads them back", () => {
    const { args, parameters } = contextArguments({ domain: "Example.NET", "agent-key": ["home-1.key"], concurrency: "3", region: "eu-central-1" }, "deploy", dir);
    assert.deepEqual(args, ["-c", "homerelay:mode=deploy", "-c", "domain=Example.NET", "-c", `agentKeys=${keyFile}`, "-c", "region=eu-central-1", "-c", "concurrency=3"]);
    const expected = { stackName: "HomerelayCloud", region: "eu-central-1", domain: "example.net", senders: ["*@example.net"], agentKeys: [{ id: "home-1", publicKey, keyFile }], concurrency: 3 };
    assert.deepEqual(parameters, expected);
    assert.deepEqual(appParameters(args, "deploy"), expected);
  });

  test("a synth without options gets example values: example.net and RFC 8032's test key", () => {
    const { args } = contextArguments({}, "synth", dir);
    assert.deepEqual(args, ["-c", "homerelay:mode=synth"]);
    assert.deepEqual(appParameters(args, "synth"), { stackName: "HomerelayCloud", domain: "example.net", senders: ["*@example.net"], agentKeys: [EXAMPLE_AGENT_KEY], concurrency: 5 });
  });

  test("mistakes are refused before the CDK runs, each saying what to give instead", () => {
    const refused = (values: Parameters<typeof contextArguments>[0], message: RegExp) =>
      assert.throws(() => contextArguments(values, "deploy", dir), (err: unknown) => err instanceof ParameterError && message.test(err.message));
    refused({ "agent-key": ["home-1.key"] }, /^--domain is required/);
    refused({ domain: "example.net" }, /^--agent-key is required/);
    refused({ domain: "example..net", "agent-key": ["home-1.key"] }, /is not a domain name/);
    refused({ domain: "example.net", "agent-key": ["home-1.key"], senders: "*@example.net,alice@example.org" }, /sender pattern alice@example\.org is not of example\.net: SES sends only as its verified identity/);
    refused({ domain: "example.net", "agent-key": ["home-1.key"], senders: "*" }, /sender pattern \* is not of example\.net/);
    refused({ domain: "example.net", "agent-key": ["home-1.key", keyFile] }, /two agent keys have the id home-1/);
    refused({ domain: "example.net", "agent-key": ["home-1.key"], concurrency: "0" }, /--concurrency 0: expected 1 to 1000, or unreserved/);
    refused({ domain: "example.net", "agent-key": ["home-1.key"], "direct-mx": "not a name" }, /--direct-mx not a name is not a host name/);
  });

  test("unreserved concurrency leaves the reservation out; direct MX takes senders of any domain (no SES identity limits them)", () => {
    const { args } = contextArguments({ domain: "example.net", "agent-key": [keyFile], concurrency: "unreserved", "direct-mx": "Relay.Example.NET", senders: "*@example.org" }, "deploy", "/");
    const parameters = appParameters(args, "deploy");
    assert.equal(parameters.concurrency, undefined);
    assert.deepEqual(parameters.directMx, { helo: "relay.example.net" });
    assert.deepEqual(parameters.senders, ["*@example.org"]);
  });
});
