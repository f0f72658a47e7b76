/**
 * lambda-bundle — how the cloud's Lambda entry (cloud/lambda.ts) becomes one ES module file: a
 * single set of esbuild settings that the stack's NodejsFunction runs with the local esbuild
 * (never Docker) and that the bundle test builds with the same esbuild, so what is measured is
 * what is deployed.
 */
import { join, resolve } from "node:path";
import { OutputFormat, type BundlingOptions } from "aws-cdk-lib/aws-lambda-nodejs";
import type { BuildOptions } from "esbuild";

/** The repository: the bundle's project root (package-lock.json, tsconfig.json, node_modules). */
export const REPOSITORY_ROOT = resolve(import.meta.dirname, "../..");

/** The Lambda entry module. */
export const LAMBDA_ENTRY = join(REPOSITORY_ROOT, "cloud/lambda.ts");

/** The file NodejsFunction writes for an ES module bundle. */
export const BUNDLE_FILE = "index.mjs";

/** The runtime's own AWS SDK v3 (nodejs22.x ships it): never bundled. */
const EXTERNAL = ["@aws-sdk/*"];

/** The Lambda runtime's Node.js, for the syntax esbuild may leave as it is. */
const TARGET = "node22";

/**
 * CommonJS dependencies (mailsplit, nodemailer, pino) call `require` for Node's built-in modules;
 * an ES module has none of its own, so the bundle makes one first.
 */
const REQUIRE_BANNER = "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);";

/** ES module builds of dependencies first: they tree-shake, CommonJS builds do not. */
const MAIN_FIELDS = ["module", "main"];

/**
 * NodejsFunction's bundling options. `charset=utf8` keeps non-ASCII text as UTF-8 rather than
 * `\uXXXX` escapes (about 290 KB less to download and parse on a cold start).
 */
export function functionBundling(): BundlingOptions {
  return {
    format: OutputFormat.ESM,
    target: TARGET,
    minify: true,
    sourceMap: false,
    externalModules: EXTERNAL,
    banner: REQUIRE_BANNER,
    mainFields: MAIN_FIELDS,
    esbuildArgs: { "--charset": "utf8" },
    forceDockerBundling: false,
  };
}

/** The same bundle as esbuild build options, written to `outfile`, with a metafile for its composition. */
export function esbuildOptions(outfile: string): BuildOptions & { metafile: true } {
  return {
    entryPoints: [LAMBDA_ENTRY],
    absWorkingDir: REPOSITORY_ROOT,
    bundle: true,
    platform: "node",
    format: "esm",
    target: TARGET,
    minify: true,
    charset: "utf8",
    external: EXTERNAL,
    banner: { js: REQUIRE_BANNER },
    mainFields: MAIN_FIELDS,
    outfile,
    metafile: true,
    logLevel: "warning",
  };
}
