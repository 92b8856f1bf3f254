/**
 * Real PostgreSQL streaming replication for tests: a primary and its standbys, each its own cluster
 * (initdb, pg_basebackup -R), run as the `postgres` OS user when the tests run as root. Typical use,
 * at the top level of a test file (as startTestPostgres, see postgres.ts for why not in a hook):
 *
 *   const repl = await startReplicatedPostgres({ replication: "sync" });   // primary + standby1
 *   await repl.createDatabase("node1");
 *   const url = repl.primary.url("node1");
 *
 * Options cover what later tests need: synchronous or asynchronous standbys, how many, the address
 * to listen on (e.g. 127.0.0.2 for a second "site", or an address inside a network namespace the
 * caller set up), fixed ports. Servers run with fsync off (test speed; no machine crash is tested).
 * Everything is stopped and removed by an `after` hook, by `cleanup()`, or killed on process exit.
 */

import { appendFileSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import pg from "pg";
import { freePort, LOOPBACK } from "../../src/common/loopback.ts";
import { findServerBinaries } from "../../src/storage/postgres-binaries.ts";
import { isAlive, postgresOsUser, type RunAs, run } from "../../src/storage/server-process.ts";
import { logTail } from "./log-tail.ts";
import { waitFor } from "./wait.ts";

export interface ReplicatedPostgresOptions {
  /**
   * `sync` (default): synchronous_standby_names lists every standby (`FIRST n (…)`), so each commit
   * waits for all of them. `async`: the standbys stream but none is listed.
   */
  replication?: "sync" | "async";
  /** How many standbys; default 1. 0 gives a lone primary configured for replication. */
  standbys?: number;
  /** Their application_name (what synchronous_standby_names matches); default standby1, standby2… */
  standbyNames?: string[];
  /** Overrides the synchronous_standby_names the `replication` mode would write. */
  synchronousStandbyNames?: string;
  /** The address the primary listens on and the standbys connect to; default 127.0.0.1. */
  listenAddress?: string;
  /** The standbys' listen addresses, one per standby; default listenAddress. */
  standbyAddresses?: string[];
  primaryPort?: number;
  standbyPorts?: number[];
  /**
   * Network namespaces to run the servers in (test/support/sites.ts): the primary's and each
   * standby's. pg_ctl start and pg_basebackup go through `ip netns exec`, so each server lives in its
   * namespace and is reached at its listen address from elsewhere. Needs root.
   */
  netns?: { primary?: string; standbys?: (string | undefined)[] };
  /** false: no `after` hook; call cleanup() yourself. */
  autoCleanup?: boolean;
}

export interface TestPostgresServer {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  /** PGDATA. */
  readonly dataDir: string;
  readonly logFile: string;
  /** A URL for a database on this server, as the superuser `postgres` unless `user` (trust auth). */
  url(database: string, user?: string): string;
  start(): Promise<void>;
  /** `fast` (default) or `immediate` (a crash as far as PostgreSQL can tell). */
  stop(mode?: "fast" | "immediate"): Promise<void>;
  isRunning(): boolean;
}

export interface ReplicatedPostgres {
  readonly primary: TestPostgresServer;
  readonly standbys: readonly TestPostgresServer[];
  /** SQL as the superuser on the primary's `postgres` database, on a connection of its own. */
  admin<R extends object = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  /** SQL as the superuser on one database of the primary. */
  adminOn<R extends object = Record<string, unknown>>(
    database: string,
    sql: string,
    params?: unknown[],
  ): Promise<R[]>;
  createDatabase(name: string): Promise<void>;
  /** ALTER SYSTEM on the primary and reload; resolves once new sessions see the value. */
  setSynchronousStandbyNames(value: string): Promise<void>;
  /** Waits until pg_stat_replication shows each named standby streaming with that sync_state. */
  waitForStandbys(expected: Record<string, "sync" | "async" | "potential" | "quorum">): Promise<void>;
  /** Stops every server (immediate) and removes the directories. Idempotent. */
  cleanup(): Promise<void>;
}

const SUPERUSER = "postgres";

class Server implements TestPostgresServer {
  readonly dataDir: string;
  readonly logFile: string;

  constructor(
    readonly name: string,
    readonly host: string,
    readonly port: number,
    private readonly dir: string,
    private readonly pgCtl: string,
    private readonly runAs: RunAs | undefined,
    readonly netns?: string,
  ) {
    this.dataDir = join(dir, "data");
    this.logFile = join(dir, "server.log");
  }

  url(database: string, user = SUPERUSER): string {
    return `postgresql://${encodeURIComponent(user)}@${this.host}:${this.port}/${encodeURIComponent(database)}`;
  }

  pid(): number | undefined {
    try {
      const pid = Number.parseInt(readFileSync(join(this.dataDir, "postmaster.pid"), "utf8"), 10);
      return pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  isRunning(): boolean {
    const pid = this.pid();
    return pid !== undefined && isAlive(pid);
  }

  async start(): Promise<void> {
    const args = ["start", "-w", "-t", "60", "-D", this.dataDir, "-l", this.logFile];
    const result = await runIn(this.netns, this.pgCtl, args, this.dir, this.runAs);
    if (result.code !== 0) throw new Error(`${this.name} did not start: ${result.output}\n${this.logTail()}`);
  }

  async stop(mode: "fast" | "immediate" = "fast"): Promise<void> {
    if (!this.isRunning()) return;
    const result = await run(
      this.pgCtl,
      ["stop", "-w", "-t", "60", "-m", mode, "-D", this.dataDir],
      this.dir,
      this.runAs,
    );
    if (result.code !== 0 && this.isRunning()) throw new Error(`${this.name} did not stop: ${result.output}`);
  }

  /** SIGQUIT, immediate shutdown: all a synchronous exit handler can do. */
  killNow(): void {
    const pid = this.pid();
    if (pid === undefined) return;
    try {
      process.kill(pid, "SIGQUIT");
    } catch {
      // gone already
    }
  }

  logTail(lines = 20): string {
    return logTail(this.logFile, lines);
  }
}

/**
 * `run`, inside a network namespace when given: as root through `ip netns exec`, dropping to the
 * server's OS user with setpriv (spawning as that user first would leave it unable to enter).
 * Stopping needs no namespace: pg_ctl stop only signals the postmaster.
 */
function runIn(
  netns: string | undefined,
  file: string,
  args: string[],
  cwd: string,
  runAs: RunAs | undefined,
): ReturnType<typeof run> {
  if (!netns) return run(file, args, cwd, runAs);
  const drop = runAs ? ["setpriv", `--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, "--clear-groups"] : [];
  return run("ip", ["netns", "exec", netns, ...drop, file, ...args], cwd);
}

/** Starts a primary and its standbys; resolves once every standby streams in the requested mode. */
export async function startReplicatedPostgres(
  options: ReplicatedPostgresOptions = {},
): Promise<ReplicatedPostgres> {
  const binaries = findServerBinaries();
  const pgBasebackup = join(binaries.binDir, "pg_basebackup");
  if (!existsSync(pgBasebackup)) throw new Error(`replication tests need ${pgBasebackup} (postgresql-15)`);
  const runAs = process.getuid?.() === 0 ? postgresOsUser() : undefined;
  if (process.getuid?.() === 0 && !runAs) throw new Error("running as root needs an OS user `postgres`");
  const count = options.standbys ?? 1;
  const names = Array.from({ length: count }, (_, i) => options.standbyNames?.[i] ?? `standby${i + 1}`);
  const address = options.listenAddress ?? LOOPBACK;
  const base = mkdtempSync(join(tmpdir(), "lockstep-repl-"));
  if (runAs) chownSync(base, runAs.uid, runAs.gid);
  const serverDir = (name: string) => {
    const dir = join(base, name);
    mkdirSync(dir, { mode: 0o700 });
    if (runAs) chownSync(dir, runAs.uid, runAs.gid);
    return dir;
  };

  const primary = new Server(
    "primary",
    address,
    options.primaryPort ?? (await freePort()),
    serverDir("primary"),
    binaries.pgCtl,
    runAs,
    options.netns?.primary,
  );
  const standbys: Server[] = [];
  for (const [i, name] of names.entries()) {
    standbys.push(
      new Server(
        name,
        options.standbyAddresses?.[i] ?? address,
        options.standbyPorts?.[i] ?? (await freePort()),
        serverDir(name),
        binaries.pgCtl,
        runAs,
        options.netns?.standbys?.[i],
      ),
    );
  }
  const servers = [primary, ...standbys];

  let cleaned = false;
  const onExit = () => {
    if (cleaned) return;
    for (const server of servers) server.killNow();
    rmSync(base, { recursive: true, force: true });
  };
  process.once("exit", onExit);
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    process.off("exit", onExit);
    // Standbys first, so none logs the primary's disappearance; immediate: nothing here needs a checkpoint.
    for (const server of [...standbys, primary]) await server.stop("immediate").catch(() => server.killNow());
    rmSync(base, { recursive: true, force: true });
  };

  const query = async <R extends object>(database: string, sql: string, params?: unknown[]) => {
    const client = new pg.Client({ connectionString: primary.url(database), application_name: "test-admin" });
    client.on("error", () => {});
    await client.connect();
    try {
      return (await client.query(sql, params)).rows as R[];
    } finally {
      await client.end().catch(() => {});
    }
  };
  const standbyStates = async () =>
    query<{ application_name: string; state: string; sync_state: string }>(
      "postgres",
      "SELECT application_name, state, sync_state FROM pg_stat_replication",
    );
  const waitForStandbys = async (expected: Record<string, string>) => {
    await waitFor(
      `standbys ${JSON.stringify(expected)}`,
      async () => {
        const rows = await standbyStates();
        const ok = Object.entries(expected).every(([name, sync]) =>
          rows.some((r) => r.application_name === name && r.state === "streaming" && r.sync_state === sync),
        );
        return ok ? true : undefined;
      },
      60_000,
    );
  };

  try {
    const initdb = [
      "-D",
      primary.dataDir,
      "-U",
      SUPERUSER,
      "-A",
      "trust",
      "-E",
      "UTF8",
      "--no-locale",
      "--no-sync",
    ];
    const made = await run(binaries.initdb, initdb, base, runAs);
    if (made.code !== 0) throw new Error(`initdb failed: ${made.output}`);
    const synchronousNames =
      options.synchronousStandbyNames ??
      (options.replication === "async" || count === 0
        ? ""
        : `FIRST ${count} (${names.map((n) => `"${n}"`).join(", ")})`);
    appendFileSync(
      join(primary.dataDir, "postgresql.conf"),
      [
        "",
        "# test/support/replication.ts",
        `listen_addresses = '${address}'`,
        `port = ${primary.port}`,
        "unix_socket_directories = ''",
        "fsync = off",
        "wal_level = replica",
        "max_wal_senders = 10",
        "wal_sender_timeout = 10s",
        `synchronous_standby_names = '${synchronousNames.replace(/'/g, "''")}'`,
        "",
      ].join("\n"),
    );
    // Trust from anywhere: the sites of later tests connect from other addresses. Test clusters only.
    appendFileSync(
      join(primary.dataDir, "pg_hba.conf"),
      [
        "",
        "host all all 0.0.0.0/0 trust",
        "host replication all 0.0.0.0/0 trust",
        "host all all ::/0 trust",
        "host replication all ::/0 trust",
        "",
      ].join("\n"),
    );
    await primary.start();

    for (const standby of standbys) {
      const backup = [
        "-h",
        primary.host,
        "-p",
        String(primary.port),
        "-U",
        SUPERUSER,
        "-D",
        standby.dataDir,
        "-X",
        "stream",
        "-R",
        "--no-sync",
        "-c",
        "fast",
      ];
      const copied = await runIn(standby.netns, pgBasebackup, backup, base, runAs);
      if (copied.code !== 0) throw new Error(`pg_basebackup for ${standby.name} failed: ${copied.output}`);
      appendFileSync(
        join(standby.dataDir, "postgresql.conf"),
        [
          "",
          `# ${standby.name}`,
          `listen_addresses = '${standby.host}'`,
          `port = ${standby.port}`,
          "wal_receiver_status_interval = 1s",
          // Promoted, it must not wait for standbys of its own that it does not have.
          "synchronous_standby_names = ''",
          "",
        ].join("\n"),
      );
      // application_name is what synchronous_standby_names matches (later lines win).
      appendFileSync(
        join(standby.dataDir, "postgresql.auto.conf"),
        `primary_conninfo = 'host=${primary.host} port=${primary.port} user=${SUPERUSER} application_name=${standby.name}'\n`,
      );
      await standby.start();
    }
    const sync = options.replication === "async" || synchronousNames === "" ? "async" : "sync";
    if (options.synchronousStandbyNames === undefined) {
      await waitForStandbys(Object.fromEntries(names.map((n) => [n, sync])));
    } else {
      await waitFor("standbys streaming", async () => {
        const rows = await standbyStates();
        return names.every((n) => rows.some((r) => r.application_name === n && r.state === "streaming"))
          ? true
          : undefined;
      });
    }
  } catch (error) {
    const logs = servers.map((s) => `--- ${s.name}\n${s.logTail()}`).join("\n");
    await cleanup().catch(() => {});
    throw new Error(`${(error as Error).message}\n${logs}`, { cause: error });
  }
  if (options.autoCleanup !== false) after(cleanup);

  return {
    primary,
    standbys,
    admin: (sql, params) => query("postgres", sql, params),
    adminOn: (database, sql, params) => query(database, sql, params),
    createDatabase: async (name) => {
      await query("postgres", `CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    },
    setSynchronousStandbyNames: async (value) => {
      await query("postgres", `ALTER SYSTEM SET synchronous_standby_names = ${pg.escapeLiteral(value)}`);
      await query("postgres", "SELECT pg_reload_conf()");
      await waitFor("synchronous_standby_names reloaded", async () => {
        const [row] = await query<{ value: string }>(
          "postgres",
          "SELECT current_setting('synchronous_standby_names') AS value",
        );
        return row?.value === value ? true : undefined;
      });
    },
    waitForStandbys,
    cleanup,
  };
}
