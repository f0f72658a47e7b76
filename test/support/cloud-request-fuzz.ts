/**
 * cloud-request-fuzz — fast-check arbitraries for what a broken or hostile agent sends the cloud:
 * a valid message submission changed before it is signed (so the signature holds and the cloud's
 * later checks must catch it) and after (so the signature must fail): random bodies (raw and JSON),
 * gzip that is not, digests, signature fields, envelope fields, idempotency keys, media types,
 * methods, paths.
 */
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { contentDigest } from "../../shared/protocol/content-digest.js";
import type { WireRequest } from "./cloud-client.js";

/**
 * One change to a request, as data so that fast-check prints a failing case readably: set or drop a
 * field, replace the body (with its digest, or not), make it a JSON message, or a fixed change by name.
 */
export type RequestChange =
  | { set: string; to: string }
  | { drop: string }
  | { body: Buffer; digest: boolean }
  | { json: Buffer }
  | { fixed: keyof typeof FIXED };

/** Changes that need no data. */
const FIXED = {
  "gzip-label": (r: WireRequest): WireRequest => ({ ...r, headers: { ...r.headers, "content-encoding": "gzip" } }),
  "gzip-body": (r: WireRequest): WireRequest => {
    const gz = gzipSync(r.body ?? Buffer.alloc(0));
    return { ...r, body: gz, headers: { ...r.headers, "content-encoding": "gzip", "content-digest": contentDigest(gz) } };
  },
  chunked: (r: WireRequest): WireRequest => ({ ...r, chunked: true }),
  put: (r: WireRequest): WireRequest => ({ ...r, method: "PUT" }),
  get: (r: WireRequest): WireRequest => ({ ...r, method: "GET", body: undefined }),
  query: (r: WireRequest): WireRequest => ({ ...r, path: "/v1/messages?x=1" }),
  "dot-dot": (r: WireRequest): WireRequest => ({ ...r, path: "/v1/../v1/messages" }),
  "double-slash": (r: WireRequest): WireRequest => ({ ...r, path: "//v1/messages" }),
  whoami: (r: WireRequest): WireRequest => ({ ...r, path: "/v1/whoami" }),
  "other-authority": (r: WireRequest): WireRequest => ({ ...r, host: "relay.elsewhere.example" }),
  "upper-case-authority": (r: WireRequest): WireRequest => ({ ...r, host: r.host.toUpperCase() }),
};

/** `request` with `change` made. */
export function applyChange(request: WireRequest, change: RequestChange): WireRequest {
  if ("set" in change) return { ...request, headers: { ...request.headers, [change.set]: change.to } };
  if ("drop" in change) return { ...request, headers: Object.fromEntries(Object.entries(request.headers).filter(([n]) => n !== change.drop)) };
  if ("body" in change) return { ...request, body: change.body, headers: change.digest ? { ...request.headers, "content-digest": contentDigest(change.body) } : request.headers };
  if ("json" in change) return { ...request, body: change.json, headers: { ...request.headers, "content-type": "application/json", "content-digest": contentDigest(change.json) } };
  return FIXED[change.fixed](request);
}

/** Text that is a legal header field value (visible ASCII, space, tab), unicode-free. */
const fieldText = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 120 });

/** Values a structured or address field might hold, valid-looking and not. */
const fieldValue = fc.oneof(
  fieldText,
  fc.constantFrom("application/json", "application/json; charset=utf-8", "message/rfc822; charset=utf-8", "MESSAGE/RFC822", "text/plain"),
  fc.constantFrom("", " ", '""', '"', "<>", "<a@b>", "<@a:b@c>", "<alice@home.example.net>; ret=full; envid=x", "<a%40b@c>", "<%ZZ@c>", "sha-256=:AAAA:", "sha-512=:", "hr=()", 'hr=("@method");created=1', "hr=:AAAA:", "?1", "1.5", ":=:", ";;;,,,", "<x@y>, <z@w>; notify=never"),
  fc.base64String({ maxLength: 200 }).map((b) => `sha-256=:${b}:`),
  // Up to 300 recipients: the header block stays under Node's 16 KiB (1000 recipients are pinned in http-fuzz.test.ts).
  fc.integer({ min: 1, max: 300 }).map((n) => Array.from({ length: n }, (_, i) => `<r${i}@example.org>`).join(", ")),
  fc.integer({ min: 250, max: 2000 }).map((n) => `"${"k".repeat(n)}"`),
);

const header = fc.constantFrom("content-type", "content-digest", "envelope-from", "envelope-to", "idempotency-key", "signature", "signature-input", "content-encoding");

/** A body: a plain message, none, random bytes, gzip of a message, a message without or with two From: fields. */
const body = fc.oneof(
  fc.uint8Array({ maxLength: 2000 }).map((b) => Buffer.from(b)),
  fc.constantFrom(
    Buffer.alloc(0),
    Buffer.from("Subject: no from\r\n\r\nbody\r\n"),
    Buffer.from("From: <alice@home.example.net>\r\nFrom: <eve@evil.example>\r\n\r\ntwo froms\r\n"),
    Buffer.from("From: <eve@evil.example>\r\n\r\nforeign from\r\n"),
    Buffer.from("From: =?utf-8?b?///=?= <>\r\n\r\n"),
    gzipSync(Buffer.from("From: <alice@home.example.net>\r\n\r\ngzipped\r\n")),
  ),
  fieldText.map((t) => Buffer.from(`From: <alice@home.example.net>\r\nSubject: ${t}\r\n\r\n${t}\r\n`)),
);

/** JSON for the JSON message form: anything at all, objects with message-like keys, and text that is not quite JSON. */
const jsonMessage = fc.oneof(
  fc.json({ maxDepth: 3 }).map((j) => Buffer.from(j)),
  fc
    .dictionary(fc.constantFrom("from", "to", "subject", "text", "html", "headers", "attachments", "replyTo", "cc", "date", "messageId"), fc.jsonValue({ maxDepth: 2 }))
    .map((o) => Buffer.from(JSON.stringify({ from: "alice@home.example.net", subject: "json", text: "hello", ...o }))),
  fc.constantFrom(Buffer.from('{"from":'), Buffer.from("[]"), Buffer.from("null"), Buffer.from('{"from":"alice@home.example.net","text":"\ud800"}'), Buffer.from("﻿{}")),
);

/** Changes that make sense either before or after signing. */
const change: fc.Arbitrary<RequestChange> = fc.oneof(
  fc.record({ set: header, to: fieldValue }),
  fc.record({ drop: header }),
  // A new body, with its digest brought along or not (before signing, with it: a valid request for another message).
  fc.record({ body, digest: fc.boolean() }),
  fc.record({ json: jsonMessage }),
  fc.record({ fixed: fc.constantFrom(...(Object.keys(FIXED) as (keyof typeof FIXED)[])) }),
);

/** Changes before signing (the signature covers them) and after (it does not). */
export const requestChanges = fc.record({ beforeSigning: fc.array(change, { maxLength: 3 }), afterSigning: fc.array(change, { maxLength: 2 }) });
