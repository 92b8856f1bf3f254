import { randomBytes } from "node:crypto";
import pg from "pg";
import type { NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../node/node-database.ts";
import { lockIdForDatabase } from "../storage/advisory-lock.ts";
import { LocalPostgres } from "../storage/local-postgres.ts";

/**
 * Where a node's database is restored: the database the node opens (storage.url, or its database
 * in the embedded cluster) and a staging database next to it. A restore goes into the staging
 * database and is renamed into place only once complete and stamped, so a node can never start on a
 * half-restored database, and a killed `restore apply` leaves only the staging database behind
 * (the "restore incomplete" marker), which the next run drops and redoes.
 */
export interface RestoreTarget {
  node: string;
  database: string;
  staging: string;
  url: string;
  stagingUrl: string;
  /** The server's maintenance database, for CREATE / DROP / RENAME DATABASE. */
  adminUrl: string;
}

export interface TargetState {
  exists: boolean;
  /** No table at all (a database `lockstep node start` created and nothing else). */
  empty: boolean;
  /** The staging database of an earlier apply that did not finish. */
  stagingLeft: boolean;
  /** Whether a process holds the node's single-writer lock on the target. */
  lockHeld: boolean;
  /** The newest recovery record in the target: set and whether the node started since. */
  lastRestore: { backupSet: string; startedSince: boolean } | null;
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

/** Resolves the node's database; starts the embedded cluster when the node uses it. */
export async function restoreTargetFor(
  entry: NodeEntry,
  dataDir: string,
  logger: Logger,
): Promise<RestoreTarget> {
  let url = entry.config.storage.url;
  if (!url) {
    const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir), logger });
    await cluster.start();
    url = cluster.connectionUrl(embeddedDatabaseName(entry.name));
  }
  const database = decodeURIComponent(new URL(url).pathname.slice(1));
  // PostgreSQL truncates names at 63 bytes: keep the suffix inside that.
  const staging = `${database.slice(0, 50)}__restoring`;
  return {
    node: entry.name,
    database,
    staging,
    url,
    stagingUrl: withDatabase(url, staging),
    adminUrl: withDatabase(url, "postgres"),
  };
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: "lockstep-restore" });
  client.on("error", () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

async function databaseExists(client: pg.Client, name: string): Promise<boolean> {
  return ((await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])).rowCount ?? 0) > 0;
}

/** What restore plan needs to know about the target, without changing it. */
export async function inspectTarget(target: RestoreTarget): Promise<TargetState> {
  const { exists, stagingLeft } = await withClient(target.adminUrl, async (admin) => ({
    exists: await databaseExists(admin, target.database),
    stagingLeft: await databaseExists(admin, target.staging),
  }));
  if (!exists) return { exists, empty: true, stagingLeft, lockHeld: false, lastRestore: null };
  return withClient(target.url, async (client) => {
    const tables = await client.query<{ name: string }>(
      "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'",
    );
    const names = new Set(tables.rows.map((r) => r.name));
    // The node's lock is per database: try it there, and give it back at once.
    const id = lockIdForDatabase(target.database).toString();
    const lock = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1::bigint) AS ok", [id]);
    const lockHeld = !lock.rows[0]?.ok;
    if (!lockHeld) await client.query("SELECT pg_advisory_unlock($1::bigint)", [id]);
    let lastRestore: TargetState["lastRestore"] = null;
    if (names.has("recovery_records") && names.has("node_state")) {
      const row = await client.query<{ backup_set: string; started: boolean }>(
        `SELECT r.backup_set, COALESCE(s.activated_at > r.restored_at, false) AS started
         FROM recovery_records r, node_state s ORDER BY r.id DESC LIMIT 1`,
      );
      const r = row.rows[0];
      if (r) lastRestore = { backupSet: r.backup_set, startedSince: r.started };
    }
    return { exists, empty: names.size === 0, stagingLeft, lockHeld, lastRestore };
  });
}

/** Drops what an interrupted apply left and creates the staging database afresh. */
export async function createStaging(target: RestoreTarget): Promise<void> {
  await withClient(target.adminUrl, async (admin) => {
    await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(target.staging)} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(target.staging)}`);
  });
}

export async function dropStaging(target: RestoreTarget): Promise<void> {
  await withClient(target.adminUrl, (admin) =>
    admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(target.staging)} WITH (FORCE)`),
  );
}

/**
 * Puts the restored staging database in the target's place. Both renames commit in one transaction
 * (RENAME DATABASE is transactional), so no moment exists in which the target name is missing; the
 * replaced database is dropped after.
 */
export async function swapIntoPlace(target: RestoreTarget): Promise<void> {
  await withClient(target.adminUrl, async (admin) => {
    const old = `${target.database.slice(0, 40)}__replaced_${randomBytes(3).toString("hex")}`;
    const q = (name: string) => pg.escapeIdentifier(name);
    const exists = await databaseExists(admin, target.database);
    // The node may have been started since the preflight: never pull its database from under it.
    if (exists && (await inspectTarget(target)).lockHeld) {
      throw new LockstepError("RESTORE_NODE_RUNNING", {
        node: target.node,
        reason: "a process took its database's single-writer lock during the restore",
      });
    }
    // RENAME refuses while anyone is connected; the node is stopped (checked), so these are stray sessions.
    await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()",
      [[target.database, target.staging]],
    );
    await admin.query("BEGIN");
    try {
      if (exists) await admin.query(`ALTER DATABASE ${q(target.database)} RENAME TO ${q(old)}`);
      await admin.query(`ALTER DATABASE ${q(target.staging)} RENAME TO ${q(target.database)}`);
      await admin.query("COMMIT");
    } catch (error) {
      await admin.query("ROLLBACK").catch(() => {});
      throw error;
    }
    if (exists) await admin.query(`DROP DATABASE IF EXISTS ${q(old)} WITH (FORCE)`);
  });
}
