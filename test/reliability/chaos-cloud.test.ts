// kill -9 on the agent → cloud path: messages submitted by SMTP go through the agent's cloud route and
// `homerelay-cloud serve` (a child process, onward by SMTP to a sink) while either process is SIGKILLed at
// seeded moments and restarted. The agent retries until the cloud answers: no acknowledged message is lost;
// duplicates stay within what was in flight. HR_CHAOS_SEED, HR_CHAOS_KILLS and HR_CHAOS_MESSAGES resize it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chaosViaCloud } from "../support/chaos-routes.js";
import { assertPromiseKept, describeFigures, smtpSubmission } from "../support/kill-chaos.js";

const SEED = Number(process.env.HR_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const KILLS = Number(process.env.HR_CHAOS_KILLS ?? 10);
const MESSAGES = Number(process.env.HR_CHAOS_MESSAGES ?? 60);

test(`kill -9 of the agent and of the cloud ${KILLS} times while ${MESSAGES} messages go through both: none lost (seed ${SEED})`, { timeout: 180_000 }, async (t) => {
  t.diagnostic(`seed ${SEED} (rerun with HR_CHAOS_SEED=${SEED})`);
  const { figures: f, agentLog, cloudLog } = await chaosViaCloud({ seed: SEED, messages: MESSAGES, kills: KILLS, clients: 4, deferRate: 0.1, submission: smtpSubmission, drainMs: 40_000 });
  for (const line of describeFigures(f)) t.diagnostic(line);

  assertPromiseKept(f, KILLS);
  assert.doesNotMatch(agentLog, /status=bounced|: hold: |corrupt queue file|fatal:/, `seed ${SEED}: a kill made the agent bounce, hold or lose a message`);
  assert.doesNotMatch(cloudLog, /request failed|status=500/, `seed ${SEED}: the cloud failed a request after a restart`);
});
