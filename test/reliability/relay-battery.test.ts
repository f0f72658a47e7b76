// An open-relay battery against an mx listener, after RFC 2505 and the classic relay-test lists (percent hack,
// bang paths, source routes, quoted locals, `user%domain@local`, IP literals in many spellings, trailing dots,
// case, 8-bit and IDN, comments, missing brackets), tried under four sender/HELO disguises: every attempt is
// refused — 554 5.7.1 for a relay, 501 5.1.3 for what is not an address — nothing is queued, and the same
// listener still takes mail for its own users (so the refusals are not a listener that refuses everything).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { domainToUnicode } from "node:url";
import { startAgent, type AgentProcess } from "../support/agent-process.js";
import { allQueueFiles } from "../support/queue-durability.js";
import { SmtpDialog } from "../support/smtp-dialog.js";

const LOCAL = "home.example.net";
const REMOTE = "remote.example";
const SELF = "[127.0.0.1]";

/** The reply as read off the wire (latin1), for addresses with UTF-8 in them. */
const wire = (text: string) => Buffer.from(text, "utf8").toString("latin1");
const relayDenied = (echo: string) => `554 5.7.1 <${wire(echo)}>: Relay access denied`;
const BAD_SYNTAX = "501 5.1.3 Error: Bad recipient address syntax";
const ourBadSyntax = (address: string) => `501 5.1.3 <${address}>: Recipient address rejected: bad address syntax`;

/** RCPT TO argument (as sent) and the one right reply. */
const BATTERY: [string, string][] = [
  // The plain attempt and its spellings.
  [`<victim@${REMOTE}>`, relayDenied(`victim@${REMOTE}`)],
  [`<VICTIM@REMOTE.EXAMPLE>`, relayDenied("VICTIM@REMOTE.EXAMPLE")],
  [` <victim@${REMOTE}>`, relayDenied(`victim@${REMOTE}`)],
  [`<victim@${REMOTE}> NOTIFY=NEVER`, relayDenied(`victim@${REMOTE}`)],
  [`<postmaster@${REMOTE}>`, relayDenied(`postmaster@${REMOTE}`)],
  [`victim@${REMOTE}`, BAD_SYNTAX],
  [`"victim@${REMOTE}"`, BAD_SYNTAX],
  [`<victim @${REMOTE}>`, BAD_SYNTAX],
  [`<victim(comment)@${REMOTE}>`, ourBadSyntax(`victim(comment)@${REMOTE}`)],
  // The percent hack, also chained, in any case, at localhost and at our address literal.
  [`<victim%${REMOTE}@${LOCAL}>`, relayDenied(`victim%${REMOTE}@${LOCAL}`)],
  [`<alice%${REMOTE}@${LOCAL}>`, relayDenied(`alice%${REMOTE}@${LOCAL}`)],
  [`<victim%REMOTE.example@HOME.example.NET>`, relayDenied("victim%REMOTE.example@HOME.example.NET")],
  [`<victim%${REMOTE}%${LOCAL}@${LOCAL}>`, relayDenied(`victim%${REMOTE}%${LOCAL}@${LOCAL}`)],
  [`<victim%${REMOTE}@localhost>`, relayDenied(`victim%${REMOTE}@localhost`)],
  [`<victim%${REMOTE}@${SELF}>`, relayDenied(`victim%${REMOTE}@${SELF}`)],
  // Bang paths (UUCP).
  [`<${REMOTE}!victim>`, BAD_SYNTAX],
  [`<${REMOTE}!victim@${LOCAL}>`, relayDenied(`${REMOTE}!victim@${LOCAL}`)],
  [`<${REMOTE}!victim@${SELF}>`, relayDenied(`${REMOTE}!victim@${SELF}`)],
  [`<${LOCAL}!${REMOTE}!victim@${LOCAL}>`, relayDenied(`${LOCAL}!${REMOTE}!victim@${LOCAL}`)],
  // Source routes (RFC 5321 says to strip them; what is left is a remote address).
  [`<@${LOCAL}:victim@${REMOTE}>`, relayDenied(`victim@${REMOTE}`)],
  [`<@${SELF}:victim@${REMOTE}>`, relayDenied(`victim@${REMOTE}`)],
  [`<@${LOCAL},@${SELF}:victim@${REMOTE}>`, relayDenied(`victim@${REMOTE}`)],
  // An @ hidden in quotes or escaped, or a second @.
  [`<"victim@${REMOTE}">`, BAD_SYNTAX],
  [`<"victim%${REMOTE}">`, BAD_SYNTAX],
  [`<"victim@${REMOTE}"@${LOCAL}>`, BAD_SYNTAX],
  [`<"victim@${REMOTE}"@${SELF}>`, BAD_SYNTAX],
  [`<"victim\\"@${REMOTE}"@${LOCAL}>`, BAD_SYNTAX],
  [`<victim\\@${REMOTE}@${LOCAL}>`, BAD_SYNTAX],
  [`<victim@${REMOTE}@${LOCAL}>`, BAD_SYNTAX],
  [`<victim@${REMOTE}@${SELF}>`, BAD_SYNTAX],
  // Address literals: ours, others, IPv6, v4-mapped, and the short and numeric spellings.
  [`<alice@${SELF}>`, relayDenied(`alice@${SELF}`)],
  [`<postmaster@${SELF}>`, relayDenied(`postmaster@${SELF}`)],
  [`<victim@[192.0.2.1]>`, relayDenied("victim@[192.0.2.1]")],
  [`<victim@[IPv6:2001:db8::1]>`, relayDenied("victim@[IPv6:2001:db8::1]")],
  [`<victim@[IPv6:::ffff:127.0.0.1]>`, relayDenied("victim@[IPv6:::ffff:127.0.0.1]")],
  [`<victim@[127.1]>`, BAD_SYNTAX],
  [`<victim@[2130706433]>`, BAD_SYNTAX],
  // Trailing dots, and domains that merely contain ours.
  [`<victim@${REMOTE}.>`, BAD_SYNTAX],
  [`<victim%${REMOTE}.@${LOCAL}>`, BAD_SYNTAX],
  [`<victim%${REMOTE}@${LOCAL}.>`, BAD_SYNTAX],
  [`<victim@${REMOTE}.${LOCAL}>`, relayDenied(`victim@${REMOTE}.${LOCAL}`)],
  [`<victim@${LOCAL}.${REMOTE}>`, relayDenied(`victim@${LOCAL}.${REMOTE}`)],
  // 8-bit local parts and domains, without SMTPUTF8, and an A-label.
  [`<vïctim@${REMOTE}>`, relayDenied(`vïctim@${REMOTE}`)],
  [`<victim@rëmote.example>`, relayDenied("victim@rëmote.example")],
  [`<victim%rëmote.example@${LOCAL}>`, relayDenied(`victim%rëmote.example@${LOCAL}`)],
  [`<victim@xn--rmote-fsa.example>`, relayDenied(`victim@${domainToUnicode("xn--rmote-fsa.example")}`)],
  // Nothing, and a local part too long to be one.
  [`<>`, BAD_SYNTAX],
  [`<${"v".repeat(65)}@${LOCAL}>`, ourBadSyntax(`${"v".repeat(65)}@${LOCAL}`)],
];

