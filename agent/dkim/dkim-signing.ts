/**
 * dkim-signing — DKIM signing (RFC 6376, rsa-sha256, relaxed/relaxed) of mail as it leaves by a
 * remote way out (mx, smarthost, cloud), never local delivery: a Transport around another that
 * hands it the queued message with a DKIM-Signature field in front. The queue file is never changed,
 * so each attempt (and each fallback) is signed once, afresh.
 */
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import addressparser from "nodemailer/lib/addressparser";
import MessageParser, { type MessageParserHeaderLine } from "nodemailer/lib/dkim/message-parser";
import RelaxedBody from "nodemailer/lib/dkim/relaxed-body";
import sign from "nodemailer/lib/dkim/sign";
import { parseAddress } from "../../shared/address.js";
import type { MailLog } from "../../shared/log.js";
import type { DeliveryRequest, DeliveryResult, Transport } from "../qmgr/transport.js";
import type { DkimKey, DkimKeys } from "./dkim-keys.js";

/**
 * Header fields the cloud route leaves out of the signature: Amazon SES replaces Message-ID and
 * Date and sets Return-Path (Bounces-To too, on some paths), which would break a signature over them.
 */
export const CLOUD_SKIP_FIELDS = ["message-id", "date", "return-path", "bounces-to"];

/** The remote ways out that sign. */
type RemoteWays = Partial<Record<"mx" | "smarthost" | "cloud", Transport>>;

/** `ways` with DKIM signing around each (the cloud's without CLOUD_SKIP_FIELDS); unchanged without keys. */
export function signOutgoing(keys: DkimKeys | null, ways: RemoteWays, log: MailLog): RemoteWays {
  if (keys === null) return ways;
  return Object.fromEntries(
    Object.entries(ways).map(([route, transport]) => [route, new DkimSigningTransport(transport, keys, route === "cloud" ? CLOUD_SKIP_FIELDS : [], log)]),
  );
}

/** What the signing pass found: the field to put in front, or nothing to sign. */
type Signing = { field: Buffer; key: DkimKey } | { field: null; reason: string | null };

/** A way out whose mail leaves signed with the key of its sender domain. */
export class DkimSigningTransport implements Transport {
  readonly name: string;

  constructor(
    private readonly inner: Transport,
    private readonly keys: DkimKeys,
    /** Lower-case header field names kept out of the signature. */
    private readonly skipFields: string[],
    private readonly log: MailLog,
  ) {
    this.name = inner.name;
  }

  async deliver(request: DeliveryRequest): Promise<DeliveryResult[]> {
    const { message } = request;
    let signing: Signing;
    try {
      signing = await this.sign(request);
    } catch (err) {
      // Mail for a DMARC-protected domain must not leave unsigned: wait and try again (OpenDKIM's tempfail).
      const detail = `cannot DKIM-sign the message: ${(err as Error).message}`;
      return request.recipients.map((r) => ({ recipient: r.address, status: "deferred", dsn: "4.3.0", relay: "none", detail }));
    }
    if (signing.field === null) {
      if (signing.reason) this.log.info(`${message.record.id}: not DKIM-signed: ${signing.reason}`);
      return this.inner.deliver(request);
    }
    const { field, key } = signing;
    this.log.info(`${message.record.id}: DKIM-Signature field added (s=${key.selector}, d=${key.domain})`);
    return this.inner.deliver({
      ...request,
      // The size announced (SIZE=, the cloud's limit) is that of the message as sent.
      message: { ...message, size: message.size + field.length },
      content: () => Readable.from(withField(field, request.content), { objectMode: false }),
    });
  }

