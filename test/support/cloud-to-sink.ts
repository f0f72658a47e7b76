/**
 * cloud-to-sink — the far end of the agent → cloud tests: the cloud's Node entry in this process,
 * relaying onward by SMTP to a recording sink, its store in a temporary directory.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { parseCloudConfig } from "../../cloud/config.js";
import { serveCloud, type CloudServer } from "../../cloud/serve.js";
import { silentLog } from "../../shared/log.js";
import { serveCloudOnNamedPort } from "./cloud-client.js";
import { RecordingSink } from "./recording-sink.js";

/** The cloud's `onward:` section for relaying to `sink`. */
export function onwardTo(sink: RecordingSink): Record<string, unknown> {
  return { transport: "smtp", host: "127.0.0.1", port: sink.port, tls: "none" };
}

/** A running cloud and the sink behind it. */
export interface CloudToSink {
  cloud: CloudServer;
  sink: RecordingSink;
  close(): Promise<void>;
}

/**
 * Start a sink and a cloud with `keys` relaying to it. The cloud serves `authority` on a port of
 * its own (a front stands before it), or by default its own address on a port its configuration
 * names. `storeIn` is where the store's temporary directory goes; `extra` adds configuration.
 */
export async function startCloudToSink(o: { keys: unknown[]; authority?: string; storeIn?: string; extra?: Record<string, unknown> }): Promise<CloudToSink> {
  const sink = await RecordingSink.start();
  const store = await mkdtemp(join(o.storeIn ?? tmpdir(), "hr-cloud-store-"));
  const config = (listen: string, authority: string) =>
    parseCloudConfig(stringify({ listen, authority: [authority], keys: o.keys, onward: onwardTo(sink), store, ...o.extra }), "cloud.yaml");
  const cloud = o.authority
    ? await serveCloud(config("127.0.0.1:0", o.authority), silentLog)
    : await serveCloudOnNamedPort((port) => config(`127.0.0.1:${port}`, `127.0.0.1:${port}`), silentLog);
  return {
    cloud,
    sink,
    async close() {
      await cloud.close();
      await sink.close();
      await rm(store, { recursive: true, force: true });
    },
  };
}
