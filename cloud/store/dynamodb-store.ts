/**
 * dynamodb-store — the cloud's store on DynamoDB, for Lambda: one table keyed by the string `pk`
 * (`nonce#<keyid>#<nonce>`, `idem#<keyid>#<key>`), a TTL attribute `expiresAt` in Unix seconds,
 * and conditional writes that treat an expired item as absent. DynamoDB deletes expired items
 * late (up to days; dynalite never does), so every read ignores them itself.
 */
import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  type AttributeValue,
  type CreateTableCommandInput,
  type UpdateTimeToLiveCommandInput,
} from "@aws-sdk/client-dynamodb";
import type { CloudConfig } from "../config.js";
import type { CloudStore, IdempotencyRecord } from "./store.js";

/** The DynamoDB form of the `store` setting. */
export type DynamoDbStoreConfig = Extract<CloudConfig["store"], { dynamodb: unknown }>["dynamodb"];

/** The TTL attribute: Unix seconds after which an item is dead. */
const TTL_ATTRIBUTE = "expiresAt";

/** An item absent, or present but expired, may be (re)written. */
const ABSENT_OR_EXPIRED = "attribute_not_exists(pk) OR expiresAt < :now";

/** The table the store needs, for infrastructure code and tests alike: CreateTable and UpdateTimeToLive inputs. */
export function tableDefinition(name: string): { createTable: CreateTableCommandInput; timeToLive: UpdateTimeToLiveCommandInput } {
  return {
    createTable: {
      TableName: name,
      AttributeDefinitions: [{ AttributeName: "pk", AttributeType: "S" }],
      KeySchema: [{ AttributeName: "pk", KeyType: "HASH" }],
      BillingMode: "PAY_PER_REQUEST",
    },
    timeToLive: { TableName: name, TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true } },
  };
}

/** Nonces and idempotency records in one DynamoDB table. */
export class DynamoDbStore implements CloudStore {
  private readonly client: DynamoDBClient;
  private readonly ownsClient: boolean;
  private readonly table: string;

  /** `options.client` replaces the client made from the configuration (region, endpoint); the store then leaves it open on close. */
  constructor(config: DynamoDbStoreConfig, options: { client?: DynamoDBClient } = {}) {
    this.table = config.table;
    this.ownsClient = options.client === undefined;
    this.client =
      options.client ??
      new DynamoDBClient({
        ...(config.region !== undefined ? { region: config.region } : {}),
        ...(config.endpoint !== undefined ? { endpoint: config.endpoint } : {}),
      });
  }

  async claimNonce(keyid: string, nonce: string, expiresAt: number, now: number): Promise<boolean> {
    return this.putIfAbsent({ pk: { S: `nonce#${keyid}#${nonce}` }, [TTL_ATTRIBUTE]: { N: String(expiresAt) } }, now);
  }

  async beginIdempotent(keyid: string, key: string, fingerprint: string, expiresAt: number, now: number): Promise<IdempotencyRecord | null> {
    const pk = idemKey(keyid, key);
    const item = { pk: { S: pk }, state: { S: "in-progress" }, fingerprint: { S: fingerprint }, [TTL_ATTRIBUTE]: { N: String(expiresAt) } };
    // The record that beat us may be finished, abandoned or expire between the write and the read: then try again.
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await this.putIfAbsent(item, now)) return null;
      const existing = await this.client.send(new GetItemCommand({ TableName: this.table, Key: { pk: { S: pk } }, ConsistentRead: true }));
      const record = existing.Item ? recordOf(existing.Item) : null;
      if (record && record.expiresAt >= now) return record;
    }
    throw new Error(`idempotency record ${pk} keeps changing under a conditional write`);
  }

  async finishIdempotent(keyid: string, key: string, record: Extract<IdempotencyRecord, { state: "done" }>): Promise<void> {
    await this.client.send(
      new PutItemCommand({
        TableName: this.table,
        Item: {
          pk: { S: idemKey(keyid, key) },
          state: { S: "done" },
          fingerprint: { S: record.fingerprint },
          [TTL_ATTRIBUTE]: { N: String(record.expiresAt) },
          status: { N: String(record.status) },
          body: { S: record.body },
        },
      }),
    );
  }

  async abandonIdempotent(keyid: string, key: string): Promise<void> {
    try {
      // Only an in-progress record goes; a final answer written meanwhile stays.
      await this.client.send(
        new DeleteItemCommand({
          TableName: this.table,
          Key: { pk: { S: idemKey(keyid, key) } },
          ConditionExpression: "#state = :inProgress",
          ExpressionAttributeNames: { "#state": "state" },
          ExpressionAttributeValues: { ":inProgress": { S: "in-progress" } },
        }),
      );
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
    }
  }

  async close(): Promise<void> {
    if (this.ownsClient) this.client.destroy();
  }

  /** Write `item` unless a live item has its key; false when one has. */
  private async putIfAbsent(item: Record<string, AttributeValue>, now: number): Promise<boolean> {
    try {
      await this.client.send(
        new PutItemCommand({ TableName: this.table, Item: item, ConditionExpression: ABSENT_OR_EXPIRED, ExpressionAttributeValues: { ":now": { N: String(now) } } }),
      );
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      throw err;
    }
  }
}

function idemKey(keyid: string, key: string): string {
  return `idem#${keyid}#${key}`;
}

/** An idempotency record from its item. */
function recordOf(item: Record<string, AttributeValue>): IdempotencyRecord {
  const fingerprint = item.fingerprint?.S ?? "";
  const expiresAt = Number(item[TTL_ATTRIBUTE]?.N);
  if (item.state?.S === "done") {
    return { state: "done", fingerprint, expiresAt, status: Number(item.status?.N), body: item.body?.S ?? "{}" };
  }
  return { state: "in-progress", fingerprint, expiresAt };
}
