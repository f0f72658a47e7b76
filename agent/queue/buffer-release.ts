/**
 * buffer-release — keeps the memory of a large message bounded while it streams in or out, by
 * asking V8 for a young-generation collection every few MB the message has moved.
 */
import { Transform, type TransformCallback } from "node:stream";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** Octets of one message that stream before the first collection: smaller messages never ask for one. */
export const FIRST_RELEASE = 1024 * 1024;
/** Octets between two collections (2 MiB kept a 25 MB message's growth at 5 MB; 4 MiB at 9 MB). */
const RELEASE_EVERY = 2 * 1024 * 1024;

type Collector = () => void;
let collector: Collector | null | undefined;

/** V8's young-generation collection, or null when this runtime does not offer it. */
function youngCollector(): Collector | null {
  if (collector !== undefined) return collector;
  try {
    // Exposed to new contexts only (the main one keeps no global `gc`): the way jest asks for it.
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as (options: { type: "minor" | "major" }) => void;
    collector = () => gc({ type: "minor" });
  } catch {
    collector = null;
  }
  return collector;
}

/**
 * The octets one message stream has moved, and when they call for a collection. Node frees the
 * buffers a stream is done with only when V8 collects, and V8 waits for tens of MB of them (a 25 MB
 * message grew the agent by 31 MB); a collection costs a millisecond or two.
 */
export class BufferRelease {
  private moved = 0;
  private next = FIRST_RELEASE;

  /** Count `octets` more; past the next mark, collect. */
  add(octets: number): void {
    this.moved += octets;
    if (this.moved < this.next) return;
    this.next = this.moved + RELEASE_EVERY;
    youngCollector()?.();
  }
}

/** A pass-through that counts what flows through it with a BufferRelease. */
export class ReleasingStream extends Transform {
  private readonly release = new BufferRelease();

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.release.add(chunk.length);
    done(null, chunk);
  }
}
