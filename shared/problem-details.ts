/**
 * problem-details — RFC 9457 `application/problem+json` as both halves answer it: a stable `type`
 * URI under https://homerelay.dev/problems/ that clients act on, a fixed title per type, and a
 * detail for the person reading it. Each API keeps its own table of types; refusals are thrown as
 * ProblemError and answered with problemResponse.
 */

/** The common prefix of every problem type URI. */
export const PROBLEM_BASE = "https://homerelay.dev/problems/";

/** The media type of a problem answer. */
export const PROBLEM_MEDIA_TYPE = "application/problem+json";

/** A problem type: its HTTP status and its title (the same for every occurrence). */
export interface ProblemType {
  status: number;
  title: string;
}

/** An RFC 9457 problem details object; `field` (an extension) points into a JSON request body. */
export interface ProblemDetails {
  type: string;
  title: string;
  status: number;
  detail: string;
  /** JSON Pointer (RFC 6901) to the member of the request body at fault, e.g. `/to/1`. */
  field?: string;
}

/** The problem `name` of `table` with `detail` (and `field`). */
export function problemOf<T extends Record<string, ProblemType>>(table: T, name: keyof T & string, detail: string, field?: string): ProblemDetails {
  const { status, title } = table[name]!;
  return { type: PROBLEM_BASE + name, title, status, detail, ...(field !== undefined ? { field } : {}) };
}

/** The short name of a problem type URI (`sender-not-allowed`), for log lines. */
export function problemName(problem: ProblemDetails): string {
  return problem.type.startsWith(PROBLEM_BASE) ? problem.type.slice(PROBLEM_BASE.length) : problem.type;
}

/** A request an API refuses; thrown by its checks, answered by its app with problemResponse. */
export class ProblemError extends Error {
  constructor(
    readonly problem: ProblemDetails,
    /** Extra response header fields: WWW-Authenticate, Accept-Signature, Retry-After, Allow. */
    readonly headers: Record<string, string> = {},
  ) {
    super(problem.detail);
    this.name = "ProblemError";
  }
}

/** The `application/problem+json` response of a refusal. */
export function problemResponse(p: ProblemError): Response {
  return new Response(JSON.stringify(p.problem), { status: p.problem.status, headers: { "content-type": PROBLEM_MEDIA_TYPE, ...p.headers } });
}
