/**
 * session-cache — keeps idle SMTP sessions open for a short while after a delivery (Postfix
 * scache(8)), so that the next message to the same server skips connect, EHLO, TLS and AUTH.
 */
import type { SessionSource } from "../../shared/smtp/mx-delivery.js";
import type { SmtpClient, SmtpTarget } from "../../shared/smtp/smtp-client.js";

/** Idle sessions by server and session options. */
export class SessionCache implements SessionSource {
  private readonly idle = new Map<string, { client: SmtpClient; timer: NodeJS.Timeout }[]>();

  constructor(
    private readonly open: (target: SmtpTarget) => Promise<SmtpClient>,
    /** How long an idle session is kept, ms (Postfix smtp_connection_cache_time_limit: 2 s). */
    private readonly keepMs: number,
  ) {}

  async acquire(target: SmtpTarget): Promise<SmtpClient> {
    const list = this.idle.get(keyOf(target));
    while (list && list.length > 0) {
      const entry = list.pop()!;
      clearTimeout(entry.timer);
      if (entry.client.usable) return entry.client;
      entry.client.close();
    }
    return this.open(target);
  }

  release(client: SmtpClient, reusable: boolean): void {
    if (!reusable || !client.usable) {
      client.close();
      return;
    }
    client.readyForNext().then(
      () => {
        const key = keyOf(client.target);
        const list = this.idle.get(key) ?? [];
        const entry = {
          client,
          timer: setTimeout(() => {
            const i = list.indexOf(entry);
            if (i !== -1) list.splice(i, 1);
            client.close();
          }, this.keepMs),
        };
        entry.timer.unref();
        list.push(entry);
        this.idle.set(key, list);
      },
      () => client.close(),
    );
  }

  /** Close every idle session. */
  close(): void {
    for (const list of this.idle.values()) {
      for (const { client, timer } of list) {
        clearTimeout(timer);
        client.close();
      }
    }
    this.idle.clear();
  }
}

function keyOf(t: SmtpTarget): string {
  return `${t.address}|${t.port}|${t.tls}|${t.hostname}|${t.auth?.user ?? ""}`;
}
