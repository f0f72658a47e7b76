/**
 * anvil — per-client counters for smtpd, after Postfix's anvil(8): concurrent connections and
 * connection rate per client address, and failed AUTH attempts, which slow the client down.
 */

/** Counters for all clients of one agent process. */
export class Anvil {
  private readonly open = new Map<string, number>();
  private readonly connects = new Map<string, number[]>();
  private readonly authFailures = new Map<string, { count: number; last: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Count a new connection; returns the client's open connections and connections in the last minute. */
  connect(address: string): { concurrent: number; perMinute: number } {
    const concurrent = (this.open.get(address) ?? 0) + 1;
    this.open.set(address, concurrent);
    const t = this.now();
    const recent = (this.connects.get(address) ?? []).filter((x) => t - x < 60_000);
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
    const recent = this.connects.get(address)?.filter((x) => t - x < 60_000);
    if (!recent?.length) this.connects.delete(address);
    else this.connects.set(address, recent);
  }

  /** Record a failed AUTH; returns how many failures this address has had within 15 minutes. */
  authFailed(address: string): number {
    const t = this.now();
    const entry = this.authFailures.get(address);
    const count = entry && t - entry.last < 15 * 60_000 ? entry.count + 1 : 1;
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
    if (!entry || this.now() - entry.last >= 15 * 60_000 || entry.count < 3) return 0;
    return Math.min(16_000, 1000 * 2 ** (entry.count - 3));
  }
}
