// The local API's OpenAPI document at /openapi.json: an OpenAPI 3.1 document whose every reference
// resolves and every operation lists its answers, and whose schemas (read back with zod's JSON Schema
// reader) accept what the agent really answers and the JSON message form it really takes.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { TOKEN, apiPort, apiRequest, httpSection, postJson } from "../support/http-api.js";
import { LOCAL_CONFIG, LOCAL_RCPT } from "../support/queue-durability.js";

type Json = Record<string, unknown>;

let agent: AgentProcess;
let port: number;
let doc: Json;
before(async () => {
  agent = await startAgent({ ...LOCAL_CONFIG, http: httpSection(), limits: { messageSize: 4096 } });
  port = apiPort(agent);
  const answer = await apiRequest(port, { method: "GET", path: "/openapi.json" });
  assert.equal(answer.status, 200, answer.text);
  assert.match(String(answer.headers["content-type"]), /^application\/json/);
  doc = answer.json!;
});
after(() => agent.cleanup());

/** The value a local JSON Pointer reference (`#/components/schemas/X`) names. */
function resolve(ref: string): unknown {
  assert.match(ref, /^#\//, `only local references: ${ref}`);
  let at: unknown = doc;
  for (const segment of ref.slice(2).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"))) {
    assert.ok(at !== null && typeof at === "object" && segment in at, `${ref} does not resolve`);
    at = (at as Json)[segment];
  }
  return at;
}

/** `value` with every $ref replaced by what it names (the document has no recursive schemas). */
function inline(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(inline);
  if (value === null || typeof value !== "object") return value;
  const object = value as Json;
  if (typeof object.$ref === "string") return inline(resolve(object.$ref));
  return Object.fromEntries(Object.entries(object).map(([k, v]) => [k, inline(v)]));
}

/** A zod schema from a documented JSON Schema. */
function documented(schema: unknown): z.ZodType {
  return z.fromJSONSchema(inline(schema) as Parameters<typeof z.fromJSONSchema>[0]);
}

/** The operations of the document, as [path, method, operation]. */
function operations(): [string, string, Json][] {
  return Object.entries(doc.paths as Json).flatMap(([path, item]) => Object.entries(item as Json).map(([method, op]) => [path, method, op as Json] as [string, string, Json]));
}

/** The schema documented for `status` of `method path` in `mediaType`. */
function responseSchema(path: string, method: string, status: number, mediaType: string): z.ZodType {
  const response = inline(((doc.paths as Json)[path] as Json)[method] as Json) as { responses: Record<string, { content?: Record<string, { schema: unknown }> }> };
  const documentedResponse = response.responses[String(status)];
  assert.ok(documentedResponse, `${method.toUpperCase()} ${path} documents no ${status}`);
  const content = documentedResponse.content?.[mediaType];
  assert.ok(content, `${method.toUpperCase()} ${path} ${status} documents no ${mediaType}`);
  return documented(content.schema);
}

test("an OpenAPI 3.1 document: every operation has an ID, security and answers; every reference resolves", () => {
  assert.match(String(doc.openapi), /^3\.1\.\d+$/);
  const info = doc.info as Json;
  assert.equal(typeof info.title, "string");
  assert.equal(info.version, "0.1.0");
  assert.deepEqual(doc.servers, [{ url: `http://127.0.0.1:${port}` }]);
  const schemes = (doc.components as Json).securitySchemes as Json;
  assert.deepEqual(schemes.bearerAuth, { type: "http", scheme: "bearer", description: "A token from the agent's http.tokens" });

  const ops = operations();
  assert.deepEqual(ops.map(([path, method]) => `${method} ${path}`).sort(), ["get /v1/messages/{id}", "post /v1/messages"]);
  const ids = new Set<string>();
  for (const [path, method, op] of ops) {
    assert.equal(typeof op.operationId, "string", `${method} ${path} has an operationId`);
    assert.ok(!ids.has(op.operationId as string), "operationIds are unique");
    ids.add(op.operationId as string);
    const responses = op.responses as Record<string, Json>;
    assert.ok(Object.keys(responses).length > 0, `${method} ${path} documents its answers`);
    for (const [status, response] of Object.entries(responses)) {
      assert.match(status, /^[1-5]\d\d$/);
      assert.equal(typeof response.description, "string", `${method} ${path} ${status} has a description`);
    }
    for (const requirement of op.security as Json[]) for (const name of Object.keys(requirement)) assert.ok(name in schemes, `security scheme ${name} is defined`);
    // Every {name} in a path is a required path parameter.
    for (const [, name] of path.matchAll(/\{([^}]+)\}/g)) {
      const parameter = (op.parameters as Json[]).find((p) => p.name === name && p.in === "path");
      assert.ok(parameter && parameter.required === true, `${path} declares its path parameter ${name}`);
    }
  }
  // Walking the whole document resolves every reference (resolve() fails on a dangling one).
  inline(doc);
  for (const [name, schema] of Object.entries((doc.components as Json).schemas as Json)) assert.doesNotThrow(() => documented(schema), `schema ${name} is a usable JSON Schema`);
});

