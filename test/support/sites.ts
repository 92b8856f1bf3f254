/**
 * "Sites" for the fail-over scenarios: each a Linux network namespace with its own address, linked
 * to the root namespace (where the test process and the CLI run) by a veth pair. The root namespace
 * routes between the sites (ip_forward on), so a site reaches the other sites and the root through
 * its link, and cutting that link (`cut`) isolates the site while its processes keep running, as a
 * lost data centre would. Typical use, at the top level of a test file:
 *
 *   const skip = sitesUnavailable();                  // not root, no `ip`: skip with this message
 *   const sites = await createSites(["a", "b"]);      // removed by an `after` hook, or cleanup()
 *   const repl = await startReplicatedPostgres({ listenAddress: sites.get("a").address, netns: {…} });
 *   await sites.get("a").lockstep(["node", "start", "sequencer1", "--detach", …]);
 *   await sites.get("a").cut(); … await sites.get("a").heal();
 *
 * Names carry this process's pid and a random tag, so test files can run in parallel; a run that died
 * without cleaning up is cleaned by the next one (its pid is gone). `forward` stands for the service
 * address (DNS name, load balancer) that clients use for a node that moves between sites.
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { after } from "node:test";
import { promisify } from "node:util";
import { LOCKSTEP_BIN } from "../../src/cli/self-process.ts";
import { isAlive } from "../../src/storage/server-process.ts";
import type { CliResult } from "./cli.ts";

const run = promisify(execFile);

/** Why these tests cannot run here (the message to skip them with), or undefined when they can. */
export function sitesUnavailable(): string | undefined {
  if (process.platform !== "linux") return "sites need Linux network namespaces";
  if (process.getuid?.() !== 0) return "sites need root for `ip netns` (CI runs these tests as root)";
  try {
    execFileSync("ip", ["-V"], { stdio: "ignore" });
  } catch {
    return "sites need the `ip` command (iproute2)";
  }
  return undefined;
}

export interface RunResult extends CliResult {}

export interface RunOptions {
  /** The whole environment of the command; process.env by default. */
  env?: NodeJS.ProcessEnv;
  /** Kills the command (SIGKILL) and rejects after this long; default 120 s. */
  timeoutMs?: number;
}

export interface Site {
  /** As given to createSites, e.g. "a". */
  readonly name: string;
  readonly netns: string;
  /** The site's address (inside its namespace): what its servers bind and what others dial. */
  readonly address: string;
  /** The root namespace's end of the link. */
  readonly gateway: string;
  /** Runs a command inside the site (`ip netns exec`), collecting its output; never rejects on exit codes. */
  run(file: string, args: string[], options?: RunOptions): Promise<RunResult>;
  /** `lockstep ARGS` inside the site, with quiet logs (LOCKSTEP_LOG_LEVEL=warn, unless `env` says otherwise). */
  lockstep(args: string[], options?: RunOptions): Promise<RunResult>;
  /** Link down: nothing goes in or out of the site; its processes keep running. */
  cut(): Promise<void>;
  /** Link up again: routes come back by themselves. */
  heal(): Promise<void>;
  readonly isCut: boolean;
}

/** A TCP forwarder in the root namespace: the one address clients use for a node that moves between sites. */
export interface Forwarder {
  readonly host: string;
  readonly port: number;
  /** `host:port`, for a node's `address`. */
  readonly address: string;
  /** Where connections go now. */
  readonly target: { host: string; port: number };
  /** Sends new connections to `target` and drops the open ones, as a load balancer marking a backend down. */
  point(target: { host: string; port: number }): void;
}

export interface Sites {
  readonly sites: readonly Site[];
  get(name: string): Site;
  /** An address of the root namespace that every site routes to (on its `lo`), for forwarders. */
  readonly serviceAddress: string;
  /** Listens on serviceAddress:port and forwards to `target`. */
  forward(port: number, target: { host: string; port: number }): Promise<Forwarder>;
  /**
   * Cuts the path between two sites only (blackhole routes in both): each still reaches the root
   * namespace, e.g. the replication link fails while clients still reach the primary.
   */
  partition(x: string, y: string): Promise<void>;
  /** Removes what partition(x, y) added. */
  rejoin(x: string, y: string): Promise<void>;
  /** Closes forwarders, kills what still runs in the sites, removes links, namespaces, addresses. Idempotent. */
  cleanup(): Promise<void>;
}

