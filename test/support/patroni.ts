/**
 * A real Patroni cluster for tests: one etcd (v2 API, as Debian's Patroni 3.0 speaks it) and Patroni
 * members on loopback ports, each running its own PostgreSQL 15 as the `postgres` OS user when the
 * tests run as root, in synchronous mode (a commit waits for the sync standby, and Patroni promotes
 * only that standby: no acknowledged commit is lost in a fail-over). Measured on this kind of machine
 * (docs/operations.md, "Patroni"): about 30 s until leader and sync standby, about 10 s from a killed
 * leader to the promotion (ttl 10, loop_wait 2).
 *
 *   const cluster = await startPatroniCluster();          // at the top level of a test file
 *   await cluster.createDatabase("participant1");
 *   const url = cluster.url("participant1");              // postgresql://postgres@h:p1,h:p2/…?target_session_attrs=read-write
 *   const old = await cluster.killLeader();               // SIGKILL of its Patroni and postmaster
 *   const next = await cluster.waitForNewLeader(old);
 *
 * Everything is killed and removed by an `after` hook, by cleanup(), or on process exit, also when
 * the start fails half-way. Needs the Debian packages `patroni` and `etcd-server` (.ci/run installs them).
 */

import { type ChildProcess, spawn } from "node:child_process";
import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import pg from "pg";
import { stringify } from "yaml";
import { freePort, LOOPBACK } from "../../src/common/loopback.ts";
import { findServerBinaries } from "../../src/storage/postgres-binaries.ts";
import { isAlive, postgresOsUser, type RunAs } from "../../src/storage/server-process.ts";
import { logTail } from "./log-tail.ts";
import { waitFor } from "./wait.ts";

const SCOPE = "lockstep-test";
const SUPERUSER = "postgres";

export interface PatroniMember {
  readonly name: string;
  readonly pgPort: number;
  readonly restPort: number;
  readonly dataDir: string;
  readonly logFile: string;
  /** A single-server URL to this member's PostgreSQL. */
  url(database: string): string;
}

/** One member as Patroni's GET /cluster reports it. */
export interface ClusterMemberState {
  name: string;
  role: string;
  state: string;
  host: string;
  port: number;
  lag?: number | string;
}

export interface PatroniCluster {
  readonly members: readonly PatroniMember[];
  /** The libpq multi-host URL of a database on the cluster, following the leader (read-write). */
  url(database: string): string;
  /** Patroni's view of the cluster (GET /cluster on a live member's REST API). */
  state(): Promise<ClusterMemberState[]>;
  /** The current leader (Patroni's view). */
  leader(): Promise<PatroniMember>;
  createDatabase(name: string): Promise<void>;
  /** SIGKILL of the leader's Patroni and its postmaster (a machine gone); returns that member. */
  killLeader(): Promise<PatroniMember>;
  /** Waits until another member than `old` leads and accepts writes; returns it. */
  waitForNewLeader(old: PatroniMember, timeoutMs?: number): Promise<PatroniMember>;
  /** Kills everything and removes the directories. Idempotent. */
  cleanup(): Promise<void>;
}

export interface PatroniClusterOptions {
  /** How many Patroni members (PostgreSQL servers); default 2. */
  members?: number;
  /** false: no `after` hook; call cleanup() yourself. */
  autoCleanup?: boolean;
}

class Member implements PatroniMember {
  process: ChildProcess | undefined;

  constructor(
    readonly name: string,
    readonly pgPort: number,
    readonly restPort: number,
    readonly dir: string,
  ) {}

  get dataDir(): string {
    return join(this.dir, "data");
  }

  get logFile(): string {
    return join(this.dir, "patroni.log");
  }

  url(database: string): string {
    return `postgresql://${SUPERUSER}@${LOOPBACK}:${this.pgPort}/${encodeURIComponent(database)}`;
  }

