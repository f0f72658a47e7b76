/**
 * message-signature — HTTP Message Signatures (RFC 9421) as the protocol uses them: the signature
 * base over derived components (`@method`, `@authority`, `@path`, `@query`, …) and header fields,
 * and the `Signature-Input` / `Signature` fields, serialized and parsed as structured fields (RFC 8941).
 */
import { parseDictionary, serializeInnerList, type BareItem, type InnerList, type Item, type Parameters } from "structured-headers";

/** What of an HTTP request a signature can cover. */
export interface SignedMessage {
  method: string;
  url: URL;
  /** A header field's value, several lines combined with ", " (RFC 9110); null when absent. */
  header(name: string): string | null;
}

/** Signature parameters, in the order they are serialized (the order is part of the signed bytes). */
export interface SignatureParams {
  created?: number;
  expires?: number;
  nonce?: string;
  alg?: string;
  keyid?: string;
  tag?: string;
}

/** A signature as found in a request. */
export interface ReceivedSignature {
  label: string;
  components: string[];
  params: SignatureParams;
  signature: Uint8Array;
  /** The `@signature-params` value, for the signature base. */
  serializedParams: string;
}

/** Why a signature could not be read or its base built; the verifier answers 400 or 401 with this. */
export class SignatureSyntaxError extends Error {}

/** The value of one covered component (RFC 9421 section 2). */
export function componentValue(message: SignedMessage, name: string): string {
  switch (name) {
    case "@method":
      return message.method;
    case "@authority":
      return message.url.host.toLowerCase();
    case "@path":
      return message.url.pathname || "/";
    case "@query":
      return message.url.search || "?";
    case "@scheme":
      return message.url.protocol.replace(/:$/, "").toLowerCase();
    case "@target-uri":
      return message.url.href;
    case "@request-target":
      return message.url.pathname + message.url.search;
  }
  if (name.startsWith("@")) throw new SignatureSyntaxError(`unsupported derived component ${name}`);
  const value = message.header(name);
  if (value === null) throw new SignatureSyntaxError(`covered header field ${name} is missing`);
  return value.trim();
}

/** The `@signature-params` value: the inner list of components with the parameters. */
export function serializeSignatureParams(components: string[], params: SignatureParams): string {
  const parameters: Parameters = new Map<string, BareItem>();
  for (const key of ["created", "expires", "nonce", "alg", "keyid", "tag"] as const) {
    const v = params[key];
    if (v !== undefined) parameters.set(key, v);
  }
  return serializeInnerList([components.map((c): Item => [c, new Map()]), parameters]);
}

/** The signature base (RFC 9421 section 2.5): one line per component, then `@signature-params`. */
export function signatureBase(message: SignedMessage, components: string[], serializedParams: string): string {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const name of components) {
    if (name !== name.toLowerCase() || seen.has(name)) throw new SignatureSyntaxError(`component ${name} is repeated or not lower case`);
    seen.add(name);
    const value = componentValue(message, name);
    if (/[^\x20-\x7e]/.test(value)) throw new SignatureSyntaxError(`component ${name} has characters a signature base cannot hold`);
    lines.push(`"${name}": ${value}`);
  }
  lines.push(`"@signature-params": ${serializedParams}`);
  return lines.join("\n");
}

/** Read every signature of a request from its `Signature-Input` and `Signature` fields. */
export function parseSignatures(signatureInput: string, signature: string): ReceivedSignature[] {
  let inputs: Map<string, Item | InnerList>;
  let values: Map<string, Item | InnerList>;
  try {
    inputs = parseDictionary(signatureInput);
    values = parseDictionary(signature);
  } catch (err) {
    throw new SignatureSyntaxError(`Signature-Input or Signature is not a structured field dictionary: ${(err as Error).message}`);
  }
  const found: ReceivedSignature[] = [];
  for (const [label, member] of inputs) {
    if (!Array.isArray(member[0])) throw new SignatureSyntaxError(`Signature-Input ${label} is not an inner list`);
    const inner = member as InnerList;
    const components = inner[0].map(([value, params]) => {
      if (typeof value !== "string" || params.size > 0) throw new SignatureSyntaxError(`Signature-Input ${label}: components must be plain strings`);
      return value;
    });
    const params: SignatureParams = {};
    for (const [key, value] of inner[1]) {
      if ((key === "created" || key === "expires") && typeof value === "number" && Number.isInteger(value)) params[key] = value;
      else if ((key === "nonce" || key === "alg" || key === "keyid" || key === "tag") && typeof value === "string") params[key] = value;
      else throw new SignatureSyntaxError(`Signature-Input ${label}: bad parameter ${key}`);
    }
    const sig = values.get(label);
    if (!sig || Array.isArray(sig[0]) || !(sig[0] instanceof ArrayBuffer)) throw new SignatureSyntaxError(`Signature ${label} is missing or not a byte sequence`);
    found.push({ label, components, params, signature: new Uint8Array(sig[0]), serializedParams: serializeSignatureParams(components, params) });
  }
  return found;
}
