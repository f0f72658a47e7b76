// RFC 9421 Appendix B.2.6 (Ed25519) reproduced byte for byte by both Ed25519 implementations,
// and the protocol's sign/verify round trip with every way a signature can be wrong.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { nodeCryptoEd25519, publicKeyFromSeed, tweetnaclEd25519, seedFromPkcs8Pem, pkcs8PemFromSeed } from "../../shared/protocol/ed25519.js";
import { parseSignatures, serializeSignatureParams, signatureBase, type SignedMessage } from "../../shared/protocol/message-signature.js";
import { signRequest, verifyRequest, MESSAGE_COMPONENTS } from "../../shared/protocol/signed-request.js";
import { contentDigest, DigestCheck, expectedDigest } from "../../shared/protocol/content-digest.js";

const vector = readFileSync(new URL("../fixtures/rfc9421-ed25519-vector.md", import.meta.url), "utf8");
const seed = Buffer.from(/32-byte seed[\s\S]*?`([0-9a-f]{64})`/.exec(vector)![1]!, "hex");
const publicKey = Buffer.from(/32-byte public key[\s\S]*?`([0-9a-f]{64})`/.exec(vector)![1]!, "hex");
const expectedSignature = /Raw 64-byte signature \(base64\): `([^`]+)`/.exec(vector)![1]!;
const expectedInput = /Signature-Input header value:\n```\n([^\n]+)\n```/.exec(vector)![1]!;

/** The RFC's test-request. */
function testRequest(): SignedMessage {
  const headers = new Map([
    ["host", "example.com"],
    ["date", "Tue, 20 Apr 2021 02:07:55 GMT"],
    ["content-type", "application/json"],
    ["content-digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"],
    ["content-length", "18"],
  ]);
  return { method: "POST", url: new URL("https://example.com/foo?param=Value&Pet=dog"), header: (n) => headers.get(n) ?? null };
}

const components = ["date", "@method", "@path", "@authority", "content-type", "content-length"];

test("the RFC 9421 B.2.6 signature base and Signature-Input are reproduced exactly", () => {
  const params = serializeSignatureParams(components, { created: 1618884473, keyid: "test-key-ed25519" });
  assert.equal(`sig-b26=${params}`, expectedInput);
  const base = signatureBase(testRequest(), components, params);
  assert.equal(Buffer.byteLength(base), 284);
  assert.ok(base.endsWith(`"@signature-params": ${params}`));
});

for (const name of ["node:crypto", "tweetnacl"] as const) {
  test(`${name} reproduces the RFC 9421 B.2.6 Ed25519 signature byte for byte and verifies it`, async () => {
    const ed = name === "tweetnacl" ? tweetnaclEd25519 : await nodeCryptoEd25519();
    assert.deepEqual(Buffer.from(publicKeyFromSeed(seed)), publicKey);
    const params = serializeSignatureParams(components, { created: 1618884473, keyid: "test-key-ed25519" });
    const base = new TextEncoder().encode(signatureBase(testRequest(), components, params));
    const sig = await ed.sign(base, seed);
    assert.equal(Buffer.from(sig).toString("base64"), expectedSignature);
    assert.equal(await ed.verify(base, sig, publicKey), true);
    const tampered = Buffer.from(sig);
    tampered[10] = tampered[10]! ^ 1;
    assert.equal(await ed.verify(base, tampered, publicKey), false);
  });
}

test("the RFC's Signature fields parse back to the same components, parameters and bytes", () => {
  const [parsed] = parseSignatures(expectedInput, `sig-b26=:${expectedSignature}:`);
  assert.equal(parsed!.label, "sig-b26");
  assert.deepEqual(parsed!.components, components);
  assert.deepEqual(parsed!.params, { created: 1618884473, keyid: "test-key-ed25519" });
  assert.equal(Buffer.from(parsed!.signature).toString("base64"), expectedSignature);
});

test("PKCS#8 PEM round trip of a seed", () => {
  assert.deepEqual(Buffer.from(seedFromPkcs8Pem(pkcs8PemFromSeed(seed))), seed);
  assert.match(vector, /MC4CAQAwBQYDK2VwBCIEIJ\+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF/);
  assert.deepEqual(Buffer.from(seedFromPkcs8Pem("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n")), seed);
});

test("Content-Digest: RFC 9530 values, streaming check, tampering detected", () => {
  const body = Buffer.from('{"hello": "world"}\n');
  assert.equal(contentDigest(body), "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:");
  const expected = expectedDigest("sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:")!;
  const check = new DigestCheck(expected);
  check.update(body.subarray(0, 5));
  check.update(body.subarray(5));
  assert.equal(check.matches(), true);
  const bad = new DigestCheck(expectedDigest(contentDigest(body))!);
  bad.update(Buffer.from('{"hello": "world!"}\n'));
  assert.equal(bad.matches(), false);
  assert.equal(expectedDigest("md5=:AAAA:"), null);
  assert.equal(expectedDigest("not a dictionary ((("), null);
});

/** A protocol request as the agent sends it. */
function submission(overrides: Record<string, string> = {}, url = "https://relay.example.net/v1/messages"): SignedMessage & { headers: Map<string, string> } {
  const headers = new Map<string, string>([
    ["content-type", "message/rfc822"],
    ["content-digest", contentDigest(Buffer.from("Subject: x\r\n\r\nhi\r\n"))],
    ["envelope-from", "<a@example.net>"],
    ["envelope-to", "<b@example.org>"],
    ["idempotency-key", '"k1"'],
    ...Object.entries(overrides),
  ]);
  return { method: "POST", url: new URL(url), header: (n) => headers.get(n) ?? null, headers };
}

test("sign/verify round trip, and each covered component tampered is refused", async () => {
  const ed = await nodeCryptoEd25519();
  const now = 1_800_000_000;
  const options = { ed25519: ed, publicKey: (id: string) => (id === "home-1" ? publicKey : null), required: MESSAGE_COMPONENTS, now, window: 300 };
  const request = submission();
  const { signatureInput, signature } = await signRequest(request, { keyid: "home-1", seed, ed25519: ed, components: MESSAGE_COMPONENTS, created: now, nonce: "n1" });
  request.headers.set("signature-input", signatureInput);
  request.headers.set("signature", signature);
  const ok = await verifyRequest(request, options);
  assert.deepEqual(ok, { ok: true, signature: { keyid: "home-1", created: now, nonce: "n1", label: "hr" } });

  for (const [field, value] of [
    ["content-type", "text/plain"],
    ["content-digest", contentDigest(Buffer.from("other"))],
    ["envelope-from", "<evil@example.net>"],
    ["envelope-to", "<b@example.org>, <c@example.org>"],
    ["idempotency-key", '"k2"'],
  ] as const) {
    const copy = submission({ [field]: value, "signature-input": signatureInput, signature });
    const verdict = await verifyRequest(copy, options);
    assert.equal(verdict.ok ? "ok" : verdict.problem, "bad-signature", field);
  }
  const otherPath = submission({ "signature-input": signatureInput, signature }, "https://relay.example.net/v1/other");
  assert.equal((await verifyRequest(otherPath, options) as { problem: string }).problem, "bad-signature");
  const otherHost = submission({ "signature-input": signatureInput, signature }, "https://evil.example.net/v1/messages");
  assert.equal((await verifyRequest(otherHost, options) as { problem: string }).problem, "bad-signature");
  assert.equal((await verifyRequest(request, { ...options, now: now + 301 }) as { problem: string }).problem, "expired");
  assert.equal((await verifyRequest(request, { ...options, now: now - 301 }) as { problem: string }).problem, "expired");
  assert.equal((await verifyRequest(request, { ...options, publicKey: () => null }) as { problem: string }).problem, "unknown-key");
  assert.equal((await verifyRequest(submission(), options) as { problem: string }).problem, "missing");
  const partial = submission();
  const few = await signRequest(partial, { keyid: "home-1", seed, ed25519: ed, components: ["@method", "@path"], created: now, nonce: "n2" });
  partial.headers.set("signature-input", few.signatureInput);
  partial.headers.set("signature", few.signature);
  assert.equal((await verifyRequest(partial, options) as { problem: string }).problem, "components");
  const garbage = submission({ "signature-input": "hr=(((", signature: "hr=:AAAA:" });
  assert.equal((await verifyRequest(garbage, options) as { problem: string }).problem, "malformed");
  // Any label is accepted.
  const relabeled = submission({ "signature-input": signatureInput.replace(/^hr=/, "sig1="), signature: signature.replace(/^hr=/, "sig1=") });
  assert.equal((await verifyRequest(relabeled, options)).ok, true);
  // tweetnacl verifies what node:crypto signed.
  assert.equal((await verifyRequest(request, { ...options, ed25519: tweetnaclEd25519 })).ok, true);
});
