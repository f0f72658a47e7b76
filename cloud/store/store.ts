/**
 * store — what the cloud remembers between requests: nonces already seen (replay guard) and
 * idempotency records. Two implementations: an embedded file store for `homerelay-cloud serve`
 * and DynamoDB for Lambda. Expired items are ignored on read, whatever the backend deletes late.
 */
/**
 * An idempotency record, scoped by (keyid, idempotency key). A final answer keeps its JSON body as
 * the text that was sent, so that a retry gets the same octets and a store holds one flat string.
 */
export type IdempotencyRecord =
  | { state: "in-progress"; fingerprint: string; expiresAt: number }
  | { state: "done"; fingerprint: string; expiresAt: number; status: number; body: string };

/**
 * The cloud's memory. Times are Unix seconds. A write has left the process when it resolves, so
 * killing the process never forgets it; whether it also survives a power loss is the backend's
 * (DynamoDB: yes; the file store: after its next fsync, a fraction of a second later). What a
 * power loss forgets costs at most a duplicate relay: the agent's queue still holds the message.
 */
export interface CloudStore {
  /** Record (keyid, nonce) until `expiresAt`; false when it was already recorded and has not expired (a replay). */
  claimNonce(keyid: string, nonce: string, expiresAt: number, now: number): Promise<boolean>;
  /**
   * Start work on (keyid, key) with a conditional write: returns null when this caller now owns
   * the key, or the existing unexpired record (in progress or done) when someone does.
   */
  beginIdempotent(keyid: string, key: string, fingerprint: string, expiresAt: number, now: number): Promise<IdempotencyRecord | null>;
  /** Replace the in-progress record by the final answer. */
  finishIdempotent(keyid: string, key: string, record: Extract<IdempotencyRecord, { state: "done" }>): Promise<void>;
  /** Drop an in-progress record (the relay failed before any answer worth keeping). */
  abandonIdempotent(keyid: string, key: string): Promise<void>;
  close(): Promise<void>;
}
