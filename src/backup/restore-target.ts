import { randomBytes } from "node:crypto";
import pg from "pg";
import type { NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../node/node-database.ts";
import { lockIdForDatabase } from "../storage/advisory-lock.ts";
import { LocalPostgres } from "../storage/local-postgres.ts";
import { withPgClient } from "../storage/pg-client.ts";
import { storageServerUrl } from "../storage/storage-db.ts";

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
  /** Databases earlier restores replaced and kept (the way back). */
  kept: KeptDatabase[];
  /**
   * A participant's synchronizer now (its registration, or the target of its last migration) and
   * the offset of that migration; null when not a participant database or never registered.
   */
  synchronizer: { id: string; migratedAtOffset: bigint | null } | null;
}

/**
 * A database a restore replaced, kept under `<db>__replaced_<id>` until the operator drops it
 * (`lockstep restore drop-kept`): the way back if the restored node turns out wrong.
 */
export interface KeptDatabase {
  database: string;
  /** The restore that replaced it (from the node's recovery records); null when not recorded there. */
  backupSet: string | null;
  restoredAt: string | null;
  /**
   * Whether the node now in place passed its first resubscription check against the sequencer
   * since its latest restore (a sequencer: started since), so the kept database may go.
   */
  resubscribed: boolean;
  resubscribedAt: string | null;
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
  // A multi-host storage.url (Patroni) is resolved to the server that accepts writes now: a restore
  // is one run against one server, and its raw clients and pg_restore take a single-server URL.
  let url = entry.config.storage.url && (await storageServerUrl(entry.config.storage.url, { logger }));
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

// A bounded connect: `status` lists kept databases through here and must not hang on a dead server.
function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  return withPgClient(url, fn, "lockstep-restore");
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
  if (!exists) {
    const kept = await listKeptDatabases(target);
    return { exists, empty: true, stagingLeft, lockHeld: false, lastRestore: null, kept, synchronizer: null };
  }
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
    let synchronizer: TargetState["synchronizer"] = null;
    if (names.has("participant_synchronizer_migrations") && names.has("sequencer_client_registration")) {
      // As synchronizer-migration.ts's currentSynchronizer (the registration holds `id::namespace`).
      const row = await client.query<{ id: string | null; offset: string | null }>(
        `SELECT coalesce((SELECT split_part(synchronizer_id, '::', 1) FROM sequencer_client_registration), m.to_synchronizer) AS id,
                m.ledger_offset::text AS offset
         FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT to_synchronizer, ledger_offset FROM participant_synchronizer_migrations
           ORDER BY ledger_offset DESC LIMIT 1) m ON true`,
      );
      const r = row.rows[0];
      if (r?.id) synchronizer = { id: r.id, migratedAtOffset: r.offset === null ? null : BigInt(r.offset) };
    }
    const kept = await listKeptDatabases(target);
    return { exists, empty: names.size === 0, stagingLeft, lockHeld, lastRestore, kept, synchronizer };
  });
}

/** The name under which a restore keeps the database it replaces (within PostgreSQL's 63 bytes). */
export function keptDatabaseName(target: RestoreTarget): string {
  return `${keptPrefix(target)}${randomBytes(3).toString("hex")}`;
}

function keptPrefix(target: RestoreTarget): string {
  // 40 + 11 + 6 bytes for ASCII names; the prefix also finds kept databases of earlier restores.
  return `${target.database.slice(0, 40)}__replaced_`;
}

