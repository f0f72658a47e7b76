// The Lambda entry fed real Function URL payloads (format 2.0, base64 bodies, lower-case headers) answers
// as the Node entry does for the same signed requests, over DynamoDB (dynalite) and SES (a loopback Query endpoint).
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { LambdaEvent } from "hono/aws-lambda";
import { parseCloudConfig } from "../../cloud/config.js";
import { CONFIG_VARIABLE, handler } from "../../cloud/lambda.js";
import { serveCloud, type CloudServer } from "../../cloud/serve.js";
import { silentLog } from "../../shared/log.js";
import { contentDigest } from "../../shared/protocol/content-digest.js";
import { nodeCryptoEd25519, publicKeyFromSeed } from "../../shared/protocol/ed25519.js";
import { formatEnvelopeFrom, formatEnvelopeTo } from "../../shared/protocol/envelope-fields.js";
import { BARE_COMPONENTS, MESSAGE_COMPONENTS, signRequest } from "../../shared/protocol/signed-request.js";
import { startDynalite, type DynaliteServer } from "../support/dynalite-server.js";
import { startSesQueryEndpoint, type SesQueryEndpoint } from "../support/ses-query-endpoint.js";

// The SDK's default credential chain reads these first; nothing here reaches AWS.
process.env.AWS_ACCESS_KEY_ID = "AKIDHOMERELAYTEST";
process.env.AWS_SECRET_ACCESS_KEY = "homerelay-test-secret";

const URL_ID = "q7xk3mhbtyd5ewl2vr4oacnsuif6gjzp";
const FUNCTION_HOST = `${URL_ID}.lambda-url.eu-west-1.on.aws`;
const SOURCE_IP = "198.51.100.23";
const seed = new Uint8Array(randomBytes(32));

/** A request as both entries get it: header fields (lower case) and the body as sent. */
interface TestRequest {
  method: "GET" | "POST";
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

/** A response of either entry, reduced to what a client reads. */
interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

async function signed(method: "GET" | "POST", path: string, headers: Record<string, string>, components: string[], body?: Buffer): Promise<TestRequest> {
  const message = { method, url: new URL(`https://${FUNCTION_HOST}${path}`), header: (name: string) => headers[name] ?? null };
  const { signatureInput, signature } = await signRequest(message, { keyid: "home-1", seed, ed25519: await nodeCryptoEd25519(), components, nonce: randomUUID() });
  return { method, path, headers: { ...headers, "signature-input": signatureInput, signature }, ...(body ? { body } : {}) };
}

/** A message from alice@example.net to bob and carol, signed for the Function URL. */
async function signedMessage(): Promise<TestRequest> {
  // 8-bit text and a CRLF layout that a text decoding of the base64 body would damage.
  const body = Buffer.from("From: Alice <alice@example.net>\r\nTo: bob@example.org, carol@example.com\r\nSubject: Gr\xfc\xdfe\r\nMessage-ID: <lambda-1@example.net>\r\n\r\nBis bald, Gr\xfc\xdfe.\r\n", "latin1");
  const headers = {
    "content-type": "message/rfc822",
    "content-digest": contentDigest(body),
    "envelope-from": formatEnvelopeFrom({ sender: "alice@example.net", recipients: [] }),
    "envelope-to": formatEnvelopeTo([{ address: "bob@example.org" }, { address: "carol@example.com", notify: ["SUCCESS", "FAILURE"] }]),
    "idempotency-key": `"${randomUUID()}"`,
  };
  return signed("POST", "/v1/messages", headers, MESSAGE_COMPONENTS, body);
}

/** The request as a Lambda Function URL delivers it (payload format 2.0, auth type NONE). */
function functionUrlEvent(r: TestRequest): LambdaEvent {
  const now = new Date();
  return {
    version: "2.0",
    routeKey: "$default",
    rawPath: r.path,
    rawQueryString: "",
    headers: {
      ...r.headers,
      ...(r.body ? { "content-length": String(r.body.length) } : {}),
      host: FUNCTION_HOST,
      "user-agent": "homerelay/0.1.0",
      "x-amzn-tls-cipher-suite": "TLS_AES_128_GCM_SHA256",
      "x-amzn-tls-version": "TLSv1.3",
      "x-amzn-trace-id": "Root=1-66f1e2a3-0123456789abcdef01234567",
      "x-forwarded-for": SOURCE_IP,
      "x-forwarded-port": "443",
      "x-forwarded-proto": "https",
    },
    requestContext: {
      accountId: "anonymous",
      apiId: URL_ID,
      domainName: FUNCTION_HOST,
      domainPrefix: URL_ID,
      http: { method: r.method, path: r.path, protocol: "HTTP/1.1", sourceIp: SOURCE_IP, userAgent: "homerelay/0.1.0" },
      requestId: randomUUID(),
      routeKey: "$default",
      stage: "$default",
      time: now.toUTCString(),
      timeEpoch: now.getTime(),
    },
    // Function URLs base64-encode bodies that are not text; a GET has none.
    ...(r.body ? { body: r.body.toString("base64"), isBase64Encoded: true } : { isBase64Encoded: false }),
  } as unknown as LambdaEvent;
}

async function viaLambda(r: TestRequest): Promise<Answer> {
  const result = await handler(functionUrlEvent(r));
  const body = result.isBase64Encoded ? Buffer.from(result.body, "base64").toString("utf8") : result.body;
  const headers = Object.fromEntries(Object.entries(result.headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]));
  return { status: result.statusCode, headers, body };
}

