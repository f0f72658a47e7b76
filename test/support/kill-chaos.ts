/**
 * kill-chaos — kill -9 under load: messages with unique Message-IDs go in through a submission
 * method (SMTP today; HTTP is one more SubmissionMethod) while a controller SIGKILLs the agent, or
 * a process behind it (the cloud), at seeded moments and starts it again on the same spool. The
 * figures say what a 250 promised and what reached the sink: lost, duplicated, and the bound.
 */
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import type { AgentProcess } from "./agent-process.js";
import type { RecordingSink } from "./recording-sink.js";
import { SmtpDialog } from "./smtp-dialog.js";

/** A small fast PRNG (mulberry32): the same seed gives the same plan of kills. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One message of the run. */
export interface ChaosMessage {
  n: number;
  messageId: string;
  sender: string;
  recipient: string;
  /** The whole message, CRLF line ends, without the final dot. */
  text: string;
}

/** Moments of one submission that a kill can be timed to; each is called synchronously. */
export interface IntakeMoments {
  /** The agent took DATA (or the request head) and part of the message is out. */
  inData(): void;
  /** The end of the message is out; the answer is not in yet. */
  sent(): void;
  /** The attempt is over, answered or not. */
  over(): void;
}

/** A way to hand a message to the agent; HTTP submission is another implementation of this. */
export interface SubmissionMethod {
  readonly name: string;
  /** Resolve true once the agent accepted the message (250, 202), false when it did not (the client tries again). */
  submit(agent: AgentProcess, message: ChaosMessage, moments: IntakeMoments): Promise<boolean>;
}

/** SMTP submission on the agent's first listener, one connection per message, as mutt or cron would. */
export const smtpSubmission: SubmissionMethod = {
  name: "SMTP",
  async submit(agent, message, moments) {
    const { dialog, greeting } = await SmtpDialog.open(agent.ports[0]!);
    try {
      if (greeting.code !== 220) return false;
      for (const [line, code] of [
        ["EHLO chaos.home.example.net", 250],
        [`MAIL FROM:<${message.sender}>`, 250],
        [`RCPT TO:<${message.recipient}>`, 250],
        ["DATA", 354],
      ] as const) {
        if ((await dialog.command(line)).code !== code) return false;
      }
      const half = message.text.length >> 1;
      dialog.write(message.text.slice(0, half));
      moments.inData();
      dialog.write(`${message.text.slice(half)}.\r\n`);
      moments.sent();
      return (await dialog.read(30_000)).code === 250;
    } finally {
      moments.over();
      dialog.destroy();
    }
  },
};

/**
 * Where a kill lands. `intake`: a client is in the middle of DATA; `queue-write`: 0–4 ms after a
 * final dot (the queue file is being fsynced and renamed); `delivery`: the sink saw MAIL FROM;
 * `after-250`: the sink just answered 250 and the sender has not acted on it yet; `queue-update`:
 * the sink just answered 451 (the agent records the deferral and moves the file); `timed`: none of
 * these came within a second, so the kill happens then.
 */
export type KillMoment = "intake" | "queue-write" | "delivery" | "after-250" | "queue-update" | "timed";

/** A process the controller kills: the agent, or one behind it. */
export interface Victim {
  readonly name: string;
  /** The moments a kill of this victim is timed to. */
  readonly moments: KillMoment[];
  /** SIGKILL, synchronously, so that the kill lands at the moment it was timed to. */
  signal(): void;
  /** Resolves once the killed process has exited. */
  exited(): Promise<void>;
  /** Start it again on the same state. */
  start(): Promise<void>;
}

/** What to run. */
export interface ChaosPlan {
  seed: number;
  messages: number;
  kills: number;
  /** Concurrent submitting clients. */
  clients: number;
  /** Share of end-of-DATA replies the sink answers 451 instead of 250 (exercises deferral writes). */
  deferRate: number;
  submission: SubmissionMethod;
  /** Processes besides the agent that may be killed (the cloud). */
  others?: Victim[];
  /** The longest the run may take to deliver everything after the last kill. */
  drainMs: number;
}

/** One kill and what was in flight at it. */
export interface KillRecord {
  victim: string;
  moment: KillMoment;
  /** Messages accepted by the agent before the kill. */
  accepted: number;
  /** Submissions whose end was out but whose answer was not in: each may be queued and submitted again. */
  unanswered: number;
  /** Messages the sink took since the previous kill that were still queued after this one: each will go again. */
  deliveredStillQueued: number;
}

/** The outcome of a run. */
export interface ChaosFigures {
  seed: number;
  submission: string;
  messages: number;
  kills: KillRecord[];
  /** Message-IDs acknowledged by the agent that never reached the sink. */
  lost: string[];
  /** Copies at the sink beyond the first of each message. */
  duplicates: number;
  /** The most duplicates the kills can explain: the sum of what was in flight at each. */
  duplicateBound: number;
  /** The most copies of one message. */
  maxCopies: number;
  /** Messages at the sink that the run never submitted (notices, strangers). */
  unexpected: string[];
  /** Queue files still in the agent's spool at the end (the run waits for it to empty). */
  leftInQueue: string[];
  deliveries: number;
  seconds: number;
}

