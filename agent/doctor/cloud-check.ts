/**
 * cloud-check — the cloud half as the agent needs it: it answers (`/v1/info`), it accepts the
 * agent's key (`/v1/whoami`: 200, or 401/403 with the problem type that says what to fix), the
 * two clocks agree within the signature window, and it takes messages as large as smtpd does.
 */
import type { CloudAnswer, CloudFailure, CloudIdentity, CloudProbe } from "../cloud/cloud-probe.js";
import { fail, ok, warn, type Check } from "./check.js";

/** The window the cloud's signatures allow when /v1/info names none (the cloud's default). */
const DEFAULT_WINDOW = 300;

const CLOCK_FIX = "set this machine's clock right (timedatectl set-ntp true, or chrony)";

/** The cloud checks, and the whoami answer (the public address) for the checks that follow. */
export async function cloudChecks(probe: CloudProbe, messageSize: number): Promise<{ checks: Check[]; whoami: CloudAnswer<CloudIdentity> | CloudFailure }> {
  const [info, whoami] = await Promise.all([probe.info(), probe.whoami()]);
  if (!info.ok && info.status === null) {
    return { checks: [fail("cloud", info.detail, "check cloud.url, that the cloud runs (homerelay-cloud serve, or its Lambda), and any proxy in front of it")], whoami };
  }
  const checks: Check[] = [
    info.ok
      ? ok("cloud", `cloud at ${probe.url} answers (protocol ${info.value.protocol ?? "unknown"})`)
      : warn("cloud", `cloud at ${probe.url} answers, but ${info.detail}`, "check that cloud.url is the cloud's base URL"),
  ];
  checks.push(keyCheck(probe, whoami));
  const window = info.ok ? (info.value.signatureWindow ?? DEFAULT_WINDOW) : DEFAULT_WINDOW;
  const dated = whoami.ok && whoami.date !== null ? whoami : info.ok && info.date !== null ? info : null;
  if (dated) checks.push(clockCheck(dated, window));
  else checks.push(warn("cloud-clock", "the cloud's answers carry no Date, so the clocks could not be compared", null));
  if (info.ok) checks.push(sizeCheck(info.value.maxMessageSize, messageSize));
  return { checks, whoami };
}

/** 200 from whoami, or what the 401/403 problem type says to fix. */
function keyCheck(probe: CloudProbe, whoami: CloudAnswer<CloudIdentity> | CloudFailure): Check {
  if (whoami.ok) return ok("cloud-key", `cloud accepts key ${probe.keyId}; it sees this box as ${whoami.value.ip}`);
  const listing = `{ id: ${probe.keyId}, publicKey: "${probe.publicKey}", senders: [...] }`;
  const fixes: Record<string, string> = {
    "unknown-key": `add the key to the cloud's keys: list: ${listing}`,
    "bad-signature": `the cloud lists another public key for ${probe.keyId}; list this one: ${listing}`,
    "signature-expired": CLOCK_FIX,
    "wrong-authority": `add the host (and :port) of cloud.url (${probe.url}) to the cloud's authority: list`,
  };
  const fix = (whoami.problem !== null ? fixes[whoami.problem] : undefined) ?? "check cloud.keyId and cloud.keyFile against the cloud's keys: list";
  return fail("cloud-key", `cloud refused key ${probe.keyId}: ${whoami.detail}`, fix);
}

/**
 * The cloud's clock against ours: its Date (whole seconds) against the middle of the request.
 * Only a difference beyond the round trip and Date's one-second resolution counts.
 */
function clockCheck(answer: CloudAnswer<unknown>, window: number): Check {
  const middle = (answer.sentAt + answer.receivedAt) / 2;
  const slack = (answer.receivedAt - answer.sentAt) / 2 + 1000;
  const raw = (answer.date! - middle) / 1000;
  const skew = Math.abs(raw) * 1000 <= slack ? 0 : Math.round(raw);
  // Beyond a minute, ten seconds either way say as much, and read the same from one run to the next.
  const shown = Math.abs(skew) >= 60 ? `about ${Math.abs(Math.round(skew / 10) * 10)}` : `${Math.abs(skew)}`;
  const said = `clock ${skew === 0 ? "agrees with the cloud's" : `is ${shown} s ${skew > 0 ? "behind" : "ahead of"} the cloud's`} (signatures allow ±${window} s)`;
  if (Math.abs(skew) > window) return fail("cloud-clock", `${said}: the cloud refuses every request as signature-expired`, CLOCK_FIX);
  if (Math.abs(skew) > window / 2) return warn("cloud-clock", said, CLOCK_FIX);
  return ok("cloud-clock", said);
}

/** The cloud takes messages as large as smtpd accepts, or the larger ones can never take the cloud route. */
function sizeCheck(max: number | null, messageSize: number): Check {
  if (max === null) return warn("cloud-size", "the cloud names no maximum message size; too large messages are found out by 413 answers", null);
  if (max < messageSize) {
    return warn(
      "cloud-size",
      `the cloud takes messages up to ${max} octets, smtpd accepts up to ${messageSize}: larger ones cannot take the cloud route`,
      `lower limits.messageSize to ${max} if most mail goes through the cloud`,
    );
  }
  return ok("cloud-size", `the cloud takes messages up to ${max} octets (smtpd accepts up to ${messageSize})`);
}
