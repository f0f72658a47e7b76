// learned-routes: the table of receivers that refused the home address, with an injected clock —
// expiry after 30 days (then direct delivery again), provider matching through MX lookups, persistence, forgetting.
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MailResolver } from "../../shared/dns/resolver.js";
import { silentLog } from "../../shared/log.js";
import { DirectRouteAdvisor } from "../../agent/reroute/direct-route-advisor.js";
import { LEARNED_ROUTES_FILE, LearnedRoutes, providerOf } from "../../agent/reroute/learned-routes.js";
import { startDnsServer, type DnsServer } from "../support/dns-server.js";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 10, 1);
const REFUSAL = "550 5.7.1 Service unavailable; Client host [198.51.100.7] blocked using zen.spamhaus.org";

let dns: DnsServer;
let dir: string;
let clock: number;

before(async () => {
  dns = await startDnsServer({
    "mail.test": { MX: [{ exchange: "mx2.bigmail.test", preference: 10 }] },
    "other.test": { MX: [{ exchange: "mx7.bigmail.test", preference: 5 }] },
    "elsewhere.test": { MX: [{ exchange: "mx.elsewhere.test", preference: 5 }] },
  });
});
after(() => dns.close());
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "hr-learned-"));
  clock = T0;
});
afterEach(() => rm(dir, { recursive: true, force: true }));

async function advisor(): Promise<DirectRouteAdvisor> {
  const learned = await LearnedRoutes.open(dir);
  return new DirectRouteAdvisor({ learned, resolver: new MailResolver({ servers: [dns.server], timeoutSeconds: 1 }), log: silentLog, expirySeconds: 30 * 86400, now: () => clock });
}

describe("learned routes", () => {
  test("a refusal is learned for the domain and its provider, and expires after 30 days", async () => {
    const a = await advisor();
    const verdict = a.refusal(REFUSAL);
    assert.ok(verdict, "a Spamhaus ZEN listing refuses the home address");
    await a.learn("mail.test", REFUSAL, verdict);
    clock = T0 + 29 * DAY;
    assert.match((await a.skipReason("mail.test"))!, /^learned 2026-11-01: ip-blocklist: /);
    assert.match((await a.skipReason("other.test"))!, /^learned 2026-11-01 for the MX hosts of bigmail\.test: /, "same provider, other domain");
    assert.equal(await a.skipReason("elsewhere.test"), null);
    clock = T0 + 30 * DAY + 1;
    assert.equal(await a.skipReason("mail.test"), null, "expired: direct delivery again");
    assert.equal(await a.skipReason("other.test"), null);
  });

  test("learning again extends the expiry; the table survives reopening and drops expired entries when written", async () => {
    const a = await advisor();
    await a.learn("mail.test", REFUSAL, a.refusal(REFUSAL)!);
    clock = T0 + 20 * DAY;
    await a.learn("mail.test", REFUSAL, a.refusal(REFUSAL)!);
    clock = T0 + 45 * DAY;
    const reopened = await advisor();
    assert.notEqual(await reopened.skipReason("mail.test"), null, "learned again on day 20, so valid until day 50");
    const table = await LearnedRoutes.open(dir);
    assert.deepEqual(table.list(clock).map((r) => `${r.scope}:${r.key}`).sort(), ["domain:mail.test", "provider:bigmail.test"]);
    assert.equal(await table.forget("bigmail.test", clock), true);
    assert.equal(await table.forget("bigmail.test", clock), false);
    assert.equal(await (await advisor()).skipReason("other.test"), null);
  });

  test("replies that do not refuse the home address are not refusals", async () => {
    const a = await advisor();
    for (const reply of ["550 5.1.1 <bob@mail.test>: Recipient address rejected: User unknown", "452 4.2.2 Mailbox full", "550 5.7.1 Message rejected as spam by Content Filtering"]) {
      assert.equal(a.refusal(reply), null, reply);
    }
  });

  test("a damaged table is reported with its path, not ignored", async () => {
    await writeFile(join(dir, LEARNED_ROUTES_FILE), "{ not json");
    await assert.rejects(LearnedRoutes.open(dir), /learned-routes\.json: not a learned-routes table .*remove it to start afresh/);
  });

  test("the provider of an MX host is its registrable domain", () => {
    assert.equal(providerOf("gmail-smtp-in.l.google.com"), "google.com");
    assert.equal(providerOf("example-org.mail.protection.outlook.com."), "outlook.com");
    assert.equal(providerOf("mx.isp.co.uk"), "isp.co.uk");
    assert.equal(providerOf("mail.example.de"), "example.de");
  });
});