/** The disguises: HELO name and MAIL FROM a relay tester cycles through. */
const DISGUISES: [string, string][] = [
  ["client.remote.example", "<spammer@remote.example>"],
  [LOCAL, "<>"],
  [SELF, `<alice@${LOCAL}>`],
  ["localhost", `<postmaster@${SELF}>`],
];

let agent: AgentProcess;

before(async () => {
  agent = await startAgent({
    hostname: LOCAL,
    localDomains: [LOCAL],
    users: { alice: { cramMd5Secret: "not used by this test" } },
    listeners: [{ role: "mx", listen: "127.0.0.1:0", greetingDelay: 0 }],
  });
});
after(() => agent?.cleanup());

for (const [helo, from] of DISGUISES) {
  test(`EHLO ${helo}, MAIL FROM:${from}: all ${BATTERY.length} relay attempts refused with the right code, DATA refused, nothing queued`, async () => {
    const { dialog } = await SmtpDialog.open(agent.ports[0]!);
    try {
      assert.equal((await dialog.command(`EHLO ${helo}`)).code, 250);
      assert.equal((await dialog.command(`MAIL FROM:${from}`)).text, "250 2.1.0 Accepted");
      const replies: Record<string, string> = {};
      for (const [rcpt] of BATTERY) replies[rcpt] = (await dialog.command(`RCPT TO:${rcpt}`)).text;
      assert.deepEqual(replies, Object.fromEntries(BATTERY));
      const data = await dialog.command("DATA");
      assert.equal(data.code, 503, `DATA with no accepted recipient: ${data.text}`);
    } finally {
      await dialog.quit();
    }
    assert.deepEqual(await allQueueFiles(agent.spool), []);
  });
}

test("the same listener takes mail for its own users, in any case, and for bare postmaster", async () => {
  const { dialog } = await SmtpDialog.open(agent.ports[0]!);
  try {
    assert.equal((await dialog.command("EHLO client.remote.example")).code, 250);
    assert.equal((await dialog.command("MAIL FROM:<someone@remote.example>")).code, 250);
    for (const rcpt of [`<alice@${LOCAL}>`, "<ALICE@HOME.EXAMPLE.NET>", "<postmaster>"]) assert.equal((await dialog.command(`RCPT TO:${rcpt}`)).text, "250 2.1.5 Accepted", rcpt);
    assert.equal((await dialog.command("RSET")).code, 250);
  } finally {
    await dialog.quit();
  }
});