test("the documented request schema takes the JSON message form as the agent does", () => {
  const message = documented({ $ref: "#/components/schemas/JsonMessage" });
  const good = { from: "cron@home.example.net", to: [LOCAL_RCPT], subject: "Grüße", text: "x", attachments: [{ filename: "a.txt", content: "aGk=" }], headers: { "X-Job": "nightly" } };
  assert.ok(message.safeParse(good).success);
  assert.ok(!message.safeParse({ ...good, priority: "high" }).success, "unknown members are not allowed");
  assert.ok(!message.safeParse({ ...good, subject: "a\r\nBcc: x@example.com" }).success, "the header field pattern is documented");
  assert.ok(!message.safeParse({ ...good, attachments: [{ filename: "a", path: "/etc/passwd" }] }).success);
});

test("what the agent answers is what the document says it answers", async () => {
  const accepted = await postJson(port, { from: "cron@home.example.net", to: LOCAL_RCPT, subject: "documented", text: "x" });
  assert.equal(accepted.status, 202, accepted.text);
  responseSchema("/v1/messages", "post", 202, "application/json").parse(accepted.json);
  await agent.waitForLog(new RegExp(`${accepted.json?.id as string}: removed`));
  const status = await apiRequest(port, { method: "GET", path: `/v1/messages/${accepted.json?.id as string}`, token: TOKEN });
  assert.equal(status.status, 200);
  responseSchema("/v1/messages/{id}", "get", 200, "application/json").parse(status.json);

  const refusals: [string, string, Promise<Awaited<ReturnType<typeof apiRequest>>>][] = [
    ["/v1/messages", "post", postJson(port, { from: "cron@home.example.net", to: LOCAL_RCPT, subject: "a\nb" })],
    ["/v1/messages", "post", postJson(port, {}, "not-the-token-0123456789")],
    ["/v1/messages", "post", postJson(port, { from: "ceo@bank.example", to: LOCAL_RCPT })],
    ["/v1/messages", "post", postJson(port, { from: "cron@home.example.net", to: LOCAL_RCPT, text: "x".repeat(5000) })],
    ["/v1/messages", "post", apiRequest(port, { token: TOKEN, type: "text/plain", body: "x" })],
    ["/v1/messages/{id}", "get", apiRequest(port, { method: "GET", path: "/v1/messages/0VJ3Q8M2ZK4T7R1A", token: TOKEN })],
  ];
  const statuses: number[] = [];
  for (const [path, method, request] of refusals) {
    const answer = await request;
    statuses.push(answer.status);
    responseSchema(path, method, answer.status, "application/problem+json").parse(answer.json);
  }
  assert.deepEqual(statuses, [400, 401, 403, 413, 415, 404]);
});
