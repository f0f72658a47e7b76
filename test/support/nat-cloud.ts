/**
 * nat-cloud — the real cloud app (cloud/app.ts, the file store, signatures checked) on loopback,
 * seeing its caller at an address the test sets: what a cloud on the internet sees of a home line
 * behind its router's NAT. `GET /v1/whoami` then answers a public address, and changing `address`
 * plays the ISP handing the line a new one. `clockOffsetMs` sets the cloud's clock off from ours.
 */
import { mkdtemp, rm } from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import { stringify } from "yaml";
import { createCloudApp, type CloudApp } from "../../cloud/app.js";
import { parseCloudConfig } from "../../cloud/config.js";
import { onwardFromConfig } from "../../cloud/serve.js";
import type { OnwardTransport } from "../../cloud/onward/onward.js";
import { FileStore } from "../../cloud/store/file-store.js";
import { silentLog } from "../../shared/log.js";
import { nodeCryptoEd25519 } from "../../shared/protocol/ed25519.js";
import type { TestKey } from "./cloud-client.js";

/** The cloud, and the address it sees its callers at. */
export class NatCloud {
  /** How far the cloud's clock is ahead of this machine's (negative: behind), for its signature checks and its Date. */
  clockOffsetMs = 0;

  private constructor(
    /** The caller's address as the cloud sees it; change it to play a new address on the home line. */
    public address: string,
    private readonly server: Server,
    private readonly store: FileStore,
    private readonly onward: OnwardTransport,
    private readonly dir: string,
  ) {}

  /** Start the cloud, listing `keys` (each may send as *@home.example.net), with `maxMessageSize`. */
  static async start(address: string, keys: TestKey[], maxMessageSize = 4_400_000): Promise<NatCloud> {
    const dir = await mkdtemp(join(tmpdir(), "hr-nat-cloud-"));
    let app: CloudApp | null = null;
    let cloud: NatCloud | null = null;
    // The configuration must name the port (its authority), so the app is made once the port is known.
    const server = serve({ fetch: (request) => cloud!.answer(app!, request), hostname: "127.0.0.1", port: 0 }) as Server;
    const port = await new Promise<number>((resolve, reject) => {
      server.once("listening", () => resolve((server.address() as AddressInfo).port));
      server.once("error", reject);
    });
    const config = parseCloudConfig(
      stringify({
        listen: `127.0.0.1:${port}`,
        authority: [`127.0.0.1:${port}`],
        keys: keys.map((k) => ({ id: k.id, publicKey: k.publicKey, senders: ["*@home.example.net"] })),
        // Never used: these tests send no mail through the cloud.
        onward: { transport: "smtp", host: "127.0.0.1", port: 9, tls: "none" },
        store: join(dir, "store"),
        maxMessageSize,
      }),
      "nat-cloud.yaml",
    );
    const store = await FileStore.open(config.store as string);
    const onward = await onwardFromConfig(config);
    const made = new NatCloud(address, server, store, onward, dir);
    const now = () => Date.now() + made.clockOffsetMs;
    app = createCloudApp({ config, store, onward, ed25519: await nodeCryptoEd25519(), log: silentLog, clientAddress: () => made.address, now });
    cloud = made;
    return made;
  }

  /** The app's answer, dated by the cloud's clock. */
  private async answer(app: CloudApp, request: Request): Promise<Response> {
    const response = await app.fetch(request);
    if (this.clockOffsetMs === 0) return response;
    const headers = new Headers(response.headers);
    headers.set("date", new Date(Date.now() + this.clockOffsetMs).toUTCString());
    return new Response(response.body, { status: response.status, headers });
  }

  /** `http://127.0.0.1:port`, the agent's `cloud.url`. */
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.onward.close?.();
    await this.store.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}
