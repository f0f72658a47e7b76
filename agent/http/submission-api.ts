/**
 * submission-api — the agent's local HTTP submission API as a Hono app: `POST /v1/messages` takes a
 * JSON message (composed with MailComposer) or a raw message/rfc822 one with Envelope-From and
 * Envelope-To, from a bearer token's holder, who may relay like an authenticated SMTP client but
 * only as the token's senders; `202` once the message is committed to the queue, as SMTP's 250.
 * `GET /v1/messages/{id}` says where each recipient stands; `/openapi.json` documents both.
 */
import { Readable } from "node:stream";
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import LeWindows from "nodemailer/lib/mime-node/le-windows";
import { parseAddress, senderMatches } from "../../shared/address.js";
import type { Envelope } from "../../shared/envelope.js";
import type { MailLog } from "../../shared/log.js";
import { problemName, problemResponse, ProblemError, PROBLEM_MEDIA_TYPE } from "../../shared/problem-details.js";
import { EnvelopeFieldError, parseEnvelopeFrom, parseEnvelopeTo } from "../../shared/protocol/envelope-fields.js";
import { headerFromAddresses } from "../../shared/submission/header-from.js";
import { jsonMessageSchema, readJsonMessageBody } from "../../shared/submission/json-message.js";
import { messageStatusSchema, problemSchema, submissionAcceptedSchema, type SubmissionAccepted } from "../../shared/submission/submission-answers.js";
import type { AgentConfig } from "../config.js";
import type { QueuedMessage } from "../queue/queue-file.js";
import type { Spool } from "../queue/spool.js";
import type { LocalRecipientTable } from "../smtpd/smtpd.js";
import { apiProblem } from "./api-problems.js";
import type { ApiToken, ApiTokens } from "./api-tokens.js";
import type { HttpIntake } from "./http-intake.js";
import { messageStatus } from "./message-status.js";
import type { SubmissionJournal } from "./submission-journal.js";

/** What the API reads on every request: a configuration reload replaces it. */
export interface ApiSettings {
  config: AgentConfig;
  tokens: ApiTokens;
  /** The local recipient table of the running configuration. */
  recipients: LocalRecipientTable;
  /** `http/127.0.0.1:8025`, for queue records. */
  listener: string;
}

/** What the app is built from. */
export interface SubmissionApiDeps {
  /** The settings in force. */
  settings(): ApiSettings;
  intake: HttpIntake;
  journal: SubmissionJournal;
  spool: Spool;
  log: MailLog;
  /** A message was committed to active/. */
  queued(message: QueuedMessage): void;
  /** The client's IP address, as the server entry sees it. */
  clientAddress(c: Context): string;
  /** The agent's version, in the OpenAPI document. */
  version: string;
}

type ApiEnv = { Variables: { client: string; token?: ApiToken; form?: "json" | "raw" } };

/** The local API; `app.fetch(request)` answers one request. */
export type SubmissionApp = OpenAPIHono<ApiEnv>;

/** A message read from a request, either form. */
interface SubmittedMessage {
  envelope: Envelope;
  headerFrom: string[];
  content(complete: { messageId: string; date: Date }): Readable;
}

const problem = (description: string) => ({ description, content: { [PROBLEM_MEDIA_TYPE]: { schema: problemSchema } } });
const bearer = { "WWW-Authenticate": { description: "`Bearer realm=\"homerelay\"`", schema: { type: "string" as const } } };
const retryAfter = { "Retry-After": { description: "Seconds to wait before trying again", schema: { type: "integer" as const } } };

/**
 * `POST /v1/messages` as documented. It is registered for the document only and handled by the
 * app's own chain: the token before anything else, SMTP's size limit while the body arrives, and
 * the JSON read by readJsonMessage as the cloud reads it (the route's generated validator would
 * parse the body first, without a limit, and answer in its own terms).
 */