const NETNS_PATTERN = /^lockstep-(\d+)-([0-9a-f]{6})-/;

function ipSync(args: string[]): string {
  try {
    return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return "";
  }
}

async function ip(args: string[]): Promise<void> {
  try {
    await run("ip", args);
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? "";
    throw new Error(`ip ${args.join(" ")} failed: ${stderr.trim() || (error as Error).message}`);
  }
}

/** Everything a run left behind, found by its tag; synchronous, so the exit handler can use it. */
function removeRun(tag: string, namespaces: string[]): void {
  for (const ns of namespaces) {
    for (const pid of ipSync(["netns", "pids", ns]).split("\n").filter(Boolean)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        // gone already
      }
    }
  }
  // Deleting one end of a veth deletes both; the namespace alone would not while a process holds it.
  for (const line of ipSync(["-o", "link", "show"]).split("\n")) {
    const name = /^\d+: ([^@:]+)/.exec(line)?.[1];
    if (name?.startsWith(`lsr${tag}`)) ipSync(["link", "del", name]);
  }
  for (const ns of namespaces) ipSync(["netns", "del", ns]);
  for (const line of ipSync(["-o", "-4", "addr", "show", "dev", "lo"]).split("\n")) {
    const match = / inet (\S+) .*lo:ls([0-9a-f]{6})/.exec(line);
    if (match?.[2] === tag) ipSync(["addr", "del", match[1] as string, "dev", "lo"]);
  }
}

/** Namespaces of runs whose process is gone (killed before its cleanup ran). */
function removeStaleRuns(): void {
  const byTag = new Map<string, string[]>();
  for (const line of ipSync(["netns", "list"]).split("\n")) {
    const ns = line.split(" ")[0] ?? "";
    const match = NETNS_PATTERN.exec(ns);
    if (!match || isAlive(Number(match[1]))) continue;
    byTag.set(match[2] as string, [...(byTag.get(match[2] as string) ?? []), ns]);
  }
  for (const [tag, namespaces] of byTag) removeRun(tag, namespaces);
}

/** A 10.x.y.0/24 no address or route of the root namespace uses yet (parallel runs pick their own). */
function freeSubnet(): string {
  const used = ipSync(["-4", "-o", "addr"]) + ipSync(["-4", "route", "show", "table", "all"]);
  for (let i = 0; i < 50; i++) {
    const [a, b] = randomBytes(2);
    const prefix = `10.${64 + ((a as number) % 64)}.${b}.`;
    if (!used.includes(prefix)) return prefix;
  }
  throw new Error("no free 10.x.y.0/24 for the sites");
}

