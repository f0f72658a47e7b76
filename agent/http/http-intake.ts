/**
 * http-intake — the HTTP API's way into the queue, the same as smtpd's and pickup's: the message
 * streams through cleanup (our Received:, Message-ID: and Date: as for submission, the hop, line
 * and header limits) into a queue file in incoming/, which is fsynced and committed to active/
 * before the API answers 202. A refused or failed message leaves nothing in the queue.
 */
import { statfs } from "node:fs/promises";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Envelope } from "../../shared/envelope.js";
import type { MailLog } from "../../shared/log.js";
import type { ProblemError } from "../../shared/problem-details.js";
import { rfc5322Date } from "../../shared/rfc5322-date.js";
import { Cleanup, type CleanupFault } from "../cleanup/cleanup.js";
import type { AgentConfig } from "../config.js";
import { HEADER_SIZE_LIMIT } from "../pickup/maildrop.js";
import { IncomingQueueFile, type QueuedMessage } from "../queue/queue-file.js";
import type { Spool } from "../queue/spool.js";
import { apiProblem } from "./api-problems.js";
import type { SubmissionJournal } from "./submission-journal.js";

/** Seconds a client is asked to wait after a storage problem (Retry-After). */
const RETRY_AFTER = 60;

/** What the intake needs from the agent. */
export interface HttpIntakeOptions {
  spool: Spool;
  journal: SubmissionJournal;
  log: MailLog;
}

/** One message to queue. */
export interface HttpMessage {
  envelope: Envelope;
  /** The message content, given the Message-ID: and Date: to use where the message has none. */
  content(complete: { messageId: string; date: Date }): Readable;
  /** The client's IP address. */
  client: string;
  /** `http/127.0.0.1:8025`, for the queue file's record. */
  listener: string;
  /** SHA-256 of the submitting token, hex: the owner of the message's status. */
  token: string;
}

/** The HTTP intake of one agent. */
export class HttpIntake {
  constructor(private readonly o: HttpIntakeOptions) {}

  /**
   * Queue `m` under the current configuration; resolves once it is committed to active/. Throws
   * ProblemError: 413, 400 for what cleanup refuses, 503 with Retry-After when the queue cannot take it.
   */
  async queue(config: AgentConfig, m: HttpMessage): Promise<QueuedMessage> {
    const { spool, journal, log } = this.o;
    const name = `http[${m.client}]`;
    if (!(await this.enoughSpace(config))) {
      log.warn(`NOQUEUE: not enough free space in ${spool.root} for ${name} (queueMinFree ${config.limits.queueMinFree} bytes)`);
      throw unavailable(`not enough free space for the queue (queueMinFree ${config.limits.queueMinFree} bytes)`);
    }
    let file: IncomingQueueFile;
    try {
      file = await IncomingQueueFile.create(spool, { envelope: m.envelope, client: { address: m.client, hostname: "unknown", helo: "", listener: m.listener }, origin: "http" });
    } catch (err) {
      throw this.storageFailure(err as NodeJS.ErrnoException, name);
    }
    const { id } = file;
    const arrival = new Date(file.record.arrival);
    const complete = { messageId: `<${id}@${config.hostname}>`, date: rfc5322Date(arrival) };
    const address = m.client.includes(":") ? `IPv6:${m.client}` : m.client;
    const cleanup = new Cleanup({
      // As smtpd writes it, with HTTP for the protocol.
      received: `Received: from unknown (unknown [${address}])\r\n\tby ${config.hostname} (homerelay) with HTTP id ${id}\r\n\t; ${complete.date}`,
      complete,
      hopLimit: config.limits.hopCount,
      lineLength: config.limits.lineLength,
      headerSize: HEADER_SIZE_LIMIT,
    });
    try {
      await pipeline(m.content({ messageId: complete.messageId, date: arrival }), cleanup, file.content());
    } catch (err) {
      await file.abort();
      throw this.storageFailure(err as NodeJS.ErrnoException, name, id);
    }
    const refusal = cleanup.size > config.limits.messageSize ? apiProblem("too-large", `the message has ${cleanup.size} octets; this agent accepts at most ${config.limits.messageSize}`) : cleanup.fault ? faultProblem(cleanup.fault, config) : null;
    if (refusal) {
      await file.abort();
      throw refusal;
    }
    try {
      await journal.record({ id, token: m.token, arrival: file.record.arrival, sender: m.envelope.sender, recipients: m.envelope.recipients.map((r) => r.address) });
    } catch (err) {
      await file.abort();
      throw this.storageFailure(err as NodeJS.ErrnoException, name, id);
    }
    try {
      return await file.commit();
    } catch (err) {
      await file.abort();
      await journal.forget(id);
      throw this.storageFailure(err as NodeJS.ErrnoException, name, id);
    }
  }

  /** Log a write error as smtpd does, and answer 503: whatever it was, the client may try again. */
  private storageFailure(err: NodeJS.ErrnoException, client: string, id = "NOQUEUE"): ProblemError {
    this.o.log.warn(`${id}: queue file write error from ${client}: ${err.code ?? "error"}: ${err.message}`);
    return unavailable(`queue file write error (${err.code ?? "error"})`);
  }

  /** Postfix queue_minfree, as smtpd checks it at MAIL FROM. */
  private async enoughSpace(config: AgentConfig): Promise<boolean> {
    const fs = await statfs(this.o.spool.root).catch(() => null);
    return fs !== null && fs.bavail * fs.bsize >= config.limits.queueMinFree;
  }
}

function unavailable(detail: string): ProblemError {
  return apiProblem("queue-unavailable", `${detail}; try again later`, { "retry-after": String(RETRY_AFTER) });
}

function faultProblem(fault: CleanupFault, config: AgentConfig): ProblemError {
  switch (fault) {
    case "loop":
      return apiProblem("mail-loop", `more than ${config.limits.hopCount} Received: header fields: mail forwarding loop`);
    case "line-too-long":
      return apiProblem("line-too-long", `a line is longer than ${config.limits.lineLength} characters (RFC 5322 limit is 998); encode the body (quoted-printable or base64)`);
    case "header-too-large":
      return apiProblem("header-too-large", `the header is larger than ${HEADER_SIZE_LIMIT} octets`);
  }
}