const submitRoute = createRoute({
  method: "post",
  path: "/v1/messages",
  operationId: "submitMessage",
  summary: "Queue a message",
  description:
    "A JSON message (nodemailer's member names, composed by the agent), or a raw RFC 5322 message with its envelope in Envelope-From and Envelope-To (as in the cloud protocol). Answered only once the message is fsynced in the queue.",
  security: [{ bearerAuth: [] }],
  request: {
    headers: z.object({
      "envelope-from": z.string().optional().meta({ description: "Raw form only: `<a@example.net>` (`<>` for the null sender), as in docs/protocol.md" }),
      "envelope-to": z.string().optional().meta({ description: "Raw form only: `<b@example.org>, <c@example.com>`" }),
    }),
    body: {
      required: true,
      content: {
        "application/json": { schema: jsonMessageSchema },
        "message/rfc822": { schema: z.string().meta({ description: "The message, RFC 5322 (CRLF or LF line ends)" }) },
      },
    },
  },
  responses: {
    202: { description: "Queued", headers: { Location: { description: "The status URL", schema: { type: "string" } } }, content: { "application/json": { schema: submissionAcceptedSchema } } },
    400: problem("Malformed: invalid JSON, unknown member, bad address, header injection, no recipients, unknown local recipient"),
    401: { ...problem("No bearer token, or one this agent does not accept"), headers: bearer },
    403: problem("The token may not send as this envelope sender or header From: address"),
    413: problem("Larger than the agent's message size limit (the same as SMTP's)"),
    415: problem("Neither application/json nor message/rfc822"),
    503: { ...problem("The queue cannot take the message now (disk full, unwritable spool)"), headers: retryAfter },
  },
});

const statusRoute = createRoute({
  method: "get",
  path: "/v1/messages/{id}",
  operationId: "getMessageStatus",
  summary: "Where a message and each of its recipients stand",
  description: "Only for messages submitted with the same token; any other ID is unknown (404).",
  security: [{ bearerAuth: [] }],
  request: { params: z.object({ id: z.string().meta({ description: "The queue ID from the 202 answer", example: "0VJ3Q8M2ZK4T7R1A" }) }) },
  responses: {
    200: { description: "The message's status", content: { "application/json": { schema: messageStatusSchema } } },
    401: { ...problem("No bearer token, or one this agent does not accept"), headers: bearer },
    404: problem("No message with this ID was submitted with this token"),
  },
});

