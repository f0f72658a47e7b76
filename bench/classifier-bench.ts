/**
 * classifier-bench — the rejection classifier's figures for `npm run bench`: precision and recall
 * of `reroute` on the labelled real replies in test/fixtures/, and replies classified per second.
 */
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { classifyReply, scoreReroute, type LabelledReply } from "../agent/reroute/reply-classifier.js";

const FIXTURE = join(resolve(import.meta.dirname, ".."), "test/fixtures/smtp-rejections.jsonl");

/** The classifier's rows for the bench table, and its JSON results. */
export async function benchClassifier(): Promise<{ table: string[][]; results: Record<string, unknown> }> {
  const rows = (await readFile(FIXTURE, "utf8"))
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as LabelledReply);
  const score = scoreReroute(rows);
  const started = performance.now();
  let n = 0;
  while (performance.now() - started < 1000) for (const row of rows) (classifyReply(row.reply), n++);
  const perSecond = n / ((performance.now() - started) / 1000);
  return {
    table: [
      [`reroute precision on ${rows.length} labelled real replies (goal ≥ 0.95 on unseen ones)`, score.precision.toFixed(3)],
      ["reroute recall", score.recall.toFixed(3)],
      ["replies classified per second, in process", perSecond.toFixed(0)],
    ],
    results: { ...score, rows: rows.length, perSecond },
  };
}
