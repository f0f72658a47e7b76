/**
 * small-disk — a tiny tmpfs mounted in a temporary directory, for storage faults at a moment a test
 * chooses: filled to the last byte and emptied again, or remounted read-only and back. Needs root
 * with CAP_SYS_ADMIN; where mounting is not allowed the test is skipped with the reason.
 */
import { execFile, execFileSync } from "node:child_process";
import { closeSync, openSync, rmSync, writeSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A mounted tmpfs; unmounted and removed after the test. */
export class SmallDisk {
  private constructor(
    /** A directory that holds the mount point (and anything that must stay off the small disk). */
    readonly dir: string,
    /** The mount point. */
    readonly path: string,
  ) {}

  /** Mount `size` (e.g. `2m`) at `<dir>/spool`; null after marking the test skipped when mounting is not allowed. */
  static async mount(t: TestContext, size: string): Promise<SmallDisk | null> {
    const dir = await mkdtemp(join(tmpdir(), "hr-small-disk-"));
    const path = join(dir, "spool");
    await mkdir(path);
    try {
      await run("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", path]);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      t.skip(`cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): ${((err as { stderr?: string }).stderr ?? String(err)).trim()}`);
      return null;
    }
    return new SmallDisk(dir, path);
  }

  /** Unmount and remove the directory. */
  async release(): Promise<void> {
    await run("umount", [this.path]);
    await rm(this.dir, { recursive: true, force: true });
  }

  private get filler(): string {
    return join(this.path, "filler");
  }

  /** Take every free byte (synchronously, so it can happen inside a server's callback). */
  fill(): void {
    const fd = openSync(this.filler, "w");
    const block = Buffer.alloc(64 * 1024);
    try {
      for (;;) writeSync(fd, block);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
    } finally {
      closeSync(fd);
    }
  }

  /** Give the space back. */
  free(): void {
    rmSync(this.filler, { force: true });
  }

  /** Remount read-only (`true`) or read-write, synchronously. */
  readOnly(on: boolean): void {
    execFileSync("mount", ["-o", `remount,${on ? "ro" : "rw"}`, this.path]);
  }
}
