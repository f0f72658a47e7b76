/**
 * queue-id — names for queued messages. Like Postfix's long queue IDs they sort by arrival
 * time, are unique across processes, and are safe as file names: 10 characters of
 * milliseconds and 6 random ones, in Crockford's base 32 (no I, L, O, U).
 */
import { randomFillSync } from "node:crypto";

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

// Random bytes drawn 4 KiB at a time: a call into the generator costs tens of microseconds here, 1024 IDs' worth no more.
const pool = Buffer.alloc(4096);
let poolAt = pool.length;

function random32(): number {
  if (poolAt + 4 > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  const value = pool.readUInt32BE(poolAt);
  poolAt += 4;
  return value;
}

/** A new queue ID for a message arriving at `now` (milliseconds since the epoch). */
export function newQueueId(now: number = Date.now()): string {
  let time = "";
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const random = random32();
  let tail = "";
  for (let i = 0, r = random; i < 6; i++, r = Math.floor(r / 32)) tail += ALPHABET[r % 32];
  return time + tail;
}

/** True for a string that is a queue ID (commands refuse anything else as a file name). */
export function isQueueId(text: string): boolean {
  return /^[0-9A-HJKMNP-TV-Z]{16}$/.test(text);
}

/** The arrival time encoded in a queue ID, in milliseconds since the epoch. */
export function queueIdTime(id: string): number {
  let t = 0;
  for (const ch of id.slice(0, 10)) t = t * 32 + ALPHABET.indexOf(ch);
  return t;
}
