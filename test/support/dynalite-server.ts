/**
 * dynalite-server — an in-memory DynamoDB (dynalite) on 127.0.0.1, port 0, with the cloud store's
 * table already created from `tableDefinition`, for the DynamoDB store and the Lambda entry.
 * dynalite has no UpdateTimeToLive (and deletes nothing), so expiry is left to the store's reads.
 */
import { createRequire } from "node:module";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { CreateTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { tableDefinition } from "../../cloud/store/dynamodb-store.js";

/** dynalite's factory (the package ships no types): a plain http.Server. */
const dynalite = createRequire(import.meta.url)("dynalite") as (options: { createTableMs?: number; deleteTableMs?: number; updateTableMs?: number }) => Server;

/** A running dynalite with the store's table. */
export interface DynaliteServer {
  /** `http://127.0.0.1:<port>`, for the client's `endpoint`. */
  endpoint: string;
  table: string;
  close(): Promise<void>;
}

/** Start dynalite and create the store's table `table` in it (dummy credentials must be in the environment). */
export async function startDynalite(table = "homerelay-cloud"): Promise<DynaliteServer> {
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new DynamoDBClient({ region: "eu-west-1", endpoint });
  try {
    await client.send(new CreateTableCommand(tableDefinition(table).createTable));
  } finally {
    client.destroy();
  }
  return {
    endpoint,
    table,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