/** The kept databases of the node, with the restore that replaced each and whether it may go. */
export async function listKeptDatabases(target: RestoreTarget): Promise<KeptDatabase[]> {
  const names = await withClient(target.adminUrl, async (admin) => {
    const rows = await admin.query<{ datname: string }>(
      "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
      [keptPrefix(target)],
    );
    return {
      kept: rows.rows.map((r) => r.datname),
      current: await databaseExists(admin, target.database),
    };
  });
  if (names.kept.length === 0) return [];
  const records = new Map<string, { backupSet: string; restoredAt: string }>();
  let resubscribedAt: Date | null = null;
  if (names.current) {
    await withClient(target.url, async (client) => {
      const has = await client.query<{ n: string }>(
        `SELECT count(*) AS n FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = 'recovery_records' AND column_name = 'resubscribed_at'`,
      );
      if (Number(has.rows[0]?.n ?? 0) === 0) return;
      const rows = await client.query<{ backup_set: string; restored_at: Date; replaced_database: string }>(
        "SELECT backup_set, restored_at, replaced_database FROM recovery_records WHERE replaced_database = ANY($1)",
        [names.kept],
      );
      for (const r of rows.rows) {
        records.set(r.replaced_database, {
          backupSet: r.backup_set,
          restoredAt: r.restored_at.toISOString(),
        });
      }
      // The node now in place since its latest restore. A sequencer has no sequencer to
      // resubscribe to: for it, having started since the restore is the check.
      const latest = await client.query<{ resubscribed_at: Date | null }>(
        `SELECT CASE WHEN s.kind = 'sequencer' AND s.activated_at > r.restored_at THEN s.activated_at
                     ELSE r.resubscribed_at END AS resubscribed_at
         FROM recovery_records r, node_state s ORDER BY r.id DESC LIMIT 1`,
      );
      resubscribedAt = latest.rows[0]?.resubscribed_at ?? null;
    });
  }
  const at = resubscribedAt as Date | null;
  return names.kept.map((database) => ({
    database,
    backupSet: records.get(database)?.backupSet ?? null,
    restoredAt: records.get(database)?.restoredAt ?? null,
    resubscribed: at !== null,
    resubscribedAt: at?.toISOString() ?? null,
  }));
}

/** Drops one kept database (never the node's own: the name must carry the kept prefix). */
export async function dropKeptDatabase(target: RestoreTarget, database: string): Promise<void> {
  if (!database.startsWith(keptPrefix(target))) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `${database} is not a kept database of ${target.node}`,
    });
  }
  await withClient(target.adminUrl, (admin) =>
    admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(database)} WITH (FORCE)`),
  );
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
 * (RENAME DATABASE is transactional), so no moment exists in which the target name is missing, and
 * a kill at any point leaves either the old or the new database in place. The replaced database is
 * not dropped but kept as `kept` (the way back) until the operator drops it. Returns whether one was
 * replaced (and so kept).
 */
export async function swapIntoPlace(target: RestoreTarget, kept: string): Promise<boolean> {
  return withClient(target.adminUrl, async (admin) => {
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
      if (exists) await admin.query(`ALTER DATABASE ${q(target.database)} RENAME TO ${q(kept)}`);
      await admin.query(`ALTER DATABASE ${q(target.staging)} RENAME TO ${q(target.database)}`);
      await admin.query("COMMIT");
    } catch (error) {
      await admin.query("ROLLBACK").catch(() => {});
      throw error;
    }
    return exists;
  });
}

/**
 * The node's restore target when its database server is reachable without starting anything
 * (status must not start the embedded cluster); undefined otherwise.
 */
export async function runningTargetFor(
  entry: NodeEntry,
  dataDir: string,
  logger: Logger,
): Promise<RestoreTarget | undefined> {
  if (!entry.config.storage.url) {
    const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir), logger });
    if (!(await cluster.isRunning())) return undefined;
  }
  return restoreTargetFor(entry, dataDir, logger);
}

/** One node's kept database, as `restore drop-kept` and `status` show it. */
export interface NodeKeptDatabase extends KeptDatabase {
  node: string;
}

/**
 * `lockstep restore drop-kept`: drops the kept databases of the nodes, but only of nodes that passed
 * their first resubscription check since the restore (until then the kept database is the way back);
 * with `force`, all of them. Refuses before dropping anything.
 */
export async function dropKeptDatabases(
  entries: readonly NodeEntry[],
  dataDir: string,
  force: boolean,
  logger: Logger,
): Promise<NodeKeptDatabase[]> {
  const found: { target: RestoreTarget; kept: NodeKeptDatabase }[] = [];
  for (const entry of entries) {
    const target = await restoreTargetFor(entry, dataDir, logger);
    for (const kept of await listKeptDatabases(target))
      found.push({ target, kept: { node: entry.name, ...kept } });
  }
  const needed = found.filter((f) => !f.kept.resubscribed);
  if (needed.length > 0 && !force) {
    throw new LockstepError("RESTORE_KEPT_DATABASE_NEEDED", {
      node: [...new Set(needed.map((f) => f.kept.node))].join(", "),
      database: needed.map((f) => f.kept.database).join(", "),
    });
  }
  for (const { target, kept } of found) await dropKeptDatabase(target, kept.database);
  return found.map((f) => f.kept);
}
