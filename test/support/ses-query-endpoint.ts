/**
 * ses-query-endpoint — a loopback stand-in for Amazon SES's v1 Query API, for the real SESClient
 * to talk to: form-encoded POSTs (Action=SendRawEmail, GetSendQuota) answered in SES's XML,
 * errors as `<ErrorResponse>`. It keeps what the emulator aws-ses-v2-local loses: the raw bytes,
 * every destination, the Source and the configuration set. Answers can be scripted per action.
 */
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

/** One SendRawEmail call as SES received it. */
export interface ReceivedRawEmail {
  messageId: string;
  source: string | undefined;
  destinations: string[];
  raw: Buffer;
  configurationSet: string | undefined;
}

/** An SES error answer: HTTP status, `Sender`/`Receiver`, the error code and its message. */
export interface SesError {
  status: number;
  type: "Sender" | "Receiver";
  code: string;
  message: string;
}

/** The account's sending limits, as GetSendQuota reports them. */
export interface SendQuota {
  max24HourSend: number;
  maxSendRate: number;
  sentLast24Hours: number;
}

/** A running endpoint. */
export interface SesQueryEndpoint {
  /** `http://127.0.0.1:<port>`, for the client's `endpoint`. */
  url: string;
  /** Accepted SendRawEmail calls, in order. */
  received: ReceivedRawEmail[];
  /** Every Action asked for, in order (accepted or not). */
  actions: string[];
  quota: SendQuota;
  /** Answer a coming call of `action` with `error`: the next one, or the one after `skip` answered normally (queued). */
  failNext(action: "SendRawEmail" | "GetSendQuota", error: SesError, skip?: number): void;
  close(): Promise<void>;
}

const XMLNS = "http://ses.amazonaws.com/doc/2010-12-01/";

/** SES's own error for a send over the account's rate. */
export const THROTTLED: SesError = { status: 400, type: "Sender", code: "Throttling", message: "Maximum sending rate exceeded." };

/** Start the endpoint on 127.0.0.1, port 0. */
export async function startSesQueryEndpoint(quota: SendQuota = { max24HourSend: 50_000, maxSendRate: 14, sentLast24Hours: 0 }): Promise<SesQueryEndpoint> {
  const received: ReceivedRawEmail[] = [];
  const actions: string[] = [];
  // Per action, what the coming calls get: an error, or null for a normal answer.
  const failures = new Map<string, (SesError | null)[]>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const requestId = randomUUID();
      const reply = (status: number, xml: string) => {
        res.writeHead(status, { "content-type": "text/xml", "x-amzn-requestid": requestId });
        res.end(`<?xml version="1.0" encoding="UTF-8"?>\n${xml}`);
      };
      const fail = (e: SesError) =>
        reply(
          e.status,
          `<ErrorResponse xmlns="${XMLNS}"><Error><Type>${e.type}</Type><Code>${e.code}</Code><Message>${escapeXml(e.message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`,
        );
      if (req.method !== "POST" || !/^AWS4-HMAC-SHA256 Credential=/.test(req.headers.authorization ?? "")) {
        return fail({ status: 403, type: "Sender", code: "MissingAuthenticationToken", message: "Request is missing Authentication Token" });
      }
      const form = new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
      const action = form.get("Action") ?? "";
      actions.push(action);
      const scripted = failures.get(action)?.shift();
      if (scripted) return fail(scripted);

      if (action === "GetSendQuota") {
        const q = endpoint.quota;
        return reply(
          200,
          `<GetSendQuotaResponse xmlns="${XMLNS}"><GetSendQuotaResult><SentLast24Hours>${q.sentLast24Hours.toFixed(1)}</SentLast24Hours><Max24HourSend>${q.max24HourSend.toFixed(1)}</Max24HourSend><MaxSendRate>${q.maxSendRate.toFixed(1)}</MaxSendRate></GetSendQuotaResult><ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></GetSendQuotaResponse>`,
        );
      }
      if (action === "SendRawEmail") {
        const data = form.get("RawMessage.Data");
        if (data === null) return fail({ status: 400, type: "Sender", code: "ValidationError", message: "RawMessage.Data is required" });
        const destinations: string[] = [];
        for (let n = 1; form.has(`Destinations.member.${n}`); n++) destinations.push(form.get(`Destinations.member.${n}`)!);
        const messageId = `0102019${Date.now().toString(16)}-${randomUUID()}-000000`;
        received.push({
          messageId,
          source: form.get("Source") ?? undefined,
          destinations,
          raw: Buffer.from(data, "base64"),
          configurationSet: form.get("ConfigurationSetName") ?? undefined,
        });
        return reply(
          200,
          `<SendRawEmailResponse xmlns="${XMLNS}"><SendRawEmailResult><MessageId>${messageId}</MessageId></SendRawEmailResult><ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></SendRawEmailResponse>`,
        );
      }
      return fail({ status: 400, type: "Sender", code: "InvalidAction", message: `The action ${action} is not valid for this web service.` });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const endpoint: SesQueryEndpoint = {
    url: `http://127.0.0.1:${port}`,
    received,
    actions,
    quota,
    failNext(action, error, skip = 0) {
      failures.set(action, [...(failures.get(action) ?? []), ...Array<null>(skip).fill(null), error]);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return endpoint;
}

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