/** Build the local API from its dependencies. */
export function createSubmissionApp(deps: SubmissionApiDeps): SubmissionApp {
  const { log } = deps;
  const app = new OpenAPIHono<ApiEnv>();
  app.openAPIRegistry.registerComponent("securitySchemes", "bearerAuth", { type: "http", scheme: "bearer", description: "A token from the agent's http.tokens" });
  app.openAPIRegistry.registerPath(submitRoute);

  app.use(async (c, next) => {
    c.set("client", deps.clientAddress(c));
    await next();
  });

  app.onError((err, c) => {
    const p = err instanceof ProblemError ? err : internalError(log, err);
    if (c.req.method === "POST" && p.problem.status !== 401) {
      const token = c.get("token");
      log.info(`NOQUEUE: reject: POST ${c.req.path} from http[${c.get("client")}]: ${p.problem.status} ${problemName(p.problem)}: ${printable(p.problem.detail)}; ${token ? `token=${token.name} ` : ""}proto=HTTP`);
    }
    return problemResponse(p);
  });
  app.notFound(() => problemResponse(apiProblem("not-found", "the resources are POST /v1/messages, GET /v1/messages/{id} and GET /openapi.json")));

  /** The bearer token, before anything else is looked at; 401 with WWW-Authenticate without one. */
  const authenticate: MiddlewareHandler<ApiEnv> = async (c, next) => {
    const verdict = deps.settings().tokens.authenticate(c.req.header("authorization"));
    if (!verdict.ok) {
      if (verdict.failure === "invalid") log.warn(`http[${c.get("client")}]: bearer token authentication failed`);
      throw verdict.failure === "missing"
        ? apiProblem("token-missing", "send Authorization: Bearer <token> (a token from the agent's http.tokens)", { "www-authenticate": 'Bearer realm="homerelay"' })
        : apiProblem("bad-token", "the bearer token is not one of the agent's http.tokens", { "www-authenticate": 'Bearer realm="homerelay", error="invalid_token"' });
    }
    c.set("token", verdict.token);
    await next();
  };

  /** The form of the body, from Content-Type, before the body is read. */
  const mediaType: MiddlewareHandler<ApiEnv> = async (c, next) => {
    const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
    if (type === "application/json") c.set("form", "json");
    else if (type === "message/rfc822") c.set("form", "raw");
    else throw apiProblem("unsupported-media-type", `Content-Type is ${type || "missing"}; send application/json or message/rfc822`);
    await next();
  };

  /** The message size limit of SMTP, on the request body as it arrives. */
  const limitBody: MiddlewareHandler<ApiEnv> = (c, next) => {
    const max = deps.settings().config.limits.messageSize;
    return bodyLimit({
      maxSize: max,
      onError: () => {
        throw apiProblem("too-large", `the body is larger than ${max} octets, the message size limit of this agent`);
      },
    })(c, next);
  };

  app.post(submitRoute.path, authenticate, mediaType, limitBody, (c) => submitMessage(c, deps));

  // Registered before the route, whose parameter validator would otherwise run first.
  app.use(statusRoute.path.replace("{id}", ":id"), authenticate);
  app.openapi(statusRoute, async (c) => {
    const token = c.get("token")!;
    const { id } = c.req.valid("param");
    const entry = await deps.journal.read(id);
    // Another token's message is as unknown as one that never existed.
    if (!entry || entry.token !== token.hash.toString("hex")) throw apiProblem("not-found", "no message with this ID was submitted with this token");
    return c.json(await messageStatus(deps.spool, entry), 200);
  });

  app.get("/openapi.json", (c) =>
    c.json(
      app.getOpenAPI31Document({
        openapi: "3.1.0",
        info: { title: "homerelay local submission API", version: deps.version, description: "Send mail with one HTTP call; see README.md and docs/protocol.md." },
        servers: [{ url: new URL(c.req.url).origin }],
      }),
    ),
  );

  for (const [path, allow] of [
    ["/v1/messages", "POST"],
    ["/v1/messages/:id", "GET"],
    ["/openapi.json", "GET"],
  ] as const) {
    app.all(path, (c) => {
      throw apiProblem("method-not-allowed", `${c.req.method} is not allowed here; use ${allow}`, { allow });
    });
  }
  return app;
}

/** `POST /v1/messages` once the token and the media type are known and the body is within the limit. */
async function submitMessage(c: Context<ApiEnv>, deps: SubmissionApiDeps): Promise<Response> {
  const { config, recipients, listener } = deps.settings();
  const token = c.get("token")!;
  const client = c.get("client");
  const body = Buffer.from(await c.req.arrayBuffer());
  const message = c.get("form") === "json" ? jsonMessage(body) : rawMessage(c, body);
  authorize(token, message);
  checkRecipients(message.envelope, config, recipients);

  const queued = await deps.intake.queue(config, { envelope: message.envelope, content: message.content, client, listener, token: token.hash.toString("hex") });
  const { id } = queued.record;
  const { sender, recipients: rcpts } = message.envelope;
  deps.log.info(`${id}: client=http[${client}], token=${token.name}`);
  deps.log.info(`${id}: from=<${sender}>, size=${queued.size}, nrcpt=${rcpts.length} (queue active)`, { queueId: id, from: sender, size: queued.size, nrcpt: rcpts.length });
  deps.queued(queued);
  const statusUrl = new URL(`/v1/messages/${id}`, c.req.url).href;
  const answer: SubmissionAccepted = { id, statusUrl, envelope: { from: sender, to: rcpts.map((r) => r.address) } };
  return c.json(answer, 202, { location: statusUrl });
}