  /**
   * One pass over the queued message through nodemailer's DKIM parts: its header fields (which
   * choose the key) and the relaxed body hash, then the signature field. The body is hashed as it
   * streams by, never held in memory, so the message as sent is the field and a second read.
   */
  private async sign(request: DeliveryRequest): Promise<Signing> {
    // A forward is someone else's message: signing it would vouch for whatever its From: claims,
    // a spoof of our own domain included, and make it pass DMARC at the next hop.
    if (request.message.record.origin === "local") return { field: null, reason: "a forwarded message is not ours to sign" };
    const parser = new MessageParser();
    const body = new RelaxedBody({ hashAlgo: "sha256" });
    const found: { headers?: MessageParserHeaderLine[]; key?: DkimKey | null; skip?: string; bodyHash?: string } = {};
    // Without a key to sign with, the rest of the message need not be read.
    const unsigned = new AbortController();
    parser.once("headers", (headers: MessageParserHeaderLine[]) => {
      found.headers = headers;
      found.key = this.keys.forMessage(headerFromDomain(headers), domainOf(request.message.record.envelope.sender));
      if (found.key && signedBy(headers, found.key)) found.skip = `it carries a DKIM-Signature of s=${found.key.selector}, d=${found.key.domain} already`;
      if (!found.key || found.skip) unsigned.abort();
    });
    body.once("hash", (hash: string) => (found.bodyHash = hash));
    const discard = new Writable({ write: (_chunk, _encoding, done) => done() });
    try {
      await pipeline(request.content(), parser, body, discard, { signal: unsigned.signal });
    } catch (err) {
      if (!unsigned.signal.aborted) throw err;
    }
    const { headers, key, bodyHash } = found;
    if (found.skip) return { field: null, reason: found.skip };
    if (!key || !headers || !bodyHash) return { field: null, reason: null };
    const skipFields = this.skipFields.length > 0 ? { skipFields: this.skipFields.join(":") } : {};
    const field = sign(headers, "sha256", bodyHash, { domainName: key.domain, keySelector: key.selector, privateKey: key.privateKey, ...skipFields });
    if (field === false) throw new Error(`the key of s=${key.selector}, d=${key.domain} could not sign`);
    return { field: Buffer.from(`${field}\r\n`, "latin1"), key };
  }
}

/** The message with the signature field in front; the queue file is opened only once the field is taken. */
async function* withField(field: Buffer, content: () => NodeJS.ReadableStream): AsyncGenerator<Buffer> {
  yield field;
  for await (const chunk of content()) yield chunk as Buffer;
}

/** The domain of the first address in the first From: field, or null when there is none. */
function headerFromDomain(headers: MessageParserHeaderLine[]): string | null {
  const from = headers.find((h) => h.key === "from");
  if (!from) return null;
  // The lines are raw octets in a latin1 string; an address may be UTF-8.
  const value = Buffer.from(from.line.slice(from.line.indexOf(":") + 1), "latin1").toString("utf8").replace(/\r?\n/g, "");
  const address = addressparser(value, { flatten: true }).find((a) => a.address.includes("@"))?.address;
  return address ? domainOf(address) : null;
}

/** The domain of an address (lower case), or null for the null sender, an address literal or a malformed address. */
function domainOf(address: string): string | null {
  const parsed = parseAddress(address);
  return parsed.ok && !parsed.flaws.includes("address-literal") ? parsed.mailbox.domain : null;
}

/** Whether a DKIM-Signature field of the message is by `key` (same d= and s=), e.g. from a signing MTA before us. */
function signedBy(headers: MessageParserHeaderLine[], key: DkimKey): boolean {
  return headers
    .filter((h) => h.key === "dkim-signature")
    .some((h) => {
      // The field is a tag list (RFC 6376 section 3.2): tag=value pairs separated by ";", folding white space anywhere.
      const tags = new Map(
        h.line
          .slice(h.line.indexOf(":") + 1)
          .split(";")
          .map((pair) => pair.replace(/\s+/g, ""))
          .map((pair) => [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)]),
      );
      return tags.get("d")?.toLowerCase() === key.domain && tags.get("s")?.toLowerCase() === key.selector.toLowerCase();
    });
}
