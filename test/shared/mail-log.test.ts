// The mail log on standard error: lines are gathered into few write(2) calls, yet each reaches the
// terminal within moments while the process runs on, and none is lost when the process exits.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");

/**
 * Run `body` in a fresh node with `log` (a text-format mail log), `writes` (write(2) calls to fd 2
 * so far) and `largest` (the most octets one of them wrote) in scope.
 */
function runLogger(body: string, onStderr?: (text: string, stdin: NodeJS.WritableStream) => void): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const script = `
    import fs from "node:fs";
    let writes = 0;
    let largest = 0;
    const writeSync = fs.writeSync;
    fs.writeSync = (fd, data, ...rest) => {
      if (fd === 2) {
        writes++;
        largest = Math.max(largest, Buffer.byteLength(data));
      }
      return writeSync(fd, data, ...rest);
    };
    const { createMailLog } = await import("./shared/log.ts");
    const log = createMailLog({ format: "text", level: "info" }, "test");
    ${body}`;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  let stdout = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
    onStderr?.(stderr, child.stdin);
  });
  return new Promise((res) => child.once("close", (code) => res({ code, stderr, stdout })));
}

test("a line reaches standard error while the process runs on, without a flush", async () => {
  // The child waits for its standard input to close, which the test does only once the line has
  // arrived; after 10 s it gives up with exit code 1.
  const { code, stderr } = await runLogger(
    `log.info("to=<a@example.org>, status=sent");
     process.stdin.resume();
     process.stdin.on("end", () => process.exit(0));
     setTimeout(() => process.exit(1), 10_000);`,
    (text, stdin) => {
      if (text.includes("status=sent")) stdin.end();
    },
  );
  assert.equal(code, 0);
  assert.match(stderr, /homerelay\/test\[\d+\]: to=<a@example\.org>, status=sent\n/);
});

test("lines logged together go out in one write; a burst in writes of at most PIPE_BUF (4096 octets)", async () => {
  const { code, stdout, stderr } = await runLogger(
    `for (let i = 0; i < 20; i++) log.info("line " + i);
     await new Promise((r) => setTimeout(r, 200));
     const few = writes;
     for (let i = 0; i < 200; i++) log.info("burst " + i + " " + "x".repeat(80));
     await new Promise((r) => setTimeout(r, 200));
     console.log(JSON.stringify({ few, burst: writes - few, largest }));`,
  );
  assert.equal(code, 0);
  const { few, burst, largest } = JSON.parse(stdout) as { few: number; burst: number; largest: number };
  assert.equal(few, 1, "20 short lines in one turn of the event loop: one write");
  assert.ok(burst >= 7 && burst <= 10, `200 lines of ~130 octets: about 26 KB in 4 KiB writes, got ${burst}`);
  assert.ok(largest <= 4096 && largest > 3900, `the largest write has ${largest} octets`);
  assert.equal(stderr.match(/: line \d+\n/g)?.length, 20);
  assert.equal(stderr.match(/: burst \d+ x+\n/g)?.length, 200);
});

test("lines still gathered when the process exits are written, whichever way it exits", async () => {
  const exited = await runLogger(`log.warn("last words"); process.exit(3);`);
  assert.equal(exited.code, 3);
  assert.match(exited.stderr, /: warning: last words\n/);
  const ended = await runLogger(`log.error("the loop ran dry");`);
  assert.equal(ended.code, 0);
  assert.match(ended.stderr, /: error: the loop ran dry\n/);
});