/** The agent as a victim: killed and started again on the same directory and configuration. */
class AgentVictim implements Victim {
  readonly name = "agent";
  readonly moments: KillMoment[] = ["intake", "queue-write", "delivery", "after-250", "queue-update"];
  /** The log of every life so far but the current one. */
  readonly logs: string[] = [];
  private life: Promise<AgentProcess>;
  private started: (agent: AgentProcess) => void = () => {};

  constructor(
    private current: AgentProcess,
    /** Told of every new life, so the caller can always clean up the process that runs. */
    private readonly onLife: (agent: AgentProcess) => void,
  ) {
    this.life = Promise.resolve(current);
  }

  /** The running agent; while it is down, waits for the next life. */
  running(): Promise<AgentProcess> {
    return this.life;
  }

  get process(): AgentProcess {
    return this.current;
  }

  signal(): void {
    this.current.child.kill("SIGKILL");
    this.life = new Promise((resolve) => (this.started = resolve));
  }

  exited(): Promise<void> {
    return this.current.kill();
  }

  async start(): Promise<void> {
    this.logs.push(this.current.log());
    this.current = await this.current.restart();
    this.onLife(this.current);
    this.started(this.current);
  }
}

const QUEUE_STATES = ["incoming", "active", "deferred", "hold"];

async function queuedIds(spool: string): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const state of QUEUE_STATES) for (const name of await readdir(join(spool, state))) ids.add(name);
  return ids;
}

/** The messages of a run: unique Message-IDs, a few KiB each. */
function chaosMessages(seed: number, count: number, sender: string, recipient: string): ChaosMessage[] {
  const line = `${"chaos ".repeat(12)}\r\n`;
  return Array.from({ length: count }, (_, n) => {
    const messageId = `<chaos-${seed}-${n}@home.example.net>`;
    const text =
      `From: <${sender}>\r\nTo: <${recipient}>\r\nSubject: chaos ${seed} #${n}\r\nMessage-ID: ${messageId}\r\n` +
      `Date: Mon, 06 Jan 2025 09:00:00 +0000\r\n\r\nmessage ${n}\r\n${line.repeat(40)}`;
    return { n, messageId, sender, recipient, text };
  });
}

/**
 * Run the plan against `agent` (configured to deliver to `sink`, directly or through the cloud):
 * submit every message until the agent accepts it, kill at the planned moments, then wait until
 * every accepted message reached the sink and the queue is empty. `onLife` is told of each
 * restarted agent process (the one to clean up, even when the run fails). Returns the figures
 * and the log of every life.
 */
