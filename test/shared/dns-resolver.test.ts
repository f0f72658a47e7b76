// MailResolver against a loopback authoritative DNS server: MX order and shuffling, implicit and
// null MX, NXDOMAIN/SERVFAIL/timeouts as bounce or deferral, address ordering, TXT and PTR.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { MailResolver, reverseName, type MailResolverOptions } from "../../shared/dns/resolver.js";
import { startDnsServer, type DnsServer } from "../support/dns-server.js";

const V6_REVERSE = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
const LONG_TXT = `v=DKIM1; k=rsa; p=${"A".repeat(900)}`;

let dns: DnsServer;

before(async () => {
  dns = await startDnsServer({
    "ranked.example": {
      MX: [
        { exchange: "mx-b.ranked.example", preference: 20 },
        { exchange: "mx-a.ranked.example", preference: 10 },
        { exchange: "mx-c.ranked.example", preference: 30 },
      ],
    },
    "pool.example": {
      MX: [
        { exchange: "a.pool.example", preference: 10 },
        { exchange: "b.pool.example", preference: 10 },
        { exchange: "c.pool.example", preference: 10 },
        { exchange: "d.pool.example", preference: 20 },
        { exchange: "e.pool.example", preference: 20 },
        { exchange: "primary.pool.example", preference: 5 },
      ],
    },
    "bare.example": { A: ["192.0.2.10"] },
    "v6only.example": { AAAA: ["2001:db8::10"] },
    "textonly.example": { TXT: ["v=spf1 -all"] },
    "nullmx.example": { MX: [{ exchange: ".", preference: 0 }] },
    "halfnull.example": {
      MX: [
        { exchange: ".", preference: 0 },
        { exchange: "mx.halfnull.example", preference: 10 },
      ],
    },
    "broken.example": { servfail: true },
    "silent.example": { drop: true },
    "shop.example": { MX: [{ exchange: "MX1.Shop.EXAMPLE.", preference: 10 }] },
    "dual.example": { A: ["192.0.2.1", "192.0.2.2"], AAAA: ["2001:db8::1", "2001:db8::2"] },
    "alias.example": { CNAME: "dual.example" },
    "spf.example": { TXT: ["v=spf1 ip4:192.0.2.0/24 -all", "google-site-verification=abc"] },
    "split.example": { TXT: [["v=DKIM1; k=rsa; ", "p=MIGf"]] },
    "selector._domainkey.long.example": { TXT: [LONG_TXT] },
    "25.2.0.192.in-addr.arpa": { PTR: ["mail.example.org"] },
    [V6_REVERSE]: { PTR: ["mail6.example.org"] },
  });
});

after(() => dns.close());

function resolver(options: Partial<MailResolverOptions> = {}): MailResolver {
  return new MailResolver({ servers: [dns.server], timeoutSeconds: 1, tries: 1, ...options });
}

function exchanges(lookup: Awaited<ReturnType<MailResolver["resolveMx"]>>): string[] {
  assert.equal(lookup.kind, "mx");
  return lookup.hosts.map((h) => h.exchange);
}

describe("resolveMx", () => {
  test("MX hosts come lowest preference first, whatever order DNS lists them in", async () => {
    const lookup = await resolver().resolveMx("ranked.example");
    assert.deepEqual(lookup, {
      kind: "mx",
      hosts: [
        { exchange: "mx-a.ranked.example", preference: 10, implicit: false },
        { exchange: "mx-b.ranked.example", preference: 20, implicit: false },
        { exchange: "mx-c.ranked.example", preference: 30, implicit: false },
      ],
    });
  });

  test("hosts of equal preference are shuffled by the random source, never across preferences", async () => {
    // Fisher–Yates: a random of ~1 keeps the DNS order, 0 rotates each group.
    const kept = await resolver({ random: () => 0.999 }).resolveMx("pool.example");
    assert.deepEqual(exchanges(kept), ["primary.pool.example", "a.pool.example", "b.pool.example", "c.pool.example", "d.pool.example", "e.pool.example"]);
    const shuffled = await resolver({ random: () => 0 }).resolveMx("pool.example");
    assert.deepEqual(exchanges(shuffled), ["primary.pool.example", "b.pool.example", "c.pool.example", "a.pool.example", "e.pool.example", "d.pool.example"]);
  });

  test("a domain without MX but with an address is its own implicit MX", async () => {
    assert.deepEqual(await resolver().resolveMx("bare.example"), {
      kind: "mx",
      hosts: [{ exchange: "bare.example", preference: 0, implicit: true }],
    });
    assert.deepEqual(await resolver().resolveMx("v6only.example"), {
      kind: "mx",
      hosts: [{ exchange: "v6only.example", preference: 0, implicit: true }],
    });
  });

  test("a domain with neither MX nor A/AAAA does not exist for mail", async () => {
    assert.deepEqual(await resolver().resolveMx("textonly.example"), {
      kind: "nxdomain",
      reason: "Host or domain name not found. Name service error for name=textonly.example type=A: Host found but no data record of requested type",
    });
  });

  test("a null MX says the domain accepts no mail; a null MX beside real hosts is ignored", async () => {
    assert.deepEqual(await resolver().resolveMx("nullmx.example"), { kind: "null-mx" });
    assert.deepEqual(exchanges(await resolver().resolveMx("halfnull.example")), ["mx.halfnull.example"]);
  });

  test("NXDOMAIN is a permanent failure", async () => {
    assert.deepEqual(await resolver().resolveMx("nowhere.example"), {
      kind: "nxdomain",
      reason: "Host or domain name not found. Name service error for name=nowhere.example type=MX: Host not found",
    });
  });

  test("SERVFAIL is a temporary failure", async () => {
    assert.deepEqual(await resolver().resolveMx("broken.example"), {
      kind: "temporary",
      reason: "Host or domain name not found. Name service error for name=broken.example type=MX: Host not found, try again",
    });
  });

  test("an unanswered query is a temporary failure after about the configured timeout", async () => {
    const started = Date.now();
    const lookup = await resolver({ timeoutSeconds: 1, tries: 1 }).resolveMx("silent.example");
    const elapsed = Date.now() - started;
    assert.deepEqual(lookup, {
      kind: "temporary",
      reason: "Host or domain name not found. Name service error for name=silent.example type=MX: Host not found, try again",
    });
    assert.ok(dns.queries.some((q) => q.name === "silent.example" && q.type === "MX"), "the query reached the server");
    assert.ok(elapsed >= 500 && elapsed < 5000, `gave up after ${elapsed} ms`);
  });

  test("no DNS server listening is a temporary failure", async () => {
    const gone = await startDnsServer({});
    await gone.close();
    const lookup = await new MailResolver({ servers: [gone.server], timeoutSeconds: 1, tries: 1 }).resolveMx("ranked.example");
    assert.equal(lookup.kind, "temporary");
  });

  test("domain and exchange names are lower-cased without the trailing dot", async () => {
    assert.deepEqual(exchanges(await resolver().resolveMx("Shop.EXAMPLE.")), ["mx1.shop.example"]);
    assert.deepEqual(exchanges(await resolver().resolveMx("Bare.Example.")), ["bare.example"]);
  });
});

