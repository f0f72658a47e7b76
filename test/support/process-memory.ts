/**
 * process-memory — the resident set size of a running process from /proc (Linux), for tests that
 * must show an abused server's memory stays bounded.
 */
import { readFile } from "node:fs/promises";

/** VmRSS of process `pid`, in bytes. */
export async function residentBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** Bytes as MiB with one decimal, for diagnostics. */
export function mebibytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