  postmasterPid(): number | undefined {
    try {
      const pid = Number.parseInt(readFileSync(join(this.dataDir, "postmaster.pid"), "utf8"), 10);
      return pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Patroni and its PostgreSQL, at once (synchronous: also usable from a process exit handler). */
  kill(signal: NodeJS.Signals): void {
    for (const pid of [this.process?.pid, this.postmasterPid()]) {
      if (pid === undefined || !isAlive(pid)) continue;
      try {
        process.kill(pid, signal);
      } catch {
        // gone already
      }
    }
  }

  logTail(lines = 30): string {
    return logTail(this.logFile, lines);
  }
}

function spawnLogged(
  command: string,
  args: string[],
  logFile: string,
  cwd: string,
  runAs: RunAs | undefined,
): ChildProcess {
  const log = openSync(logFile, "a");
  if (runAs) chownSync(logFile, runAs.uid, runAs.gid);
  const child = spawn(command, args, {
    cwd,
    env: { ...process.env, LC_ALL: "C.UTF-8", LANG: "C.UTF-8" },
    stdio: ["ignore", log, log],
    ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
  });
  child.on("error", () => {}); // a missing binary shows as the start timing out with the log's text
  return child;
}

async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return (await response.json()) as T;
}

async function sql<R extends object>(url: string, text: string): Promise<R[]> {
  const client = new pg.Client({
    connectionString: url,
    application_name: "test-patroni",
    connectionTimeoutMillis: 2000,
  });
  client.on("error", () => {});
  await client.connect();
  try {
    return (await client.query(text)).rows as R[];
  } finally {
    await client.end().catch(() => {});
  }
}

/** Starts etcd and the Patroni members; resolves once Patroni reports a leader and a sync standby. */
export async function startPatroniCluster(options: PatroniClusterOptions = {}): Promise<PatroniCluster> {
  for (const tool of ["/usr/bin/patroni", "/usr/bin/etcd"]) {
    if (!existsSync(tool)) throw new Error(`Patroni tests need ${tool}: apt-get install patroni etcd-server`);
  }
  const binDir = findServerBinaries().binDir;
  const runAs = process.getuid?.() === 0 ? postgresOsUser() : undefined;
  if (process.getuid?.() === 0 && !runAs) throw new Error("running as root needs an OS user `postgres`");
  const base = mkdtempSync(join(tmpdir(), "lockstep-patroni-"));
  if (runAs) chownSync(base, runAs.uid, runAs.gid);

  const members: Member[] = [];
  for (let i = 1; i <= (options.members ?? 2); i++) {
    const dir = join(base, `pg${i}`);
    mkdirSync(dir, { mode: 0o700 });
    if (runAs) chownSync(dir, runAs.uid, runAs.gid);
    members.push(new Member(`pg${i}`, await freePort(), await freePort(), dir));
  }
  const etcdClientPort = await freePort();
  const etcdPeerPort = await freePort();
  let etcd: ChildProcess | undefined;

  let cleaned = false;
  const killAll = () => {
    for (const member of members) member.kill("SIGKILL");
    if (etcd?.pid !== undefined && isAlive(etcd.pid)) etcd.kill("SIGKILL");
  };
  const onExit = () => {
    if (cleaned) return;
    killAll();
    rmSync(base, { recursive: true, force: true });
  };
  process.once("exit", onExit);
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    process.off("exit", onExit);
    killAll();
    // Removing a data dir under a live process would race with its writes: wait until all are gone.
    const pids = [...members.flatMap((m) => [m.process?.pid, m.postmasterPid()]), etcd?.pid];
    await waitFor(
      "the Patroni cluster's processes to exit",
      () => (pids.every((pid) => pid === undefined || !isAlive(pid)) ? true : undefined),
      10_000,
      100,
    ).catch(() => {});
    rmSync(base, { recursive: true, force: true });
  };
  if (options.autoCleanup !== false) after(cleanup);

  const byName = (name: string) => members.find((m) => m.name === name);
  const live = () => members.filter((m) => m.process?.exitCode === null && m.process.signalCode === null);
  const state = async (): Promise<ClusterMemberState[]> => {
    let last: unknown;
    for (const member of live()) {
      try {
        return (
          await getJson<{ members: ClusterMemberState[] }>(`http://${LOOPBACK}:${member.restPort}/cluster`)
        ).members;
      } catch (error) {
        last = error;
      }
    }
    throw new Error(`no Patroni REST API answers: ${String(last)}`);
  };
  const leaderNow = async (): Promise<Member | undefined> => {
    const found = (await state()).find((m) => m.role === "leader" && m.state === "running");
    return found && byName(found.name);
  };
  const writable = async (member: Member) => {
    const [row] = await sql<{ recovery: boolean }>(
      member.url("postgres"),
      "SELECT pg_is_in_recovery() AS recovery",
    );
    return row?.recovery === false;
  };

