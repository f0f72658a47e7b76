// The DynamoDB store against dynalite on loopback: nonces claimed once, expired items treated as absent,
// idempotency records begun, finished and abandoned, and a race for one key won by exactly one writer.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { DynamoDBClient, GetItemCommand } from "@aws-sdk/client-dynamodb";
import { DynamoDbStore, tableDefinition } from "../../cloud/store/dynamodb-store.js";
import { startDynalite, type DynaliteServer } from "../support/dynalite-server.js";

// The SDK's default credential chain reads these first; nothing here reaches AWS.
process.env.AWS_ACCESS_KEY_ID = "AKIDHOMERELAYTEST";
process.env.AWS_SECRET_ACCESS_KEY = "homerelay-test-secret";

const NOW = 1_760_000_000;
const relayed = JSON.stringify({ id: "0102019a-ses-id", results: [{ recipient: "bob@example.org", status: "sent" as const, dsn: "2.0.0", detail: "SES accepted, MessageId 0102019a-ses-id" }] });

describe("DynamoDB store on dynalite", () => {
  let db: DynaliteServer;
  let store: DynamoDbStore;
  let raw: DynamoDBClient;
  before(async () => {
    db = await startDynalite();
    store = new DynamoDbStore({ table: db.table, region: "eu-west-1", endpoint: db.endpoint });
    raw = new DynamoDBClient({ region: "eu-west-1", endpoint: db.endpoint });
  });
  after(async () => {
    await store.close();
    raw.destroy();
    await db.close();
  });

  test("the table has the string key pk, on-demand billing, and expiresAt as its TTL attribute", () => {
    const { createTable, timeToLive } = tableDefinition("relay-table");
    assert.deepEqual(createTable.KeySchema, [{ AttributeName: "pk", KeyType: "HASH" }]);
    assert.deepEqual(createTable.AttributeDefinitions, [{ AttributeName: "pk", AttributeType: "S" }]);
    assert.equal(createTable.BillingMode, "PAY_PER_REQUEST");
    assert.deepEqual(timeToLive, { TableName: "relay-table", TimeToLiveSpecification: { AttributeName: "expiresAt", Enabled: true } });
  });

  test("a nonce is claimed once per key, stored as nonce#<keyid>#<nonce> with its expiry in Unix seconds", async () => {
    assert.equal(await store.claimNonce("home-1", "n-once", NOW + 300, NOW), true);
    assert.equal(await store.claimNonce("home-1", "n-once", NOW + 300, NOW + 10), false, "a replayed nonce was accepted");
    assert.equal(await store.claimNonce("home-2", "n-once", NOW + 300, NOW), true, "another key's nonce is not a replay");

    const item = await raw.send(new GetItemCommand({ TableName: db.table, Key: { pk: { S: "nonce#home-1#n-once" } }, ConsistentRead: true }));
    assert.deepEqual(item.Item, { pk: { S: "nonce#home-1#n-once" }, expiresAt: { N: String(NOW + 300) } });
  });

  test("an expired nonce that DynamoDB has not deleted yet may be claimed again, and is then live again", async () => {
    assert.equal(await store.claimNonce("home-1", "n-expiring", NOW + 300, NOW), true);
    assert.equal(await store.claimNonce("home-1", "n-expiring", NOW + 900, NOW + 300), false, "a nonce is live up to its expiresAt");
    assert.equal(await store.claimNonce("home-1", "n-expiring", NOW + 901, NOW + 301), true);
    assert.equal(await store.claimNonce("home-1", "n-expiring", NOW + 901, NOW + 302), false);
  });

  test("an idempotency key is begun once, answers in-progress to a repeat, then the final answer once finished", async () => {
    assert.equal(await store.beginIdempotent("home-1", "idem-a", "fp-a", NOW + 86_400, NOW), null);
    assert.deepEqual(await store.beginIdempotent("home-1", "idem-a", "fp-other", NOW + 86_400, NOW + 1), { state: "in-progress", fingerprint: "fp-a", expiresAt: NOW + 86_400 });

    await store.finishIdempotent("home-1", "idem-a", { state: "done", fingerprint: "fp-a", expiresAt: NOW + 86_400, status: 200, body: relayed });
    assert.deepEqual(await store.beginIdempotent("home-1", "idem-a", "fp-a", NOW + 86_400, NOW + 2), {
      state: "done",
      fingerprint: "fp-a",
      expiresAt: NOW + 86_400,
      status: 200,
      body: relayed,
    });
    assert.equal(await store.beginIdempotent("home-2", "idem-a", "fp-a", NOW + 86_400, NOW), null, "keys are scoped by keyid");
  });

  test("an abandoned key may be begun again, but abandoning never drops a final answer", async () => {
    assert.equal(await store.beginIdempotent("home-1", "idem-b", "fp-b", NOW + 86_400, NOW), null);
    await store.abandonIdempotent("home-1", "idem-b");
    assert.equal(await store.beginIdempotent("home-1", "idem-b", "fp-b", NOW + 86_400, NOW + 1), null, "the abandoned key could not be begun again");

    await store.finishIdempotent("home-1", "idem-b", { state: "done", fingerprint: "fp-b", expiresAt: NOW + 86_400, status: 200, body: relayed });
    await store.abandonIdempotent("home-1", "idem-b");
    assert.equal((await store.beginIdempotent("home-1", "idem-b", "fp-b", NOW + 86_400, NOW + 2))?.state, "done");
    await store.abandonIdempotent("home-1", "idem-never-begun");
  });

  test("two containers racing for one idempotency key: exactly one wins, the others see its record", async (t) => {
    const other = new DynamoDbStore({ table: db.table, region: "eu-west-1", endpoint: db.endpoint });
    t.after(() => other.close());
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? store : other).beginIdempotent("home-1", "idem-race", `fp-${i}`, NOW + 86_400, NOW)),
    );
    const winners = answers.flatMap((a, i) => (a === null ? [i] : []));
    assert.equal(winners.length, 1, `expected one winner, got ${winners.length}`);
    for (const answer of answers.filter((a) => a !== null)) {
      assert.deepEqual(answer, { state: "in-progress", fingerprint: `fp-${winners[0]}`, expiresAt: NOW + 86_400 });
    }
  });

  test("expired idempotency records, finished or in progress, are ignored and taken over", async () => {
    await store.beginIdempotent("home-1", "idem-old", "fp-old", NOW + 60, NOW);
    await store.finishIdempotent("home-1", "idem-old", { state: "done", fingerprint: "fp-old", expiresAt: NOW + 60, status: 200, body: relayed });
    assert.equal(await store.beginIdempotent("home-1", "idem-old", "fp-new", NOW + 86_461, NOW + 61), null, "an expired final answer was still served");
    assert.deepEqual(await store.beginIdempotent("home-1", "idem-old", "fp-newer", NOW + 86_462, NOW + 62), { state: "in-progress", fingerprint: "fp-new", expiresAt: NOW + 86_461 });

    await store.beginIdempotent("home-1", "idem-stuck", "fp-stuck", NOW + 60, NOW);
    assert.equal(await store.beginIdempotent("home-1", "idem-stuck", "fp-retry", NOW + 86_461, NOW + 61), null, "an expired in-progress record still blocked the key");
  });
});
