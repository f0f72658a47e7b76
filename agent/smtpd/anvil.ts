/**
 * anvil — per-client counters for smtpd, after Postfix's anvil(8): concurrent connections and
 * connection rate per client address, and failed AUTH attempts, which slow the client down.
 */

/** A connection counts towards its client's rate for a minute. */
const RATE_WINDOW = 60_000;
/** A failed AUTH slows its client down for 15 minutes. */
const AUTH_FAILURE_WINDOW = 15 * 60_000;

/** Counters for all clients of one agent process. */
export class Anvil {
  private readonly open = new Map<string, number>();
  private readonly connects = new Map<string, number[]>();
  private readonly authFailures = new Map<string, { count: number; last: number }>();
  private lastPurge: number;

  constructor(private readonly now: () => number = Date.now) {
    this.lastPurge = now();
  }

  /** Count a new connection; returns the client's open connections and connections in the last minute. */
  connect(address: string): { concurrent: number; perMinute: number } {
    const concurrent = (this.open.get(address) ?? 0) + 1;
    this.open.set(address, concurrent);
    const t = this.now();
    this.purge(t);
    const recent = (this.connects.get(address) ?? []).filter((x) => t - x < RATE_WINDOW);
    recent.push(t);
    this.connects.set(address, recent);
    return { concurrent, perMinute: recent.length };
  }

  /** Count a closed connection. */
  disconnect(address: string): void {
    const n = (this.open.get(address) ?? 1) - 1;
    if (n <= 0) this.open.delete(address);
    else this.open.set(address, n);
    const t = this.now();
    const recent = this.connects.get(address)?.filter((x) => t - x < RATE_WINDOW);
    if (!recent?.length) this.connects.delete(address);
    else this.connects.set(address, recent);
  }

  /** Record a failed AUTH; returns how many failures this address has had within 15 minutes. */
  authFailed(address: string): number {
    const t = this.now();
    const entry = this.authFailures.get(address);
    const count = entry && t - entry.last < AUTH_FAILURE_WINDOW ? entry.count + 1 : 1;
    this.authFailures.set(address, { count, last: t });
    return count;
  }

  /** A successful AUTH clears the address's failures. */
  authSucceeded(address: string): void {
    this.authFailures.delete(address);
  }

  /**
   * How long to hold the reply to this address's next AUTH: nothing for the first two failures,
   * then doubling from 1 s up to 16 s, so guessing passwords costs time but a typo does not.
   */
  authDelay(address: string): number {
    const entry = this.authFailures.get(address);
    if (!entry || this.now() - entry.last >= AUTH_FAILURE_WINDOW || entry.count < 3) return 0;
    return Math.min(16_000, 1000 * 2 ** (entry.count - 3));
  }

  /**
   * Forget what no longer counts: a client's last connection keeps its time in the rate window,
   * and failed AUTH stays until a success, so without this every address ever seen stays in memory.
   * At most once a minute, as connections arrive.
   */
  private purge(t: number): void {
    if (t - this.lastPurge < RATE_WINDOW) return;
    this.lastPurge = t;
    for (const [address, times] of this.connects) if (t - times[times.length - 1]! >= RATE_WINDOW) this.connects.delete(address);
    for (const [address, entry] of this.authFailures) if (t - entry.last >= AUTH_FAILURE_WINDOW) this.authFailures.delete(address);
  }
}
