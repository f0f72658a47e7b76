// kill -9 under load on the SMTP path: messages submitted by SMTP go through the agent to a smarthost
// sink while the agent is SIGKILLed at seeded moments (intake, queue writes, delivery, after the sink's
// 250, deferral writes) and restarted on the same spool. Every 250 reaches the sink; duplicates stay
// within what was in flight at the kills. HR_CHAOS_SEED, HR_CHAOS_KILLS and HR_CHAOS_MESSAGES resize it
// (bench/chaos.ts runs the long version).
import { test } from "node:test";
import assert from "node:assert/strict";
import { chaosViaSmarthost } from "../support/chaos-routes.js";
import { assertPromiseKept, describeFigures, smtpSubmission } from "../support/kill-chaos.js";

const SEED = Number(process.env.HR_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const KILLS = Number(process.env.HR_CHAOS_KILLS ?? 10);
const MESSAGES = Number(process.env.HR_CHAOS_MESSAGES ?? 80);

test(`kill -9 of the agent ${KILLS} times while ${MESSAGES} messages go through it by SMTP to a smarthost: none lost (seed ${SEED})`, { timeout: 180_000 }, async (t) => {
  t.diagnostic(`seed ${SEED} (rerun with HR_CHAOS_SEED=${SEED})`);
  const { figures: f, agentLog } = await chaosViaSmarthost({ seed: SEED, messages: MESSAGES, kills: KILLS, clients: 4, deferRate: 0.1, submission: smtpSubmission, drainMs: 30_000 });
  for (const line of describeFigures(f)) t.diagnostic(line);

  assertPromiseKept(f, KILLS);
  assert.doesNotMatch(agentLog, /status=bounced|corrupt queue file|fatal:/, `seed ${SEED}: a kill made the agent bounce or lose a queue file`);
});