/** The same request to the Node entry, with the Function URL's host as its authority (as a proxy in front would keep it). */
function viaNode(server: CloudServer, r: TestRequest): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: server.port, method: r.method, path: r.path, headers: { ...r.headers, host: FUNCTION_HOST } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers as Record<string, string>, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    req.end(r.body);
  });
}

describe("Lambda entry against the Node entry", () => {
  let db: DynaliteServer;
  let ses: SesQueryEndpoint;
  let node: CloudServer;
  let storeDir: string;
  before(async () => {
    [db, ses] = await Promise.all([startDynalite(), startSesQueryEndpoint()]);
    storeDir = await mkdtemp(join(tmpdir(), "homerelay-lambda-test-"));
    const document = {
      authority: [FUNCTION_HOST],
      keys: [{ id: "home-1", publicKey: Buffer.from(publicKeyFromSeed(seed)).toString("base64"), senders: ["*@example.net"] }],
      onward: { transport: "ses", region: "eu-west-1", endpoint: ses.url },
      log: { format: "json", level: "error" },
    };
    process.env[CONFIG_VARIABLE] = JSON.stringify({ ...document, store: { dynamodb: { table: db.table, region: "eu-west-1", endpoint: db.endpoint } } });
    const nodeConfig = parseCloudConfig(JSON.stringify({ ...document, listen: "127.0.0.1:0", store: storeDir }), "node-entry.json");
    node = await serveCloud(nodeConfig, silentLog);
  });
  after(async () => {
    await node.close();
    await Promise.all([db.close(), ses.close(), rm(storeDir, { recursive: true, force: true })]);
  });

  test("a signed message: both entries answer 200 with the same per-recipient results, and SES got the raw bytes for every recipient", async () => {
    ses.received.length = 0;
    const message = await signedMessage();
    const lambda = await viaLambda(message);
    const server = await viaNode(node, message);

    assert.equal(lambda.status, 200, lambda.body);
    assert.equal(server.status, 200, server.body);
    assert.equal(lambda.headers["content-type"], server.headers["content-type"]);
    const outcome = (a: Answer) => {
      const { id, results } = JSON.parse(a.body) as { id: string; results: { recipient: string; status: string; dsn: string; detail: string }[] };
      return { id, results };
    };
    const fromLambda = outcome(lambda);
    const fromNode = outcome(server);
    const expected = [
      { recipient: "bob@example.org", status: "sent", dsn: "2.0.0" },
      { recipient: "carol@example.com", status: "sent", dsn: "2.0.0" },
    ];
    assert.deepEqual(fromLambda.results.map(({ recipient, status, dsn }) => ({ recipient, status, dsn })), expected);
    assert.deepEqual(fromNode.results.map(({ recipient, status, dsn }) => ({ recipient, status, dsn })), expected);

    // Each entry relayed once; the base64 body reached SES byte for byte.
    assert.deepEqual(
      ses.received.map((r) => r.messageId),
      [fromLambda.id, fromNode.id],
    );
    for (const sent of ses.received) {
      assert.ok(sent.raw.equals(message.body!), "SES received other bytes than the agent sent");
      assert.equal(sent.source, "alice@example.net");
      assert.deepEqual(sent.destinations, ["bob@example.org", "carol@example.com"]);
    }
    assert.equal(fromLambda.results[0]!.detail, `SES accepted, MessageId ${fromLambda.id}`);
  });

  test("a retry with the same Idempotency-Key gets the answer stored in DynamoDB, without relaying again", async () => {
    const message = await signedMessage();
    const first = await viaLambda(message);
    ses.received.length = 0;
    // A retry carries the same Idempotency-Key and a fresh signature (a new nonce).
    const retry = await signed("POST", "/v1/messages", Object.fromEntries(Object.entries(message.headers).filter(([k]) => !k.startsWith("signature"))), MESSAGE_COMPONENTS, message.body);
    const again = await viaLambda(retry);
    assert.equal(again.status, 200);
    assert.deepEqual(JSON.parse(again.body), JSON.parse(first.body));
    assert.equal(ses.received.length, 0, "the retried message was relayed again");
  });

  test("a bad signature: both entries answer 401 problem+json with Accept-Signature, and nothing is relayed", async () => {
    ses.received.length = 0;
    const message = await signedMessage();
    // A recipient added after signing.
    const tampered = { ...message, headers: { ...message.headers, "envelope-to": `${message.headers["envelope-to"]}, <mallory@example.com>` } };
    const lambda = await viaLambda(tampered);
    const server = await viaNode(node, tampered);

    for (const answer of [lambda, server]) {
      assert.equal(answer.status, 401);
      assert.equal(answer.headers["content-type"], "application/problem+json");
      assert.match(answer.headers["accept-signature"] ?? "", /"@method" "@authority" "@path" "content-type" "content-digest" "envelope-from" "envelope-to" "idempotency-key"/);
    }
    assert.equal(JSON.parse(lambda.body).type, "https://homerelay.dev/problems/bad-signature");
    assert.deepEqual(JSON.parse(lambda.body), JSON.parse(server.body));
    assert.equal(lambda.headers["accept-signature"], server.headers["accept-signature"]);
    assert.equal(ses.received.length, 0);
  });

  test("whoami: the caller's address is the Function URL's sourceIp on Lambda and the socket's peer on Node", async () => {
    const whoami = await signed("GET", "/v1/whoami", {}, BARE_COMPONENTS);
    const lambda = await viaLambda(whoami);
    const server = await viaNode(node, whoami);
    assert.equal(lambda.status, 200, lambda.body);
    assert.deepEqual(JSON.parse(lambda.body), { ip: SOURCE_IP, keyid: "home-1" });
    assert.deepEqual(JSON.parse(server.body), { ip: "127.0.0.1", keyid: "home-1" });
  });

  test("a query string (rawQueryString) is refused with 400 on Lambda as on Node, and nothing is relayed", async () => {
    ses.received.length = 0;
    const message = await signedMessage();
    const lambda = await handler({ ...functionUrlEvent(message), rawQueryString: "debug=1" } as LambdaEvent);
    const server = await viaNode(node, { ...message, path: "/v1/messages?debug=1" });
    assert.equal(lambda.statusCode, 400);
    assert.equal(JSON.parse(lambda.body).type, "https://homerelay.dev/problems/query-not-allowed");
    assert.deepEqual(JSON.parse(lambda.body), JSON.parse(server.body));
    assert.equal(ses.received.length, 0);
  });
});
