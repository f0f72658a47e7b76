// `homerelay routes import`: sendmail mailertable, qmail smtproutes and Postfix transport(5) seed files
// converted to smarthosts and routes, unreadable lines reported by number, and the YAML accepted by check-config.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { importRoutes, RouteImportError, routesToYaml, type ImportedRoutes, type RouteFormat } from "../../agent/router/route-import.js";
import { CLI } from "../support/agent-process.js";

/** The RouteImportError that importing `lines` throws. */
function importError(lines: string[], format: RouteFormat, file: string): RouteImportError {
  try {
    importRoutes(lines.join("\n"), format, file);
  } catch (error) {
    assert.ok(error instanceof RouteImportError, `expected a RouteImportError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected importRoutes to throw");
}

/** A sendmail mailertable of a home server: line N of the file is element N-1. */
const MAILERTABLE = [
  "# /etc/mail/mailertable - the big receivers refuse residential addresses",
  "aol.com                 esmtp:[mail.isp.example]:587",
  "yahoo.com               esmtp:[mail.isp.example]:587",
  ".yahoo.com              esmtp:[mail.isp.example]:587",
  "",
  "# The office: its hosts through the gateway, the domain itself by MX of another host.",
  ".office.example         relay:[gw.office.example]",
  "office.example          smtp:mx.office.example",
  "partner.example         esmtp:partner.example",
  "legacy.example          smtp8:[192.0.2.25]",
  "Submit.Example          esmtp:[SMTP.submit.example]:465",
  "",
  "home.example.net        local:",
  "family.example          local:alice",
  "oldjob.example          error:5.1.2:550 oldjob.example no longer exists",
  "spam.example            error:nouser No mail accepted for spam.example",
  "bounce.example          error:550",
  "maint.example           error:4.3.2:451 held during maintenance",
  "# everything else through the ISP, then its backup",
  ".                       esmtp:[mail.isp.example]:587:[backup.isp.example]",
];

/** qmail's control/smtproutes: default route first, as qmail users write it. */
const SMTPROUTES = [
  "# control/smtproutes",
  ":smtp.isp.example:587",
  "aol.com:mail.isp.example:587",
  ".af.mil:",
  "inside.af.mil:firewall.af.mil:26",
  "direct.example:",
  "lab.example:[192.0.2.7]",
  "tls.example:smtp.isp.example:465",
];

/** A Postfix transport table: internal mail directly, the rest through the ISP. */
const TRANSPORT = [
  "# /etc/postfix/transport",
  "example.com       :",
  ".example.com      :",
  "*                 smtp:[mail.isp.example]:submission",
  "partner.example   smtp:[mx1.partner.example]:2525, [mx2.partner.example]:2525",
  "lists.example     relay:[lists-gw.example.net]",
  "mx.example        smtp:relay.example.net",
  "gw.example        :[gw.example.net]",
  "direct.example    smtp:",
  "home.example.net  local:",
  "  # a comment between entries",
  ".gone.example     error:5.1.2 mail for *.gone.example is not deliverable",
  "gone.example      error:mail for gone.example is not deliverable",
  "paused.example    retry:4.3.2 paused",
  "two.example       smtp:[mail.isp.example]:587,",
  "                  [backup.isp.example]",
];

describe("sendmail mailertable", () => {
  const imported = importRoutes(MAILERTABLE.join("\n"), "mailertable", "/etc/mail/mailertable");

  test("[host] and [host]:port become smarthosts named after host and port; 465 is implicit TLS", () => {
    assert.deepEqual(imported.smarthosts, {
      "mail.isp.example-587": { host: "mail.isp.example", port: 587, tls: "starttls" },
      "gw.office.example": { host: "gw.office.example", port: 25, tls: "starttls" },
      "mx.office.example": { host: "mx.office.example", port: 25, tls: "starttls" },
      "192.0.2.25": { host: "192.0.2.25", port: 25, tls: "starttls" },
      "smtp.submit.example-465": { host: "smtp.submit.example", port: 465, tls: "implicit" },
      "backup.isp.example": { host: "backup.isp.example", port: 25, tls: "starttls" },
    });
  });

  test("each entry becomes a route: relays, MX, local, reject with its text, hold for 4xx, . for the rest", () => {
    assert.deepEqual(imported.routes, [
      { match: "aol.com", route: "smarthost:mail.isp.example-587" },
      { match: "yahoo.com", route: "smarthost:mail.isp.example-587" },
      { match: ".yahoo.com", route: "smarthost:mail.isp.example-587" },
      { match: ".office.example", route: "smarthost:gw.office.example" },
      { match: "office.example", route: "smarthost:mx.office.example" },
      // The MX of the matched domain itself is plain delivery by MX.
      { match: "partner.example", route: "mx" },
      { match: "legacy.example", route: "smarthost:192.0.2.25" },
      { match: "submit.example", route: "smarthost:smtp.submit.example-465" },
      { match: "home.example.net", route: "local" },
      { match: "family.example", route: "local" },
      { match: "oldjob.example", route: "reject", text: "oldjob.example no longer exists" },
      { match: "spam.example", route: "reject", text: "No mail accepted for spam.example" },
      { match: "bounce.example", route: "reject" },
      { match: "maint.example", route: "hold" },
      { match: "*", route: "smarthost:mail.isp.example-587", fallback: ["smarthost:backup.isp.example"] },
    ]);
  });

  test("an MX lookup of a bare host, local:user and a temporary error are noted with their lines", () => {
    assert.deepEqual(imported.notes, [
      "/etc/mail/mailertable:8: sendmail looks up the MX records of mx.office.example (no [brackets]); homerelay connects to mx.office.example itself",
      "/etc/mail/mailertable:14: local:alice delivers every recipient to alice; homerelay's local route delivers to each recipient's own mailbox (add aliases)",
      "/etc/mail/mailertable:18: maint.example: imported as hold, for a temporary error in sendmail (mail stays queued)",
    ]);
  });

  test("CRLF line endings read the same", () => {
    assert.deepEqual(importRoutes(MAILERTABLE.join("\r\n"), "mailertable", "/etc/mail/mailertable"), imported);
  });

  test("every unreadable line is reported with its number and reason", () => {
    const error = importError(
      [
        "# broken mailertable",
        "uucp.example      uucp-dom:uuhost",
        ".my.domain        esmtp:%1.my.domain",
        "hub.example       smtp:postmaster@mailhub.example",
        "nothing.example",
        "bad_name.example  esmtp:[mail.isp.example]",
        "aol.com           esmtp:[mail.isp.example]",
        "aol.com           esmtp:[other.isp.example]",
        "far.example       esmtp:[mail.isp.example]:99999",
        "empty.example     esmtp:",
        "refused.example   error:Mail refused",
        "ok.example        error:250 ok",
        "mixed.example     error:5.7.1:450 make up your mind",
        "spaces.example    esmtp:[mail isp.example]",
      ],
      "mailertable",
      "mailertable",
    );
    assert.deepEqual(error.problems, [
      'mailertable:2: mailer "uucp-dom" cannot be converted: homerelay delivers by SMTP (smtp, esmtp, smtp8, dsmtp, relay), locally (local) or refuses (error)',
      'mailertable:3: "%1.my.domain": %1 substitution (a host per subdomain) cannot be converted',
      'mailertable:4: "postmaster@mailhub.example": user@host (rewriting the recipient) cannot be converted',
      "mailertable:5: no value for nothing.example: expected mailer:host, e.g. esmtp:[mail.isp.example]",
      'mailertable:6: "bad_name.example" is not a domain, .domain or . (everything else)',
      "mailertable:8: aol.com is already routed on line 7",
      "mailertable:9: port 99999 is out of range",
      "mailertable:10: no host after esmtp:",
      'mailertable:11: "error:Mail refused": expected error:D.S.N:code text, error:code text or error:<sysexits name> text',
      "mailertable:12: reply code 250 is not an error (4xx or 5xx)",
      "mailertable:13: status 5.7.1 and reply code 450 disagree",
      'mailertable:14: "[mail isp.example]" contains spaces: expected a host such as [mail.isp.example]',
    ]);
    assert.equal(error.message, error.problems.join("\n"));
    assert.equal(error.name, "RouteImportError");
  });
});

describe("qmail smtproutes", () => {
  const imported = importRoutes(SMTPROUTES.join("\n"), "smtproutes", "/var/qmail/control/smtproutes");

  test("relays are fixed hosts on port 25 or the given port; :relay is the default route", () => {
    assert.deepEqual(imported.smarthosts, {
      "smtp.isp.example-587": { host: "smtp.isp.example", port: 587, tls: "starttls" },
      "mail.isp.example-587": { host: "mail.isp.example", port: 587, tls: "starttls" },
      "firewall.af.mil-26": { host: "firewall.af.mil", port: 26, tls: "starttls" },
      "192.0.2.7": { host: "192.0.2.7", port: 25, tls: "starttls" },
      "smtp.isp.example-465": { host: "smtp.isp.example", port: 465, tls: "implicit" },
    });
  });

  test("an empty relay is delivery by MX; routes keep the order of the file", () => {
    assert.deepEqual(imported.routes, [
      { match: "*", route: "smarthost:smtp.isp.example-587" },
      { match: "aol.com", route: "smarthost:mail.isp.example-587" },
      { match: ".af.mil", route: "mx" },
      { match: "inside.af.mil", route: "smarthost:firewall.af.mil-26" },
      { match: "direct.example", route: "mx" },
      { match: "lab.example", route: "smarthost:192.0.2.7" },
      { match: "tls.example", route: "smarthost:smtp.isp.example-465" },
    ]);
    // qmail never looks up the MX of a relay: nothing changes meaning.
    assert.deepEqual(imported.notes, []);
  });

  test("every unreadable line is reported with its number and reason", () => {
    const error = importError(
      [
        "# broken smtproutes",
        "example.com: relay.example.net",
        "example.net",
        "example.org:relay.example.net:smtp",
        "example.org:relay.example.net:",
        "bad..example:relay.example.net",
        "ok.example:relay.example.net",
        "ok.example:other.example.net",
        "odd.example:-relay-.example.net",
      ],
      "smtproutes",
      "smtproutes",
    );
    assert.deepEqual(error.problems, [
      "smtproutes:2: spaces are not allowed: qmail reads domain:relay[:port] as written",
      "smtproutes:3: expected domain:relay[:port], domain: or :relay",
      'smtproutes:4: "smtp" is not a port number',
      'smtproutes:5: no port after "relay.example.net:"',
      'smtproutes:6: "bad..example" is not a domain or .domain (empty for everything else)',
      "smtproutes:8: ok.example is already routed on line 7",
      'smtproutes:9: "-relay-.example.net" is not relay[:port]',
    ]);
  });
});

describe("Postfix transport(5)", () => {
  const imported = importRoutes(TRANSPORT.join("\n"), "transport", "/etc/postfix/transport");

  test("nexthops become smarthosts; a service name is its port; the same host:port is one smarthost", () => {
    assert.deepEqual(imported.smarthosts, {
      "mail.isp.example-587": { host: "mail.isp.example", port: 587, tls: "starttls" },
      "mx1.partner.example-2525": { host: "mx1.partner.example", port: 2525, tls: "starttls" },
      "mx2.partner.example-2525": { host: "mx2.partner.example", port: 2525, tls: "starttls" },
      "lists-gw.example.net": { host: "lists-gw.example.net", port: 25, tls: "starttls" },
      "relay.example.net": { host: "relay.example.net", port: 25, tls: "starttls" },
      "gw.example.net": { host: "gw.example.net", port: 25, tls: "starttls" },
      "backup.isp.example": { host: "backup.isp.example", port: 25, tls: "starttls" },
    });
  });

  test("null entries and smtp: deliver by MX, nexthop lists fall back in turn, error: rejects, retry: holds", () => {
    assert.deepEqual(imported.routes, [
      { match: "example.com", route: "mx" },
      { match: ".example.com", route: "mx" },
      { match: "*", route: "smarthost:mail.isp.example-587" },
      { match: "partner.example", route: "smarthost:mx1.partner.example-2525", fallback: ["smarthost:mx2.partner.example-2525"] },
      { match: "lists.example", route: "smarthost:lists-gw.example.net" },
      { match: "mx.example", route: "smarthost:relay.example.net" },
      { match: "gw.example", route: "smarthost:gw.example.net" },
      { match: "direct.example", route: "mx" },
      { match: "home.example.net", route: "local" },
      { match: ".gone.example", route: "reject", text: "mail for *.gone.example is not deliverable" },
      { match: "gone.example", route: "reject", text: "mail for gone.example is not deliverable" },
      { match: "paused.example", route: "hold" },
      // A line starting with whitespace continues the entry above it.
      { match: "two.example", route: "smarthost:mail.isp.example-587", fallback: ["smarthost:backup.isp.example"] },
    ]);
    assert.deepEqual(imported.notes, [
      "/etc/postfix/transport:7: Postfix looks up the MX records of relay.example.net (no [brackets]); homerelay connects to relay.example.net itself",
      "/etc/postfix/transport:14: paused.example: imported as hold, for the retry transport (mail stays queued)",
    ]);
  });

  test("every unreadable line is reported with its number and reason", () => {
    const error = importError(
      [
        "# broken transport",
        "    smtp:[orphan.example]",
        "user@example.com   smtp:[mail.isp.example]",
        "lmtp.example       lmtp:unix:private/dovecot-lmtp",
        "discard.example    discard:",
        "uucp.example       uucp:example",
        "nothing.example",
        "imap.example       smtp:[mail.isp.example]:imap",
        "dash.example       smtp:[-bad-.example]",
        "colon.example      smtp",
      ],
      "transport",
      "transport",
    );
    assert.deepEqual(error.problems, [
      "transport:2: a continuation line (starting with whitespace) with no entry above it",
      'transport:3: "user@example.com": address patterns cannot be converted, homerelay routes by domain',
      "transport:4: lmtp: delivery to an LMTP server is not supported by homerelay",
      "transport:5: discard: homerelay has no route that throws mail away silently",
      'transport:6: transport "uucp" is defined in master.cf, which is not read: only smtp, relay, local, error and retry can be converted',
      "transport:7: no result for nothing.example: expected transport:nexthop, e.g. smtp:[mail.isp.example]:587",
      'transport:8: "imap" is not a port number or a known service (smtp, submission, submissions)',
      'transport:9: "[-bad-.example]" is not a host: expected [host]:port, [host] or host',
      'transport:10: "smtp" is not transport:nexthop, e.g. smtp:[mail.isp.example]:587',
    ]);
  });
});

test("two relays whose derived names collide get distinct smarthosts", () => {
  const imported = importRoutes(["a.example esmtp:[relay.example]:587", "b.example esmtp:[relay.example-587]"].join("\n"), "mailertable", "mailertable");
  assert.deepEqual(imported.smarthosts, {
    "relay.example-587": { host: "relay.example", port: 587, tls: "starttls" },
    "relay.example-587-2": { host: "relay.example-587", port: 25, tls: "starttls" },
  });
  assert.deepEqual(imported.routes, [
    { match: "a.example", route: "smarthost:relay.example-587" },
    { match: "b.example", route: "smarthost:relay.example-587-2" },
  ]);
});

describe("routesToYaml", () => {
  const imports: [string, ImportedRoutes][] = [
    ["mailertable", importRoutes(MAILERTABLE.join("\n"), "mailertable", "/etc/mail/mailertable")],
    ["smtproutes", importRoutes(SMTPROUTES.join("\n"), "smtproutes", "/var/qmail/control/smtproutes")],
    ["transport", importRoutes(TRANSPORT.join("\n"), "transport", "/etc/postfix/transport")],
  ];
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hr-route-import-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  for (const [name, imported] of imports) {
    test(`${name}: parsed back, the YAML is the imported smarthosts and routes`, () => {
      assert.deepEqual(parse(routesToYaml(imported)), { smarthosts: imported.smarthosts, routes: imported.routes });
    });

    test(`${name}: agent --check-config accepts the YAML as a configuration file`, async () => {
      const file = join(dir, `${name}.yaml`);
      await writeFile(file, routesToYaml(imported));
      const child = spawn(process.execPath, [CLI, "agent", "--check-config", "--config", file], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
      assert.equal(code, 0, `check-config failed:\n${stderr}`);
      assert.equal(stdout, `${file}: configuration OK\n`);
    });
  }

  test("the header names the source file and format and carries the notes as comments", () => {
    const yaml = routesToYaml(imports[0]![1]);
    const comments = yaml.split("\n").filter((l) => l.startsWith("#"));
    assert.equal(comments[0], "# homerelay routes imported from /etc/mail/mailertable (sendmail mailertable).");
    assert.ok(comments.includes("# Notes:"), yaml);
    for (const note of imports[0]![1].notes) assert.ok(comments.includes(`#   ${note}`), `missing note ${note} in\n${yaml}`);
    // One line per route, as in the README.
    assert.match(yaml, /^ {2}- \{ match: "\*", route: smarthost:mail\.isp\.example-587, fallback: \[ smarthost:backup\.isp\.example \] \}$/m);
  });

  test("an empty table gives empty sections", () => {
    const empty = importRoutes("# nothing here\n\n", "smtproutes", "smtproutes");
    assert.deepEqual(parse(routesToYaml(empty)), { smarthosts: {}, routes: [] });
  });
});