function spawnCollect(file: string, args: string[], options: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${file} ${args.join(" ")} timed out\n${stderr}`));
    }, options.timeoutMs ?? 120_000);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, json: <T>() => JSON.parse(stdout) as T });
    });
  });
}

class NamespaceSite implements Site {
  isCut = false;

  constructor(
    readonly name: string,
    readonly netns: string,
    readonly address: string,
    readonly gateway: string,
    private readonly link: string,
  ) {}

  run(file: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
    return spawnCollect("ip", ["netns", "exec", this.netns, file, ...args], options);
  }

  lockstep(args: string[], options: RunOptions = {}): Promise<RunResult> {
    const env = { ...process.env, LOCKSTEP_LOG_LEVEL: "warn", ...options.env };
    return this.run(process.execPath, [LOCKSTEP_BIN, ...args], { ...options, env });
  }

  async cut(): Promise<void> {
    await ip(["link", "set", this.link, "down"]);
    this.isCut = true;
  }

  async heal(): Promise<void> {
    await ip(["link", "set", this.link, "up"]);
    this.isCut = false;
  }
}

class TcpForwarder implements Forwarder {
  private readonly open = new Set<Socket>();

  constructor(
    readonly server: Server,
    readonly host: string,
    readonly port: number,
    public target: { host: string; port: number },
  ) {
    server.on("connection", (client) => this.relay(client));
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  point(target: { host: string; port: number }): void {
    this.target = target;
    for (const socket of this.open) socket.destroy();
    this.open.clear();
  }

  private relay(client: Socket): void {
    const upstream = tcpConnect(this.target.port, this.target.host);
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.open.delete(client);
      this.open.delete(upstream);
    };
    for (const socket of [client, upstream]) {
      this.open.add(socket);
      socket.on("error", end);
      socket.on("close", end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  close(): Promise<void> {
    this.point(this.target);
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * Creates one namespace per name, site i at 10.x.y.(4i+2)/30 behind 10.x.y.(4i+1) in the root
 * namespace, and a service address 10.x.y.254 on the root's `lo`. Throws when `ip` refuses
 * (check sitesUnavailable() first); whatever was made by then is removed.
 */
export async function createSites(names: string[], options: { autoCleanup?: boolean } = {}): Promise<Sites> {
  removeStaleRuns();
  const tag = randomBytes(3).toString("hex");
  const prefix = freeSubnet();
  const serviceAddress = `${prefix}254`;
  const sites: NamespaceSite[] = names.map(
    (name, i) =>
      new NamespaceSite(
        name,
        `lockstep-${process.pid}-${tag}-${name}`,
        `${prefix}${4 * i + 2}`,
        `${prefix}${4 * i + 1}`,
        `lsr${tag}${i}`,
      ),
  );
  const forwarders: TcpForwarder[] = [];
  let cleaned = false;
  const onExit = () =>
    removeRun(
      tag,
      sites.map((s) => s.netns),
    );
  process.once("exit", onExit);
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    process.off("exit", onExit);
    await Promise.all(forwarders.map((f) => f.close()));
    removeRun(
      tag,
      sites.map((s) => s.netns),
    );
  };

  try {
    // The root namespace routes between the sites.
    writeFileSync("/proc/sys/net/ipv4/ip_forward", "1\n");
    await ip(["addr", "add", `${serviceAddress}/32`, "dev", "lo", "label", `lo:ls${tag}`]);
    for (const [i, site] of sites.entries()) {
      const inside = `lss${tag}${i}`;
      await ip(["netns", "add", site.netns]);
      await ip(["link", "add", `lsr${tag}${i}`, "type", "veth", "peer", "name", inside, "netns", site.netns]);
      await ip(["addr", "add", `${site.gateway}/30`, "dev", `lsr${tag}${i}`]);
      await ip(["link", "set", `lsr${tag}${i}`, "up"]);
      await ip(["-n", site.netns, "link", "set", "lo", "up"]);
      await ip(["-n", site.netns, "addr", "add", `${site.address}/30`, "dev", inside]);
      await ip(["-n", site.netns, "link", "set", inside, "up"]);
      await ip(["-n", site.netns, "route", "add", "default", "via", site.gateway]);
      // Cut off, the site's own processes get "network unreachable" at once, as a host whose uplink
      // lost carrier does, rather than packets queued into a dead link: their retries stay short.
      await ip([
        "netns",
        "exec",
        site.netns,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/conf/all/ignore_routes_with_linkdown",
      ]);
    }
  } catch (error) {
    await cleanup();
    throw error;
  }
  if (options.autoCleanup !== false) after(cleanup);
  const get = (name: string) => {
    const site = sites.find((s) => s.name === name);
    if (!site) throw new Error(`no site ${name}`);
    return site;
  };

  return {
    sites,
    serviceAddress,
    get,
    async partition(x, y) {
      const [from, to] = [get(x), get(y)];
      await ip(["-n", from.netns, "route", "add", "blackhole", `${to.address}/32`]);
      await ip(["-n", to.netns, "route", "add", "blackhole", `${from.address}/32`]);
    },
    async rejoin(x, y) {
      const [from, to] = [get(x), get(y)];
      await ip(["-n", from.netns, "route", "del", "blackhole", `${to.address}/32`]);
      await ip(["-n", to.netns, "route", "del", "blackhole", `${from.address}/32`]);
    },
    async forward(port, target) {
      const server = createServer();
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, serviceAddress, () => resolve());
      });
      const forwarder = new TcpForwarder(server, serviceAddress, port, target);
      forwarders.push(forwarder);
      return forwarder;
    },
    cleanup,
  };
}
