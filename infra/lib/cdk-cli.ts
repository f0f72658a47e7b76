/**
 * cdk-cli — runs the CDK CLI of the workspace's own `aws-cdk` package (never one on the PATH) in
 * infra/, where cdk.json names the app, and tells the failures a person can fix from the others:
 * missing credentials, and an account and region not bootstrapped for the CDK.
 */
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { resolve } from "node:path";

/** infra/: cdk.json, cdk.out/ and cdk.context.json live here. */
export const INFRA_DIR = resolve(import.meta.dirname, "..");

/** The `cdk` entry point of the local aws-cdk package. */
const CDK_BIN = createRequire(import.meta.url).resolve("aws-cdk/bin/cdk");

/** How much of the CLI's standard error is kept for recognising a failure. */
const KEPT_STDERR = 256 * 1024;

/** What a CDK run ended with. */
export interface CdkRun {
  code: number;
  /** The end of the CLI's standard error, which it also wrote through to ours. */
  stderr: string;
}

/** What the app (bin/homerelay-cloud.ts) says when the CLI found no credentials for a deployment. */
export const NO_CREDENTIALS = "homerelay: no AWS credentials";

/** Why a CDK run failed, when it is one a person fixes outside the stack. */
export type CdkFailure = "no-credentials" | "not-bootstrapped" | "other";

/**
 * CDK's built-in CloudFormation validation takes longer than the rest of a synth together (6 s
 * here): `npm run synth` runs it, deploy and destroy (which synthesize up to four times) leave
 * the checking to CloudFormation.
 */
export const WITHOUT_VALIDATION = { CDK_VALIDATION: "false" };

/** Run `cdk ARGS…` with its output passed through; `env` is added to the environment. */
export function runCdk(args: string[], env: Record<string, string> = {}): Promise<CdkRun> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [CDK_BIN, ...args], { cwd: INFRA_DIR, env: { ...process.env, ...env }, stdio: ["inherit", "inherit", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      process.stderr.write(chunk);
      stderr = (stderr + chunk.toString("utf8")).slice(-KEPT_STDERR);
    });
    child.on("error", fail);
    child.on("close", (code, signal) => done({ code: code ?? (signal ? 128 : 1), stderr }));
  });
}

/** What stopped a failed run, from the messages of the CLI and of the app (bin/homerelay-cloud.ts). */
export function failureOf(run: CdkRun): CdkFailure {
  const text = run.stderr;
  if (text.includes(NO_CREDENTIALS) || /Unable to resolve AWS account|Could not load credentials|ExpiredToken|security token included in the request is (invalid|expired)|InvalidClientTokenId/.test(text)) {
    return "no-credentials";
  }
  if (/Has the environment been bootstrapped|cdk bootstrap/.test(text)) return "not-bootstrapped";
  return "other";
}
