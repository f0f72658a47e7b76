/**
 * submission-answers — what the agent's local submission API answers, as schemas: the message was
 * queued (its queue ID and where to ask about it), where each recipient stands, and a problem.
 * The agent documents them in its OpenAPI document; the client reads its answers with their types.
 */
import * as z from "zod";

/** `202`: the message is in the queue, fsynced, as after SMTP's 250. */
export const submissionAcceptedSchema = z
  .object({
    /** The queue ID, as in the mail log and `homerelay queue list`. */
    id: z.string().meta({ example: "0VJ3Q8M2ZK4T7R1A" }),
    /** `GET` this for the delivery status of each recipient. */
    statusUrl: z.string().meta({ example: "http://127.0.0.1:8025/v1/messages/0VJ3Q8M2ZK4T7R1A" }),
    /** The SMTP envelope the message was queued with (Bcc recipients included). */
    envelope: z.object({ from: z.string(), to: z.array(z.string()) }),
  })
  .meta({ id: "SubmissionAccepted" });

/** Where one recipient stands. */
export const recipientStatusSchema = z
  .object({
    recipient: z.string(),
    /** `queued`: not tried yet; `deferred`: will be tried again (`detail` says why not yet); `sent` and `bounced` are final. */
    status: z.enum(["queued", "deferred", "sent", "bounced"]),
    /** RFC 3463 enhanced status code of the last attempt. */
    dsn: z.string().optional(),
    /** Where the last attempt went: `local`, `mx.example.org[192.0.2.1]:25`, `cloud[https://…]`. */
    relay: z.string().optional(),
    /** The next hop's reply or the reason, as in the mail log. */
    detail: z.string().optional(),
    /** When the last attempt was made, ISO 8601. */
    time: z.string().optional(),
  })
  .meta({ id: "RecipientStatus" });

/** A message's place in the queue and its recipients. */
export const messageStatusSchema = z
  .object({
    id: z.string(),
    /** The queue directory it is in, or `done` once every recipient was sent or bounced and it left the queue. */
    state: z.enum(["active", "deferred", "hold", "corrupt", "done"]),
    /** Arrival time, ISO 8601. */
    arrival: z.string(),
    /** The envelope sender ("" for the null sender). */
    from: z.string(),
    recipients: z.array(recipientStatusSchema),
  })
  .meta({ id: "MessageStatus" });

/** An RFC 9457 problem; act on `type`, not on the texts. */
export const problemSchema = z
  .object({
    type: z.string().meta({ example: "https://homerelay.dev/problems/header-injection" }),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    /** JSON Pointer to the member of the request body at fault. */
    field: z.string().optional(),
  })
  .meta({ id: "Problem" });

/** The `202` answer of a submission. */
export type SubmissionAccepted = z.infer<typeof submissionAcceptedSchema>;
/** The answer of `GET /v1/messages/{id}`. */
export type MessageStatus = z.infer<typeof messageStatusSchema>;
/** One recipient of a MessageStatus. */
export type RecipientStatusAnswer = z.infer<typeof recipientStatusSchema>;
