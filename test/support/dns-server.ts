/**
 * dns-server — a loopback authoritative DNS server (dns2, UDP and TCP on one port) serving a zone
 * given as a plain object, so resolver tests see real NXDOMAIN, NODATA, SERVFAIL and timeouts.
 */
import dns2 from "dns2";
import type { AddressInfo, Socket } from "node:net";

const { Packet } = dns2;

/** The records of one name; absent types answer NODATA. */
export interface DnsRecords {
  MX?: { exchange: string; preference: number }[];
  A?: string[];
  AAAA?: string[];
  /** One string per TXT record, or the character-strings of each record. */
  TXT?: string[][] | string[];
  PTR?: string[];
  CNAME?: string;
  /** Answer every question for this name with SERVFAIL. */
  servfail?: boolean;
  /** Never answer questions for this name, so the client times out. */
  drop?: boolean;
}

/** Lower-case owner names (no trailing dot) to their records; other names answer NXDOMAIN. */
export type DnsZone = Record<string, DnsRecords>;

/** A question the server received, with its type as a mnemonic ("MX", "A", …). */
export interface DnsQuery {
  name: string;
  type: string;
  transport: "udp" | "tcp";
}

/** A running loopback DNS server. */
export interface DnsServer {
  port: number;
  address: string;
  /** `127.0.0.1:port`, as `MailResolver` takes it. */
  server: string;
  /** Every question received so far, in order. */
  queries: DnsQuery[];
  /** Replace the zone; later questions are answered from the new one. */
  set(zone: DnsZone): void;
  /** Stop listening and drop open TCP connections; rejects if a question could not be answered. */
  close(): Promise<void>;
}

type Resource = dns2.Packet.Resource;
type RecordType = "A" | "AAAA" | "MX" | "TXT" | "PTR" | "CNAME";

const RCODE_SERVFAIL = 2; // RFC 1035 4.1.1
const RCODE_NXDOMAIN = 3;
const TTL = 0; // nothing is cached, so set() takes effect at once
const MAX_CNAME_CHAIN = 8;
const BIND_ATTEMPTS = 10;
const TYPE_NAMES = new Map<number, string>(Object.entries(Packet.TYPE).map(([name, code]) => [code, name]));

/** Start a server on 127.0.0.1, UDP and TCP on the same free port. */
export async function startDnsServer(zone: DnsZone): Promise<DnsServer> {
  let current = normalizeZone(zone);
  const queries: DnsQuery[] = [];
  const failures: unknown[] = [];
  const handle = (transport: DnsQuery["transport"]): dns2.DnsHandler => (request, send) => {
    for (const question of request.questions) {
      queries.push({ name: question.name, type: TYPE_NAMES.get(question.type) ?? String(question.type), transport });
    }
    const response = answer(current, request);
    // UDP sends return a promise, TCP writes return nothing.
    if (response) Promise.resolve(send(response)).catch((err: unknown) => failures.push(err));
  };

  const { udp, tcp, port } = await bindPair(handle);
  const connections = new Set<Socket>();
  tcp.on("connection", (socket: Socket) => {
    connections.add(socket);
    socket.on("close", () => connections.delete(socket));
  });
  for (const emitter of [udp, tcp]) {
    emitter.on("requestError", (err: unknown) => failures.push(err));
    emitter.on("error", (err: unknown) => failures.push(err));
  }

  return {
    port,
    address: "127.0.0.1",
    server: `127.0.0.1:${port}`,
    queries,
    set(next) {
      current = normalizeZone(next);
    },
    async close() {
      const closed = Promise.all([
        new Promise<void>((resolve) => udp.close(() => resolve())),
        new Promise<void>((resolve) => tcp.close(() => resolve())),
      ]);
      for (const socket of connections) socket.destroy();
      await closed;
      if (failures.length > 0) throw new AggregateError(failures, "the loopback DNS server failed to answer");
    },
  };
}

