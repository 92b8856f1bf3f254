import { createHash } from "node:crypto";
import { LockstepError } from "../common/errors.ts";
import type { Migration } from "../common/node-kind.ts";
import { LOCK_COUNTERS, lockIdFor } from "./advisory-lock.ts";
import type { Db, Tx } from "./db.ts";

export type { Migration };

/** One lock for all kinds: migrations are rare and short, and one lock cannot deadlock. */
export const MIGRATION_LOCK_ID = lockIdFor("lockstep-migrations", LOCK_COUNTERS.migrations);

export function migrationChecksum(migration: Migration): string {
  return createHash("sha256").update(migration.sql, "utf8").digest("hex");
}

interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
}

function sortedAndValidated(kind: string, migrations: readonly Migration[]): Migration[] {
  const seen = new Set<number>();
  for (const m of migrations) {
    if (!Number.isInteger(m.version) || m.version < 1) {
      throw new LockstepError("INTERNAL_ERROR", {
        details: `${kind} migration ${m.name} has bad version ${m.version}`,
      });
    }
    if (seen.has(m.version)) {
      throw new LockstepError("INTERNAL_ERROR", {
        details: `${kind} has two migrations with version ${m.version}`,
      });
    }
    seen.add(m.version);
  }
  return [...migrations].sort((a, b) => a.version - b.version);
}

/**
 * Takes the migration lock and makes sure the bookkeeping table exists. The lock is
 * transaction-scoped: it frees itself on commit or rollback, even if this process dies.
 */
async function lockAndPrepare(tx: Tx): Promise<void> {
  await tx.query("SELECT pg_advisory_xact_lock($1::bigint)", [MIGRATION_LOCK_ID]);
  // Under the lock, so that concurrent first starts do not race on CREATE TABLE.
  await tx.execute(`
    CREATE TABLE IF NOT EXISTS schema_migrations (
      kind text NOT NULL,
      version integer NOT NULL,
      name text NOT NULL,
      checksum text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (kind, version)
    )`);
}

function checkApplied(
  database: string,
  kind: string,
  applied: readonly AppliedRow[],
  known: Migration[],
): void {
  const byVersion = new Map(known.map((m) => [m.version, m]));
  const unknown = applied.filter((row) => !byVersion.has(row.version)).map((row) => row.version);
  if (unknown.length > 0) {
    throw new LockstepError("DATABASE_SCHEMA_TOO_NEW", { database, kind, versions: unknown.join(", ") });
  }
  for (const row of applied) {
    const migration = byVersion.get(row.version) as Migration;
    const expected = migrationChecksum(migration);
    if (row.checksum !== expected) {
      throw new LockstepError("MIGRATION_CHECKSUM_MISMATCH", {
        database,
        kind,
        version: row.version,
        name: row.name,
        applied: row.checksum.slice(0, 12),
        expected: expected.slice(0, 12),
      });
    }
  }
}

/**
 * Brings the schema of `kind` up to date: verifies what was applied (same checksums, nothing
 * unknown), then applies each missing migration in its own transaction, in version order. Each
 * step holds the migration lock and re-reads what is applied, so many processes may start at
 * once and every migration still runs exactly once. Returns the versions this call applied.
 */
export async function runMigrations(
  db: Db,
  kind: string,
  migrations: readonly Migration[],
): Promise<{ applied: number[] }> {
  const ordered = sortedAndValidated(kind, migrations);
  const readApplied = (tx: Tx) =>
    tx.query<AppliedRow>(
      "SELECT version, name, checksum FROM schema_migrations WHERE kind = $1 ORDER BY version",
      [kind],
    );

  const pending = await db.transaction(async (tx) => {
    await lockAndPrepare(tx);
    const applied = await readApplied(tx);
    checkApplied(db.database, kind, applied, ordered);
    const done = new Set(applied.map((row) => row.version));
    return ordered.filter((m) => !done.has(m.version));
  });

  const appliedNow: number[] = [];
  for (const migration of pending) {
    const ran = await db.transaction(async (tx) => {
      await lockAndPrepare(tx);
      const applied = await readApplied(tx);
      // Another process may have applied (or, with another build, changed) it meanwhile.
      checkApplied(db.database, kind, applied, ordered);
      if (applied.some((row) => row.version === migration.version)) return false;
      await tx.execute(migration.sql);
      await tx.execute(
        "INSERT INTO schema_migrations (kind, version, name, checksum) VALUES ($1, $2, $3, $4)",
        [kind, migration.version, migration.name, migrationChecksum(migration)],
      );
      return true;
    });
    if (ran) appliedNow.push(migration.version);
  }
  return { applied: appliedNow };
}