  try {
    etcd = spawnLogged(
      "/usr/bin/etcd",
      [
        "--name=etcd1",
        `--data-dir=${join(base, "etcd")}`,
        `--listen-client-urls=http://${LOOPBACK}:${etcdClientPort}`,
        `--advertise-client-urls=http://${LOOPBACK}:${etcdClientPort}`,
        `--listen-peer-urls=http://${LOOPBACK}:${etcdPeerPort}`,
        `--initial-advertise-peer-urls=http://${LOOPBACK}:${etcdPeerPort}`,
        `--initial-cluster=etcd1=http://${LOOPBACK}:${etcdPeerPort}`,
        "--initial-cluster-state=new",
        // Debian's Patroni 3.0 talks to etcd through the v2 API (the `etcd:` section).
        "--enable-v2=true",
      ],
      join(base, "etcd.log"),
      base,
      undefined,
    );
    await waitFor(
      "etcd to answer",
      async () =>
        (await getJson<{ health: string }>(`http://${LOOPBACK}:${etcdClientPort}/health`)).health === "true"
          ? true
          : undefined,
      30_000,
    );

    for (const member of members) {
      const config = {
        scope: SCOPE,
        name: member.name,
        restapi: {
          listen: `${LOOPBACK}:${member.restPort}`,
          connect_address: `${LOOPBACK}:${member.restPort}`,
        },
        etcd: { host: `${LOOPBACK}:${etcdClientPort}` },
        bootstrap: {
          dcs: {
            // A fail-over within seconds; Patroni requires loop_wait + 2 × retry_timeout ≤ ttl.
            ttl: 10,
            loop_wait: 2,
            retry_timeout: 4,
            maximum_lag_on_failover: 1048576,
            synchronous_mode: true,
            postgresql: {
              use_pg_rewind: false,
              parameters: {
                wal_level: "replica",
                hot_standby: "on",
                max_wal_senders: 10,
                max_replication_slots: 10,
                wal_keep_size: "64MB",
                // Test speed; no machine crash is tested (the killed leader's disk stays as it was).
                fsync: "off",
              },
            },
          },
          initdb: [{ encoding: "UTF8" }, "no-locale"],
        },
        postgresql: {
          listen: `${LOOPBACK}:${member.pgPort}`,
          connect_address: `${LOOPBACK}:${member.pgPort}`,
          data_dir: member.dataDir,
          bin_dir: binDir,
          pgpass: join(member.dir, "pgpass"),
          authentication: {
            superuser: { username: SUPERUSER },
            replication: { username: SUPERUSER },
          },
          // Trust on loopback, test clusters only; the standby needs the replication line.
          pg_hba: [
            `local all all trust`,
            `host all all ${LOOPBACK}/32 trust`,
            `host replication all ${LOOPBACK}/32 trust`,
          ],
          parameters: { unix_socket_directories: member.dir },
        },
      };
      const configFile = join(member.dir, "patroni.yml");
      writeFileSync(configFile, stringify(config));
      if (runAs) chownSync(configFile, runAs.uid, runAs.gid);
      member.process = spawnLogged("/usr/bin/patroni", [configFile], member.logFile, member.dir, runAs);
    }

    await waitFor(
      "a Patroni leader and a sync standby",
      async () => {
        const roles = (await state()).map((m) => `${m.role}/${m.state}`);
        const ready =
          roles.includes("leader/running") &&
          (members.length < 2 ||
            roles.some((r) => r === "sync_standby/running" || r === "sync_standby/streaming"));
        return ready ? true : undefined;
      },
      120_000,
      500,
    ).catch((error: unknown) => {
      const logs = members.map((m) => `--- ${m.name}\n${m.logTail()}`).join("\n");
      throw new Error(`${(error as Error).message}\n${logs}`);
    });
  } catch (error) {
    await cleanup();
    throw error;
  }

  const cluster: PatroniCluster = {
    members,
    url: (database) =>
      `postgresql://${SUPERUSER}@${members.map((m) => `${LOOPBACK}:${m.pgPort}`).join(",")}/${encodeURIComponent(database)}?target_session_attrs=read-write`,
    state,
    async leader() {
      return waitFor("a Patroni leader", leaderNow, 30_000);
    },
    async createDatabase(name) {
      const leader = await cluster.leader();
      await sql(leader.url("postgres"), `CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    },
    async killLeader() {
      const leader = (await cluster.leader()) as Member;
      leader.kill("SIGKILL");
      return leader;
    },
    async waitForNewLeader(old, timeoutMs = 60_000) {
      return waitFor(
        `a new Patroni leader after ${old.name}`,
        async () => {
          const leader = await leaderNow();
          return leader && leader !== old && (await writable(leader)) ? leader : undefined;
        },
        timeoutMs,
        100,
      );
    },
    cleanup,
  };
  return cluster;
}
