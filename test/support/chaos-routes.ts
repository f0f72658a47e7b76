/**
 * chaos-routes — the two paths the kill -9 runs exercise, set up, run and torn down in one call:
 * the agent relaying to a recording smarthost, and the agent's cloud route through
 * `homerelay-cloud serve` (a child process, itself killed too) to a recording SMTP upstream.
 * Shared by test/reliability/chaos-*.test.ts (short) and bench/chaos.ts (long).
 */
import { pkcs8PemFromSeed } from "../../shared/protocol/ed25519.js";
import { startAgent, type AgentProcess } from "./agent-process.js";
import { makeKey } from "./cloud-client.js";
import { CloudProcess } from "./cloud-process.js";
import { onwardTo } from "./cloud-to-sink.js";
import { runChaos, type ChaosFigures, type ChaosPlan, type Victim } from "./kill-chaos.js";
import { RecordingSink } from "./recording-sink.js";

/** What a run leaves to look at: the figures, and the logs of every life. */
export interface ChaosOutcome {
  figures: ChaosFigures;
  agentLog: string;
  cloudLog: string;
}

/** Retries within a second or two, so a run drains quickly after its last kill. */
const QUICK_RETRIES = { minBackoff: 1, maxBackoff: 2, scanInterval: 1 };

/** Run `plan` with the agent delivering everything to a recording smarthost. */
export async function chaosViaSmarthost(plan: Omit<ChaosPlan, "others">): Promise<ChaosOutcome> {
  const sink = await RecordingSink.start();
  let agent: AgentProcess | null = null;
  try {
    agent = await startAgent({
      smarthosts: { sink: { host: "127.0.0.1", port: sink.port, tls: "none" } },
      routes: [{ match: "*", route: "smarthost:sink" }],
      queue: QUICK_RETRIES,
      delivery: { destinationConcurrency: 8 },
    });
    const run = await runChaos(agent, sink, plan, (life) => (agent = life));
    return { figures: run.figures, agentLog: run.log, cloudLog: "" };
  } finally {
    await agent?.cleanup();
    await sink.close();
  }
}

/**
 * Run `plan` through the agent's cloud route and `homerelay-cloud serve`, onward by SMTP to a
 * recording upstream; kills fall on the agent and on the cloud alike.
 */
export async function chaosViaCloud(plan: Omit<ChaosPlan, "others">): Promise<ChaosOutcome> {
  const key = makeKey("home-1");
  const sink = await RecordingSink.start();
  let cloud: CloudProcess | null = null;
  let agent: AgentProcess | null = null;
  try {
    cloud = await CloudProcess.start({
      keys: [{ id: key.id, publicKey: key.publicKey, senders: ["*@home.example.net"] }],
      onward: onwardTo(sink),
      // An answer the cloud was relaying when it died blocks retries under the same key until this
      // expires (idempotency-in-progress); the default of 15 minutes is pinned in fault-cloud.test.ts.
      idempotencyTtl: 8,
    });
    agent = await startAgent(
      {
        cloud: { url: cloud.url, keyId: key.id, keyFile: "home-1.key", timeout: 5 },
        routes: [{ match: "*", route: "cloud" }],
        queue: QUICK_RETRIES,
        delivery: { destinationConcurrency: 8 },
      },
      { files: { "home-1.key": pkcs8PemFromSeed(key.seed) } },
    );
    const target = cloud;
    const victim: Victim = {
      name: "cloud",
      moments: ["delivery", "after-250"],
      signal: () => target.signal(),
      exited: () => target.whenExited(),
      start: () => target.restart(),
    };
    const run = await runChaos(agent, sink, { ...plan, others: [victim] }, (life) => (agent = life));
    return { figures: run.figures, agentLog: run.log, cloudLog: cloud.log() };
  } finally {
    await agent?.cleanup();
    await cloud?.cleanup();
    await sink.close();
  }
}
