/**
 * relay-check — after a deployment, asks the new relay what an agent would: `GET /v1/info`
 * (unsigned), and `GET /v1/whoami` signed with the agent's private key when the deploy was given
 * it, which proves the key, the accepted authority and the store work together.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { defaultEd25519, seedFromPkcs8Pem } from "../../shared/protocol/ed25519.js";
import { BARE_COMPONENTS, signRequest } from "../../shared/protocol/signed-request.js";
import type { AgentKey } from "./agent-keys.js";

/** A check's outcome in a line for the person deploying. */
export interface CheckLine {
  ok: boolean;
  text: string;
}

/** Check the relay at `url` (its base URL); `key` is signed with when its keyFile holds the private key. */
export async function checkRelay(url: string, key: AgentKey | undefined): Promise<CheckLine[]> {
  const base = url.replace(/\/+$/, "");
  const lines: CheckLine[] = [];
  const info = await answer(`${base}/v1/info`, {});
  lines.push(
    info.status === 200
      ? { ok: true, text: `GET /v1/info: 200, protocol ${(info.json as { protocol?: number }).protocol}, maxMessageSize ${(info.json as { maxMessageSize?: number }).maxMessageSize}` }
      : { ok: false, text: `GET /v1/info: ${info.status} ${info.text}` },
  );
  const pem = key === undefined ? undefined : privateKeyPem(key.keyFile);
  if (key === undefined || pem === undefined) return lines;
  const seed = seedFromPkcs8Pem(pem);
  const target = new URL(`${base}/v1/whoami`);
  try {
    const { signatureInput, signature } = await signRequest(
      { method: "GET", url: target, header: () => null },
      { keyid: key.id, seed, ed25519: await defaultEd25519(), components: BARE_COMPONENTS, nonce: randomUUID() },
    );
    const whoami = await answer(target.href, { "signature-input": signatureInput, signature });
    lines.push(
      whoami.status === 200
        ? { ok: true, text: `GET /v1/whoami signed by ${key.id}: 200, the relay sees this machine as ${(whoami.json as { ip?: string }).ip}` }
        : { ok: false, text: `GET /v1/whoami signed by ${key.id}: ${whoami.status} ${whoami.text}` },
    );
  } finally {
    seed.fill(0);
  }
  return lines;
}

/** The PEM private key in `file`, or undefined when the deploy was given only a public key. */
function privateKeyPem(file: string): string | undefined {
  try {
    const text = readFileSync(file, "utf8");
    return text.includes("-----BEGIN PRIVATE KEY-----") ? text : undefined;
  } catch {
    return undefined;
  }
}

/** One GET with a 20 s limit (a cold start included); network failures become status 0. */
async function answer(url: string, headers: Record<string, string>): Promise<{ status: number; text: string; json: unknown }> {
  try {
    const response = await fetch(url, { headers, signal: AbortSignal.timeout(20_000) });
    const text = await response.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      // A problem document or a gateway's text: shown as it is.
    }
    return { status: response.status, text: text.slice(0, 300), json };
  } catch (err) {
    return { status: 0, text: `(${(err as Error).message})`, json: null };
  }
}
