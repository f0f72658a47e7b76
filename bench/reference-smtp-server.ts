/**
 * reference-smtp-server — the benchmark's yardstick: a bare smtp-server that writes each message
 * to its own file and fsyncs it before answering 250, without the 100 ms greeting pause (the
 * same instrument as ../shared/bench's "smtp-server, fsync, no greeting pause").
 *
 *   node --import tsx bench/reference-smtp-server.ts DIR   (prints "listening PORT")
 */
import { open } from "node:fs/promises";
import { join } from "node:path";
import { SMTPServer } from "smtp-server";
import { HookedSMTPServer } from "../agent/smtpd/smtp-server-hooks.js";

const dir = process.argv[2]!;
let n = 0;
const server: SMTPServer = new HookedSMTPServer(
  {
    logger: false,
    disabledCommands: ["AUTH", "STARTTLS"],
    authOptional: true,
    disableReverseLookup: true,
    onData(stream, _session, cb) {
      void (async () => {
        const fh = await open(join(dir, `${process.pid}.${n++}`), "wx");
        for await (const chunk of stream) await fh.write(chunk as Buffer);
        await fh.sync();
        await fh.close();
      })().then(() => cb(null, "Ok"), (err: Error) => cb(err));
    },
  },
  { greetingDelay: 0, authWithoutTls: () => true, onCommand: () => null },
);
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`listening ${(server.server.address() as { port: number }).port}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
