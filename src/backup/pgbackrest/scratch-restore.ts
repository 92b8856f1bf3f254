/**
 * Restores a pgBackRest backup (some of its databases, or all) into a fresh cluster of its own — a
 * "scratch" cluster on a free port — and hands back where to connect and how to remove it.
 *
 * This is how one node is restored without touching the others when several nodes' databases share
 * one embedded cluster: a physical restore can only replace a whole cluster, so the node's database is
 * restored here, beside the live cluster, and moved over from here (by the engine, not this module).
 *
 * Steps: `pgbackrest restore` (`--db-include` for the chosen databases) into `<dir>/postgres/data`;
 * archiving off and no Unix socket in the copy (its postgresql.auto.conf came from the live cluster and
 * would otherwise push the copy's new timeline into the live stanza after promotion, and put its socket
 * beside the live one); a LocalPostgres on it, which recovers to the target and promotes; then the
 * databases not restored, left by pgBackRest as zeroed files, are dropped.
 */
import {
  appendFileSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { LockstepError } from "../../common/errors.ts";
import { type Logger, silentLogger } from "../../common/logging.ts";
import { LocalPostgres } from "../../storage/local-postgres.ts";
import { isAlive, makeTraversable } from "../../storage/server-process.ts";
import type { PgBackRest, RestoreTarget } from "./pgbackrest-cli.ts";

export interface ScratchRestoreRequest {
  pgbackrest: PgBackRest;
  /** The backup set's label; default the latest one pgBackRest deems fit for the target. */
  set?: string;
  /**
   * Where recovery stops. Default: the end of `set` (`immediate`) when a set is named, else all the
   * archived WAL (`default`).
   */
  target?: RestoreTarget;
  /** Only these databases (the others are dropped); default all. */
  databases?: string[];
  /** The scratch cluster goes into a new folder under this one; default the OS temp folder. */
  parentDir?: string;
  /** Time limit for the restore and, separately, for recovery; default 30 minutes. */
  timeoutMs?: number;
  signal?: AbortSignal;
  logger?: Logger;
}

export interface ScratchCluster {
  /** The folder that holds it all; removed by cleanup. */
  dir: string;
  /** The running server on the restored data. */
  pg: LocalPostgres;
  /** The databases it holds (neither templates nor `postgres`). */
  databases: string[];
  connectionUrl(database: string): string;
  /** Stops the server and removes `dir`. Idempotent. */
  cleanup(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 30 * 60_000;

/** Appended last to the restored postgresql.auto.conf, so these win over the live cluster's settings. */
const SCRATCH_SETTINGS = `
# Added by Lockstep's scratch restore: a restored copy must not archive into the live cluster's stanza.
archive_mode = 'off'
unix_socket_directories = ''
`;

const SCRATCH_PREFIX = "lockstep-scratch-";
const OWNER_FILE = "owner.json";

/**
 * Removes the scratch clusters under `parentDir` whose process is gone (a restore or drill killed
 * mid-way): stops a server still running on one, then deletes it. A scratch cluster of a process
 * still alive on this host is left alone. Returns the folders removed.
 */
export async function cleanStaleScratch(parentDir: string, logger: Logger): Promise<string[]> {
  if (!existsSync(parentDir)) return [];
  const removed: string[] = [];
  for (const name of readdirSync(parentDir)) {
    if (!name.startsWith(SCRATCH_PREFIX)) continue;
    const dir = join(parentDir, name);
    let owner: { pid?: number; host?: string } = {};
    try {
      owner = JSON.parse(readFileSync(join(dir, OWNER_FILE), "utf8"));
    } catch {
      // no owner file: written by nobody alive (it is the first thing written)
    }
    if (owner.host === hostname() && typeof owner.pid === "number" && isAlive(owner.pid)) continue;
    await new LocalPostgres({ dir: join(dir, "postgres"), logger }).stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    logger.info({ dir, pid: owner.pid }, "removed a scratch cluster left by a process that is gone");
    removed.push(dir);
  }
  return removed;
}

export async function restoreToScratch(request: ScratchRestoreRequest): Promise<ScratchCluster> {
  const { pgbackrest } = request;
  const logger = request.logger ?? silentLogger("scratch-restore");
  const timeoutMs = request.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (request.parentDir) await cleanStaleScratch(request.parentDir, logger);
  const dir = mkdtempSync(join(request.parentDir ?? tmpdir(), SCRATCH_PREFIX));
  writeFileSync(
    join(dir, OWNER_FILE),
    JSON.stringify({ pid: process.pid, host: hostname(), startedAt: new Date().toISOString() }),
  );
  const cluster = new LocalPostgres({ dir: join(dir, "postgres"), fsync: false, logger });
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    try {
      await cluster.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  try {
    // pgBackRest (as the cluster owner) creates data/ inside the cluster folder: make that folder its.
    mkdirSync(cluster.dir, { mode: 0o700 });
    if (pgbackrest.runAs) {
      chownSync(cluster.dir, pgbackrest.runAs.uid, pgbackrest.runAs.gid);
      makeTraversable(dir, pgbackrest.runAs);
    }
    const started = Date.now();
    await pgbackrest.restore(
      {
        dataDir: cluster.dataDir,
        set: request.set,
        target: request.target ?? { type: request.set ? "immediate" : "default" },
        targetAction: "promote",
        databases: request.databases,
      },
      { signal: request.signal, timeoutMs },
    );
    appendFileSync(join(cluster.dataDir, "postgresql.auto.conf"), SCRATCH_SETTINGS);
    await cluster.start();
    await waitForPromotion(cluster, Date.now() + timeoutMs, request.signal);
    if (request.databases) {
      const keep = new Set(request.databases);
      for (const name of await cluster.listDatabases()) if (!keep.has(name)) await cluster.dropDatabase(name);
    }
    const databases = await cluster.listDatabases();
    logger.info(
      { set: request.set, target: request.target?.type, databases, ms: Date.now() - started, dir },
      "restored a pgBackRest backup into a scratch cluster",
    );
    return { dir, pg: cluster, databases, connectionUrl: (db) => cluster.connectionUrl(db), cleanup };
  } catch (error) {
    await cleanup().catch(() => {});
    throw error;
  }
}

/**
 * Waits until recovery reached its target and the server promoted itself (pg_ctl returns as soon as a
 * standby accepts connections, before that). A server that stops meanwhile failed to recover (e.g. the
 * target lies beyond the archived WAL: "recovery ended before configured recovery target was reached").
 */
export async function waitForPromotion(
  cluster: LocalPostgres,
  deadline: number,
  signal?: AbortSignal,
): Promise<void> {
  for (;;) {
    signal?.throwIfAborted();
    if (!(await cluster.isRunning())) throw recoveryFailed(cluster, "the server stopped during recovery");
    const client = new pg.Client({ connectionString: cluster.connectionUrl("postgres") });
    client.on("error", () => {});
    try {
      await client.connect();
      const result = await client.query<{ recovering: boolean }>("SELECT pg_is_in_recovery() AS recovering");
      if (!result.rows[0]?.recovering) return;
    } catch {
      // starting up or shutting down: look again
    } finally {
      await client.end().catch(() => {});
    }
    if (Date.now() > deadline) throw recoveryFailed(cluster, "recovery did not reach its target in time");
    await sleep(100);
  }
}

function recoveryFailed(cluster: LocalPostgres, reason: string): LockstepError {
  let tail = "";
  try {
    tail = readFileSync(cluster.logFile, "utf8").trimEnd().split("\n").slice(-10).join("\n");
  } catch {
    // no log
  }
  return new LockstepError("POSTGRES_FAILED", {
    dataDir: cluster.dataDir,
    logFile: cluster.logFile,
    reason: `${reason}\n${tail}`,
  });
}
