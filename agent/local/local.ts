/**
 * local — the local delivery agent (Postfix local(8)): expands aliases, delivers to Maildirs,
 * and forwards to outside addresses by queueing a new message whose envelope sender is rewritten
 * with SRS. A message that already carries our Delivered-To: for a recipient is a loop and bounces.
 */
import { pipeline } from "node:stream/promises";
import { Headers } from "mailsplit";
import { parseAddress } from "../../shared/address.js";
import type { EnvelopeRecipient } from "../../shared/envelope.js";
import type { MailLog } from "../../shared/log.js";
import { IncomingQueueFile, type QueuedMessage } from "../queue/queue-file.js";
import type { Spool } from "../queue/spool.js";
import type { DeliveryRequest, DeliveryResult, Transport } from "../qmgr/transport.js";
import { mailboxOf, type LocalRecipients } from "./local-recipients.js";
import { deliverToMaildir } from "./maildir.js";

/** What local delivery needs from the agent. */
export interface LocalDeliveryOptions {
  hostname: string;
  /** Maildir root: one Maildir per mailbox under it. */
  mailboxes: string;
  recipients: LocalRecipients;
  spool: Spool;
  log: MailLog;
  /** A forwarded copy was committed to active/. */
  queued(message: QueuedMessage): void;
}

/** The `local` transport. */
export class LocalDelivery implements Transport {
  readonly name = "local";

  constructor(private readonly o: LocalDeliveryOptions) {}

  async deliver(request: DeliveryRequest): Promise<DeliveryResult[]> {
    const delivered = await readDeliveredTo(request.content());
    const results: DeliveryResult[] = [];
    for (const recipient of request.recipients) {
      results.push(await this.deliverOne(request, recipient, delivered));
    }
    return results;
  }

  private async deliverOne(request: DeliveryRequest, recipient: EnvelopeRecipient, delivered: Set<string>): Promise<DeliveryResult> {
    const base = { recipient: recipient.address, relay: "local" };
    const parsed = parseAddress(recipient.address);
    if (!parsed.ok) return { ...base, status: "bounced", dsn: "5.1.3", detail: "bad recipient address syntax" };
    if (delivered.has(recipient.address.toLowerCase())) {
      return { ...base, status: "bounced", dsn: "5.4.6", detail: `mail forwarding loop for ${recipient.address}` };
    }
    const { local, domain } = parsed.mailbox;
    const { mailboxes, external } = this.expand(local, domain);
    try {
      const prepend = `Return-Path: <${request.message.record.envelope.sender}>\nDelivered-To: ${recipient.address}\n`;
      for (const mailbox of mailboxes) {
        await deliverToMaildir({ root: this.o.mailboxes, mailbox, prepend, content: request.content(), hostname: this.o.hostname });
      }
      const forwardedAs = external.length > 0 ? await this.forward(request, recipient.address, external) : null;
      const what = [
        ...(mailboxes.length > 0 ? [`delivered to maildir${mailboxes.length > 1 || mailboxes[0] !== mailboxOf(local) ? ` ${mailboxes.join(", ")}` : ""}`] : []),
        ...(forwardedAs ? [`forwarded as ${forwardedAs}`] : []),
      ];
      return { ...base, status: "sent", dsn: "2.0.0", detail: what.join(", ") || "discarded (alias expands to nothing)" };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      return { ...base, status: "deferred", dsn: "4.2.0", detail: `cannot deliver to mailbox: ${e.code ?? "error"}: ${e.message}` };
    }
  }

  /** Alias expansion, also following aliases that name addresses in other local domains. */
  private expand(local: string, domain: string): { mailboxes: string[]; external: string[] } {
    const { recipients } = this.o;
    const srsOrigin = recipients.srsOrigin(local, domain);
    if (srsOrigin) return { mailboxes: [], external: [srsOrigin] };
    const mailboxes = new Set<string>();
    const external = new Set<string>();
    const seen = new Set<string>();
    const visit = (name: string) => {
      if (seen.has(name)) return;
      seen.add(name);
      const expansion = recipients.aliases?.expand(name) ?? { mailboxes: [name], external: [] };
      for (const m of expansion.mailboxes) mailboxes.add(m);
      for (const address of expansion.external) {
        const p = parseAddress(address);
        if (p.ok && recipients.isLocalDomain(p.mailbox.domain)) visit(mailboxOf(p.mailbox.local));
        else external.add(address);
      }
    };
    visit(mailboxOf(local));
    return { mailboxes: [...mailboxes], external: [...external] };
  }

  /** Queue a copy for outside addresses, from the SRS-rewritten sender, with our Delivered-To: on top. */
  private async forward(request: DeliveryRequest, via: string, to: string[]): Promise<string> {
    const { record } = request.message;
    const file = await IncomingQueueFile.create(this.o.spool, {
      envelope: { ...record.envelope, sender: this.o.recipients.srs.forward(record.envelope.sender), recipients: to.map((address) => ({ address })) },
      origin: "local",
    });
    let queued: QueuedMessage;
    try {
      const out = file.content();
      const prepend = `Delivered-To: ${via}\r\n`;
      out.write(prepend);
      await pipeline(request.content(), out);
      queued = await file.commit();
    } catch (err) {
      await file.abort();
      throw err;
    }
    this.o.log.info(`${file.id}: from=<${file.record.envelope.sender}>, nrcpt=${to.length} (forwarded from ${record.id} for <${via}>) (queue active)`);
    this.o.queued(queued);
    return file.id;
  }
}

/** The addresses in the message's Delivered-To: headers, lower case (for loop detection). */
async function readDeliveredTo(content: NodeJS.ReadableStream): Promise<Set<string>> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of content as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    length += chunk.length;
    const all = Buffer.concat(chunks);
    if (all.includes("\r\n\r\n") || all.includes("\n\n") || length > 1024 * 1024) break;
  }
  (content as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
  const block = Buffer.concat(chunks);
  const end = block.indexOf("\r\n\r\n");
  const headers = new Headers(end === -1 ? block : block.subarray(0, end + 2));
  return new Set(headers.get("delivered-to").map((line) => line.slice(line.indexOf(":") + 1).trim().toLowerCase()));
}