/** A JSON body as a message: MailComposer composes it once the queue ID is known. */
function jsonMessage(body: Buffer): SubmittedMessage {
  const read = readJsonMessageBody(body);
  if (!read.ok) throw new ProblemError(read.problem);
  return { envelope: read.envelope, headerFrom: read.headerFrom, content: (complete) => read.compose(complete) };
}

const CRLF = Buffer.from("\r\n");

/** A message/rfc822 body with its envelope in Envelope-From and Envelope-To, as in the cloud protocol. */
function rawMessage(c: Context<ApiEnv>, body: Buffer): SubmittedMessage {
  const from = c.req.header("envelope-from");
  const to = c.req.header("envelope-to");
  const missing = [from === undefined ? "Envelope-From" : null, to === undefined ? "Envelope-To" : null].filter((f) => f !== null);
  if (missing.length > 0) throw apiProblem("missing-field", `a message/rfc822 body needs its envelope: the request has no ${missing.join(" and ")} field`);
  let envelope: Envelope;
  try {
    envelope = { ...parseEnvelopeFrom(from!), recipients: parseEnvelopeTo(to!) };
  } catch (err) {
    if (err instanceof EnvelopeFieldError) throw apiProblem("bad-envelope", err.message);
    throw err;
  }
  for (const address of [...(envelope.sender === "" ? [] : [envelope.sender]), ...envelope.recipients.map((r) => r.address)]) {
    const parsed = parseAddress(address);
    if (!parsed.ok || parsed.flaws.includes("source-route")) throw apiProblem("bad-envelope", `<${address}> is not a mailbox address`);
  }
  const headerFrom = headerFromAddresses(body);
  if (!headerFrom.ok) throw new ProblemError(headerFrom.problem);
  // The queue holds CRLF line ends and complete lines, whatever the client sent.
  const chunks = body.at(-1) === 0x0a || body.length === 0 ? [body] : [body, CRLF];
  return { envelope, headerFrom: headerFrom.addresses, content: () => Readable.from(chunks).pipe(new LeWindows()) };
}

/** The token's senders must cover the envelope sender and every header From: address (the cloud's rule for keys). */
function authorize(token: ApiToken, message: SubmittedMessage): void {
  const { sender } = message.envelope;
  const allowed = (address: string) => token.senders.some((p) => senderMatches(address, p));
  if (sender === "") {
    if (!token.nullSender) throw apiProblem("null-sender-not-allowed", `token ${token.name} may not send with the null sender <>`);
  } else if (!allowed(sender)) {
    throw apiProblem("sender-not-allowed", `<${sender}>: Sender address rejected: not owned by token ${token.name}`);
  }
  const foreign = message.headerFrom.find((a) => !allowed(a));
  if (foreign !== undefined) throw apiProblem("from-not-allowed", `From: <${foreign}> is not among the senders of token ${token.name}`);
}

/** The recipient limit, and local recipients that exist (token holders may relay anywhere else, as SASL clients may). */
function checkRecipients(envelope: Envelope, config: AgentConfig, table: LocalRecipientTable): void {
  if (envelope.recipients.length > config.limits.recipients) {
    throw apiProblem("too-many-recipients", `${envelope.recipients.length} recipients; this agent accepts at most ${config.limits.recipients} per message`);
  }
  for (const { address } of envelope.recipients) {
    const parsed = parseAddress(address);
    if (!parsed.ok) throw apiProblem("bad-address", `<${address}> is not a mailbox address`);
    const { mailbox, flaws } = parsed;
    const local = !flaws.includes("address-literal") && table.isLocalDomain(mailbox.domain);
    if (local && (flaws.length > 0 || !table.isLocalRecipient(mailbox.local, mailbox.domain))) {
      throw apiProblem("unknown-recipient", `<${address}>: Recipient address rejected: User unknown in local recipient table`);
    }
  }
}

/** `text` without control characters, for a log line that must stay one line. */
function printable(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, "?");
}

function internalError(log: MailLog, err: Error): ProblemError {
  log.error(`http request failed: ${err.message}`);
  return apiProblem("internal-error", "the agent failed; try again later");
}