export async function runChaos(agent: AgentProcess, sink: RecordingSink, plan: ChaosPlan, onLife: (agent: AgentProcess) => void): Promise<{ figures: ChaosFigures; log: string }> {
  const started = performance.now();
  // The plan (where each kill falls, on whom, at which moment) has a generator of its own, so the
  // seed replays it whatever the timing; the sink's verdicts and jitter draw from another.
  const random = seededRandom(plan.seed);
  const noise = seededRandom(plan.seed ^ 0x5bd1e995);
  const victim = new AgentVictim(agent, onLife);
  // Set when any part fails, so that the others stop rather than outlive the run.
  let stopped = false;
  const victims: Victim[] = [victim, ...(plan.others ?? [])];
  const messages = chaosMessages(plan.seed, plan.messages, "carol@home.example.net", "bob@example.org");
  const accepted = new Set<string>();
  let unanswered = 0;

  // One armed moment at a time; firing it kills the victim right there.
  let armed: { moment: KillMoment; fire: () => void } | null = null;
  const reach = (moment: KillMoment) => {
    if (armed?.moment !== moment) return;
    const { fire } = armed;
    armed = null;
    fire();
  };
  sink.hooks = {
    mail: () => reach("delivery"),
    verdict: () => (noise() < plan.deferRate ? "defer" : "accept"),
    replied: (_m, verdict) => reach(verdict === "accept" ? "after-250" : "queue-update"),
  };

  let next = 0;
  const client = async () => {
    while (next < messages.length && !stopped) {
      const message = messages[next++]!;
      while (!stopped) {
        const current = await victim.running();
        let inFlight = false;
        const moments: IntakeMoments = {
          inData: () => reach("intake"),
          sent: () => {
            inFlight = true;
            unanswered++;
            if (armed?.moment === "queue-write") setTimeout(() => reach("queue-write"), Math.floor(noise() * 5));
          },
          over: () => {
            if (inFlight) unanswered--;
            inFlight = false;
          },
        };
        const ok = await plan.submission.submit(current, message, moments).catch(() => false);
        if (ok) {
          accepted.add(message.messageId);
          break;
        }
        // Refused or cut off: a real client tries again (on the next life, if the agent died).
        if (current === victim.process) await new Promise((r) => setTimeout(r, 50));
      }
    }
  };

  const kills: KillRecord[] = [];
  const controller = async () => {
    let recordedAtLastKill = 0;
    for (let k = 0; k < plan.kills && !stopped; k++) {
      // Spread the kills over the stream of messages.
      const due = Math.floor(((k + random()) * plan.messages) / (plan.kills + 1));
      await waitUntil(() => stopped || accepted.size >= due || next >= messages.length, 60_000);
      const target = victims[Math.floor(random() * victims.length)]!;
      const choice = target.moments[Math.floor(random() * target.moments.length)]!;
      const moment = await new Promise<KillMoment>((resolve) => {
        const timer = setTimeout(() => {
          armed = null;
          target.signal();
          resolve("timed");
        }, 1000);
        armed = {
          moment: choice,
          fire: () => {
            clearTimeout(timer);
            target.signal();
            resolve(choice);
          },
        };
      });
      const atKill = { accepted: accepted.size, unanswered: target === victim ? unanswered : 0, recorded: sink.received.slice(recordedAtLastKill) };
      recordedAtLastKill = sink.received.length;
      await target.exited();
      const queued = await queuedIds(victim.process.spool);
      kills.push({
        victim: target.name,
        moment,
        accepted: atKill.accepted,
        unanswered: atKill.unanswered,
        deliveredStillQueued: new Set(atKill.recorded.filter((m) => queued.has(m.queueId)).map((m) => m.queueId)).size,
      });
      await target.start();
    }
  };

  const stopOnFailure = (err: unknown) => {
    stopped = true;
    throw err;
  };
  await Promise.all([controller(), ...Array.from({ length: plan.clients }, client)].map((p) => p.catch(stopOnFailure)));
  const final = await victim.running();
  // A message that never arrives is reported as lost, not as a time-out.
  const allArrived = () => {
    const copies = sink.copies();
    return [...accepted].every((id) => copies.has(id));
  };
  const arrived = await sink.until("every accepted message reached the sink", allArrived, plan.drainMs).then(
    () => true,
    () => false,
  );
  if (arrived) await waitUntil(async () => (await queuedIds(final.spool)).size === 0, plan.drainMs).catch(() => undefined);

  const copies = sink.copies();
  const submitted = new Set(messages.map((m) => m.messageId));
  const figures: ChaosFigures = {
    seed: plan.seed,
    submission: plan.submission.name,
    messages: plan.messages,
    kills,
    lost: [...accepted].filter((id) => !copies.has(id)),
    duplicates: [...copies.values()].reduce((sum, n) => sum + n - 1, 0),
    duplicateBound: kills.reduce((sum, k) => sum + k.unanswered + k.deliveredStillQueued, 0),
    maxCopies: Math.max(0, ...copies.values()),
    unexpected: [...copies.keys()].filter((id) => !submitted.has(id)),
    leftInQueue: [...(await queuedIds(final.spool))].sort(),
    deliveries: sink.received.length,
    seconds: (performance.now() - started) / 1000,
  };
  return { figures, log: [...victim.logs, final.log()].join("") };
}

/** Poll `check` every 20 ms until it holds, or fail after `ms`. */
async function waitUntil(check: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`chaos run stalled for ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The figures in a few lines, for t.diagnostic and the bench. */
export function describeFigures(f: ChaosFigures): string[] {
  const byMoment = new Map<string, number>();
  for (const k of f.kills) byMoment.set(`${k.victim}/${k.moment}`, (byMoment.get(`${k.victim}/${k.moment}`) ?? 0) + 1);
  return [
    `seed ${f.seed}: ${f.messages} messages by ${f.submission}, ${f.kills.length} kills (${[...byMoment].map(([m, n]) => `${m} ${n}`).join(", ")}) in ${f.seconds.toFixed(1)} s`,
    `lost ${f.lost.length}, duplicates ${f.duplicates} (bound ${f.duplicateBound}: ${f.kills.reduce((s, k) => s + k.unanswered, 0)} unanswered at intake, ${f.kills.reduce((s, k) => s + k.deliveredStillQueued, 0)} delivered but still queued), most copies of one message ${f.maxCopies}, ${f.deliveries} deliveries`,
  ];
}

/**
 * The promise of a 250 under kill -9, asserted: every kill happened, nothing acknowledged is
 * missing, nothing strange arrived, nothing is left queued, and duplicates are within the bound.
 */
export function assertPromiseKept(f: ChaosFigures, kills: number): void {
  const seed = `seed ${f.seed}`;
  assert.equal(f.kills.length, kills);
  assert.deepEqual(f.lost, [], `${seed}: messages acknowledged with 250 never reached the sink`);
  assert.deepEqual(f.unexpected, [], `${seed}: the sink got messages nobody submitted`);
  assert.deepEqual(f.leftInQueue, [], `${seed}: messages still queued after the run`);
  assert.ok(f.duplicates <= f.duplicateBound, `${seed}: ${f.duplicates} duplicates, more than the ${f.duplicateBound} deliveries in flight at the kills`);
}
