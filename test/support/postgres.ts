/**
 * Real PostgreSQL for integration tests (no mocks). Typical use, at the top level of a test file:
 *
 *   const pg = await startTestPostgres();               // fresh cluster; stopped and removed after the file
 *   const db = await createTestDb(pg, "sequencer");     // fresh database; closed with the cluster
 *
 * Call startTestPostgres at the top level (top-level await), not inside `before`: node:test runs an
 * `after` registered from inside a hook right after that hook. If you must start it in a hook,
 * pass `{ autoCleanup: false }` and call `pg.cleanup()` from your own top-level `after`.
 * Each test file runs in its own process, so each gets its own cluster (about a second to create).
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import type { Db } from "../../src/storage/db.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";

export interface TestPostgres extends LocalPostgres {
  /** Closes the Dbs made by createTestDb, stops the server and removes its directory. Idempotent. */
  cleanup(): Promise<void>;
}

const openDbs = new WeakMap<LocalPostgres, Db[]>();

/** SIGQUIT is PostgreSQL's immediate shutdown: the only thing that works in a synchronous exit handler. */
function killNow(pg: LocalPostgres): void {
  try {
    const pid = Number.parseInt(readFileSync(join(pg.dataDir, "postmaster.pid"), "utf8"), 10);
    if (pid > 0) process.kill(pid, "SIGQUIT");
  } catch {
    // not running
  }
  rmSync(pg.dir, { recursive: true, force: true });
}

/**
 * Starts a fresh cluster (fsync off) in a new directory under the OS temp dir. It is cleaned up
 * by an `after` hook registered here (unless `autoCleanup: false`), by `cleanup()`, or, should
 * the process exit first, killed on exit.
 */
export async function startTestPostgres(options: { autoCleanup?: boolean } = {}): Promise<TestPostgres> {
  const base = mkdtempSync(join(tmpdir(), "lockstep-pg-"));
  const pg = new LocalPostgres({ dir: join(base, "postgres"), fsync: false });
  let cleaned = false;
  const onExit = () => {
    if (!cleaned) killNow(pg);
    rmSync(base, { recursive: true, force: true });
  };
  process.once("exit", onExit);
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    process.off("exit", onExit);
    await Promise.allSettled((openDbs.get(pg) ?? []).map((db) => db.close()));
    try {
      await pg.stop();
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  };
  try {
    await pg.start();
  } catch (error) {
    await cleanup().catch(() => {});
    throw error;
  }
  if (options.autoCleanup !== false) after(cleanup);
  return Object.assign(pg, { cleanup });
}

/** A fresh, uniquely named database (`<prefix>_<random>`) in the test cluster, as a Db. */
export async function createTestDb(pg: LocalPostgres, prefix = "test"): Promise<Db> {
  const name = `${prefix.toLowerCase().replace(/[^a-z0-9_]/g, "_")}_${randomBytes(4).toString("hex")}`;
  await pg.ensureDatabase(name);
  const db = createPgDb({ connectionString: pg.connectionUrl(name), applicationName: `test-${prefix}` });
  const list = openDbs.get(pg) ?? [];
  list.push(db);
  openDbs.set(pg, list);
  return db;
}