/** Bind UDP on a free port and TCP on the same port, retrying when TCP finds it taken. */
async function bindPair(handle: (transport: DnsQuery["transport"]) => dns2.DnsHandler): Promise<{ udp: dns2.UDPServer; tcp: dns2.TCPServer; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const udp = dns2.createUDPServer({ type: "udp4" });
    udp.on("request", handle("udp"));
    await new Promise<void>((resolve, reject) => {
      udp.once("error", reject);
      udp.bind(0, "127.0.0.1", () => {
        udp.off("error", reject);
        resolve();
      });
    });
    const port = udp.address().port;
    const tcp = dns2.createTCPServer(handle("tcp"));
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen(port, "127.0.0.1", () => {
          tcp.off("error", reject);
          resolve();
        });
      });
      return { udp, tcp, port: (tcp.address() as AddressInfo).port };
    } catch (err) {
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE" || attempt === BIND_ATTEMPTS) throw err;
    }
  }
}

function normalizeZone(zone: DnsZone): Map<string, DnsRecords> {
  return new Map(Object.entries(zone).map(([name, records]) => [canonical(name), records]));
}

function canonical(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}

/** The response to a request, or null when the name is configured to drop it. */
function answer(zone: Map<string, DnsRecords>, request: dns2.Packet): dns2.Packet | null {
  const response = Packet.createResponseFromRequest(request);
  response.header.aa = 1;
  const question = request.questions[0];
  if (!question) return response;
  const records = zone.get(canonical(question.name));
  if (!records) {
    response.header.rcode = RCODE_NXDOMAIN;
    return response;
  }
  if (records.drop) return null;
  if (records.servfail) {
    response.header.rcode = RCODE_SERVFAIL;
    return response;
  }
  const type = TYPE_NAMES.get(question.type);
  let owner = question.name;
  let current: DnsRecords | undefined = records;
  // Follow CNAMEs inside the zone, as an authoritative server does for in-zone targets.
  for (let hops = 0; current && hops < MAX_CNAME_CHAIN; hops++) {
    if (current.CNAME !== undefined && type !== "CNAME") {
      response.answers.push(resource(owner, "CNAME", { domain: current.CNAME }));
      owner = current.CNAME;
      current = zone.get(canonical(owner));
      continue;
    }
    if (isRecordType(type)) response.answers.push(...resources(owner, type, current));
    break;
  }
  return response;
}

function isRecordType(type: string | undefined): type is RecordType {
  return type === "A" || type === "AAAA" || type === "MX" || type === "TXT" || type === "PTR" || type === "CNAME";
}

function resources(owner: string, type: RecordType, records: DnsRecords): Resource[] {
  switch (type) {
    case "A":
    case "AAAA":
      return (records[type] ?? []).map((address) => resource(owner, type, { address }));
    case "MX":
      return (records.MX ?? []).map(({ exchange, preference }) => resource(owner, "MX", { exchange, priority: preference }));
    case "TXT":
      return (records.TXT ?? []).map((txt) => resource(owner, "TXT", { data: characterStrings(txt) as unknown as string[] }));
    case "PTR":
      return (records.PTR ?? []).map((domain) => resource(owner, "PTR", { domain }));
    case "CNAME":
      return records.CNAME === undefined ? [] : [resource(owner, "CNAME", { domain: records.CNAME })];
  }
}

function resource(name: string, type: RecordType, data: Partial<Resource>): Resource {
  return { name, type: Packet.TYPE[type], class: Packet.CLASS.IN, ttl: TTL, ...data } as Resource;
}

/**
 * A TXT record's character-strings as octets: a plain string is cut into 255-octet pieces
 * (RFC 1035 3.3); strings given one by one must each fit.
 */
function characterStrings(txt: string | string[]): Buffer[] {
  if (Array.isArray(txt)) {
    return txt.map((text) => {
      const octets = Buffer.from(text, "utf8");
      if (octets.length > 255) throw new RangeError(`TXT character-string longer than 255 octets: ${text.slice(0, 40)}…`);
      return octets;
    });
  }
  const octets = Buffer.from(txt, "utf8");
  const pieces: Buffer[] = [];
  for (let offset = 0; offset < octets.length; offset += 255) pieces.push(octets.subarray(offset, offset + 255));
  return pieces.length > 0 ? pieces : [Buffer.alloc(0)];
}
