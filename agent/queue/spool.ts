/**
 * spool — the on-disk layout of the queue, Postfix style: one directory per queue state, so an
 * administrator can see with `ls` where every message is. Creates the layout with its modes,
 * and syncs directories after renames, coalescing concurrent requests into one fsync.
 */
import { mkdir, open, chmod, type FileHandle } from "node:fs/promises";
import { join } from "node:path";

/** Queue states, each a directory under the spool. */
export type QueueState = "incoming" | "active" | "deferred" | "hold" | "corrupt";

/** Every queue state directory. */
export const QUEUE_STATES: readonly QueueState[] = ["incoming", "active", "deferred", "hold", "corrupt"];

/** Paths inside one spool directory. */
export class Spool {
  private readonly syncs = new Map<string, DirectorySync>();

  constructor(readonly root: string) {}

  /** Directory of a queue state. */
  dir(state: QueueState): string {
    return join(this.root, state);
  }

  /** Path of the queue file `id` in `state`. */
  file(state: QueueState, id: string): string {
    return join(this.root, state, id);
  }

  /** Directory of per-message recipient status logs (like Postfix's defer/ and bounce/). */
  get statusDir(): string {
    return join(this.root, "status");
  }

  /** Path of the recipient status log of message `id`. */
  statusFile(id: string): string {
    return join(this.root, "status", id);
  }

  /** Private files of the agent: TLS certificate, secrets. */
  get privateDir(): string {
    return join(this.root, "private");
  }

  /**
   * Create the spool if needed. The root is 0755 so that local users can reach the drop
   * directory; every state directory is 0700, readable by the agent only.
   */
  async create(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o755 });
    for (const dir of [...QUEUE_STATES.map((s) => this.dir(s)), this.statusDir, this.privateDir]) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await chmod(dir, 0o700);
    }
  }

  /**
   * Make the entries of `dir` durable (after a create, rename or unlink in it). Callers that
   * arrive while a sync is running share the next one: one fsync serves many messages.
   */
  syncDir(dir: string): Promise<void> {
    let sync = this.syncs.get(dir);
    if (!sync) {
      sync = new DirectorySync(dir);
      this.syncs.set(dir, sync);
    }
    return sync.request();
  }

  /** Close the directory handles kept for syncing. */
  async close(): Promise<void> {
    await Promise.all([...this.syncs.values()].map((s) => s.close()));
    this.syncs.clear();
  }
}

/** Group commit for one directory: at most one fsync in flight and one queued behind it. */
class DirectorySync {
  private handle: Promise<FileHandle> | null = null;
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;

  constructor(private readonly dir: string) {}

  request(): Promise<void> {
    if (!this.running) return (this.running = this.run());
    // A sync already running may have started before the caller's rename: wait for the next one.
    this.next ??= this.running.then(
      () => this.promote(),
      () => this.promote(),
    );
    return this.next;
  }

  private promote(): Promise<void> {
    this.next = null;
    return (this.running = this.run());
  }

  private async run(): Promise<void> {
    try {
      this.handle ??= open(this.dir, "r");
      const fh = await this.handle;
      await fh.sync();
    } catch (err) {
      this.handle = null;
      throw err;
    } finally {
      if (this.next === null) this.running = null;
    }
  }

  async close(): Promise<void> {
    const fh = await this.handle?.catch(() => null);
    this.handle = null;
    await fh?.close();
  }
}