describe("resolveAddresses", () => {
  test("the preferred family comes first; any alternates, IPv4 first", async () => {
    const r = resolver();
    assert.deepEqual(await r.resolveAddresses("dual.example", "ipv4"), { kind: "ok", addresses: ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"] });
    assert.deepEqual(await r.resolveAddresses("dual.example", "ipv6"), { kind: "ok", addresses: ["2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2"] });
    assert.deepEqual(await r.resolveAddresses("dual.example", "any"), { kind: "ok", addresses: ["192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2"] });
  });

  test("one family is enough, even the one not preferred", async () => {
    assert.deepEqual(await resolver().resolveAddresses("v6only.example", "ipv4"), { kind: "ok", addresses: ["2001:db8::10"] });
  });

  test("a CNAME is followed to the addresses of its target", async () => {
    assert.deepEqual(await resolver().resolveAddresses("Alias.Example.", "ipv4"), { kind: "ok", addresses: ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"] });
  });

  test("an IP address is its own answer, without a query", async () => {
    const asked = dns.queries.length;
    assert.deepEqual(await resolver().resolveAddresses("192.0.2.77", "ipv6"), { kind: "ok", addresses: ["192.0.2.77"] });
    assert.deepEqual(await resolver().resolveAddresses("2001:db8::77", "ipv4"), { kind: "ok", addresses: ["2001:db8::77"] });
    assert.equal(dns.queries.length, asked);
  });

  test("a host without addresses, an unknown host and a failing server", async () => {
    const r = resolver();
    assert.deepEqual(await r.resolveAddresses("textonly.example", "ipv6"), {
      kind: "nxdomain",
      reason: "Host or domain name not found. Name service error for name=textonly.example type=AAAA: Host found but no data record of requested type",
    });
    assert.deepEqual(await r.resolveAddresses("nowhere.example", "ipv4"), {
      kind: "nxdomain",
      reason: "Host or domain name not found. Name service error for name=nowhere.example type=A: Host not found",
    });
    assert.deepEqual(await r.resolveAddresses("broken.example", "ipv4"), {
      kind: "temporary",
      reason: "Host or domain name not found. Name service error for name=broken.example type=A: Host not found, try again",
    });
  });
});

describe("diagnostic lookups", () => {
  test("TXT records keep their character-strings; a long one arrives whole over TCP", async () => {
    const r = resolver();
    assert.deepEqual(await r.resolveTxt("spf.example"), [["v=spf1 ip4:192.0.2.0/24 -all"], ["google-site-verification=abc"]]);
    assert.deepEqual(await r.resolveTxt("split.example"), [["v=DKIM1; k=rsa; ", "p=MIGf"]]);
    const [long] = await r.resolveTxt("selector._domainkey.long.example");
    assert.equal(long?.join(""), LONG_TXT);
    const transports = dns.queries.filter((q) => q.name === "selector._domainkey.long.example").map((q) => q.transport);
    assert.deepEqual(transports, ["udp", "tcp"], "a truncated UDP answer, then the query again over TCP");
  });

  test("PTR lookups build the reverse name for IPv4 and IPv6", async () => {
    assert.equal(reverseName("192.0.2.25"), "25.2.0.192.in-addr.arpa");
    assert.equal(reverseName("2001:db8::1"), V6_REVERSE);
    const r = resolver();
    assert.deepEqual(await r.resolvePtr("192.0.2.25"), ["mail.example.org"]);
    assert.deepEqual(await r.resolvePtr("2001:db8::1"), ["mail6.example.org"]);
    await assert.rejects(r.resolvePtr("192.0.2.26"), { code: "ENOTFOUND" });
  });

  test("resolve4 returns the A records and throws the DNS error", async () => {
    const r = resolver();
    assert.deepEqual(await r.resolve4("dual.example"), ["192.0.2.1", "192.0.2.2"]);
    await assert.rejects(r.resolve4("broken.example"), { code: "ESERVFAIL" });
  });
});
