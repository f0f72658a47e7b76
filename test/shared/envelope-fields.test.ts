// Envelope-From / Envelope-To: the SMTP envelope as header fields, both directions, and the
// malformed values the cloud must refuse with 400.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EnvelopeFieldError, formatEnvelopeFrom, formatEnvelopeTo, parseEnvelopeFrom, parseEnvelopeTo } from "../../shared/protocol/envelope-fields.js";

test("plain <a@b> lists always work", () => {
  assert.deepEqual(parseEnvelopeFrom("<a@example.net>"), { sender: "a@example.net" });
  assert.deepEqual(parseEnvelopeFrom("<>"), { sender: "" });
  assert.deepEqual(parseEnvelopeTo("<b@example.org>, <c@example.com>"), [{ address: "b@example.org" }, { address: "c@example.com" }]);
  assert.deepEqual(parseEnvelopeTo("<b@example.org>,<c@example.com>"), [{ address: "b@example.org" }, { address: "c@example.com" }]);
});

test("the issue's example parses to the envelope it describes", () => {
  assert.deepEqual(parseEnvelopeFrom("<a@example.net>; ret=hdrs; envid=QQ314159; smtputf8"), { sender: "a@example.net", ret: "HDRS", envid: "QQ314159", smtputf8: true });
  assert.deepEqual(parseEnvelopeTo("<b@example.org>, <c@example.com>; notify=success,failure; orcpt=rfc822;c@example.com"), [
    { address: "b@example.org" },
    { address: "c@example.com", notify: ["SUCCESS", "FAILURE"], orcpt: "rfc822;c@example.com" },
  ]);
});

test("format and parse are inverse, UTF-8 and awkward characters included", () => {
  const envelope = { sender: "jörg+x@bücher.example", ret: "FULL" as const, envid: "id with; semicolons, and <brackets>", smtputf8: true };
  const recipients = [
    { address: '"odd, name"@example.org', notify: ["DELAY" as const], orcpt: "rfc822;odd;orig,inal@example.org" },
    { address: "plain@example.org" },
    { address: "ünï@example.jp", notify: ["NEVER" as const] },
  ];
  const from = formatEnvelopeFrom({ ...envelope, recipients: [] });
  const to = formatEnvelopeTo(recipients);
  assert.ok(/^[\x20-\x7e]*$/.test(from + to), "fields are ASCII");
  assert.deepEqual(parseEnvelopeFrom(from), envelope);
  assert.deepEqual(parseEnvelopeTo(to), recipients);
});

test("malformed values are refused", () => {
  for (const bad of ["a@example.net", "<a@example.net", "<a@example.net>; ret=maybe", "<a@example.net>; bogus", "<a b@example.net>", "<%ZZ@example.net>", "<a%0D%0Ab@example.net>"]) {
    assert.throws(() => parseEnvelopeFrom(bad), EnvelopeFieldError, bad);
  }
  for (const bad of ["", "<>", "b@example.org", "<b@example.org>; notify=sometimes", "<b@example.org>; notify=never,success", "<b@example.org>; orcpt=rfc822", "<b@example.org>; x=1"]) {
    assert.throws(() => parseEnvelopeTo(bad), EnvelopeFieldError, bad);
  }
});
