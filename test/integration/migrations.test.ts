import assert from "node:assert/strict";
import { test } from "node:test";
import { isLockstepError } from "../../src/common/errors.ts";
import { type Migration, runMigrations } from "../../src/storage/migrations.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { createTestDb, startTestPostgres } from "../support/postgres.ts";

const pg = await startTestPostgres();

/** Non-idempotent on purpose: applying any of them twice fails, and each one leaves a trace. */
const migrations: Migration[] = [
  {
    version: 1,
    name: "log",
    sql: "CREATE TABLE applied_log (version int NOT NULL, at timestamptz DEFAULT now())",
  },
  {
    version: 2,
    name: "events",
    sql: "CREATE TABLE events (id int8 PRIMARY KEY); INSERT INTO applied_log VALUES (2)",
  },
  {
    version: 3,
    name: "index",
    sql: "CREATE INDEX events_idx ON events (id); INSERT INTO applied_log VALUES (3)",
  },
];

test("applies in version order, records each, and is idempotent", async () => {
  const db = await createTestDb(pg, "mig_idem");
  const shuffled = [migrations[2]!, migrations[0]!, migrations[1]!];
  assert.deepEqual(await runMigrations(db, "sequencer", shuffled), { applied: [1, 2, 3] });
  assert.deepEqual(await runMigrations(db, "sequencer", migrations), { applied: [] });
  const rows = await db.query<{ kind: string; version: number; name: string; checksum: string }>(
    "SELECT kind, version, name, checksum FROM schema_migrations ORDER BY version",
  );
  assert.deepEqual(
    rows.map((r) => [r.kind, r.version, r.name]),
    [
      ["sequencer", 1, "log"],
      ["sequencer", 2, "events"],
      ["sequencer", 3, "index"],
    ],
  );
  assert.ok(rows.every((r) => /^[0-9a-f]{64}$/.test(r.checksum)));
  // A later build adds a migration: only that one runs.
  const v4: Migration = { version: 4, name: "more", sql: "INSERT INTO applied_log VALUES (4)" };
  assert.deepEqual(await runMigrations(db, "sequencer", [...migrations, v4]), { applied: [4] });
});

test("kinds are versioned independently", async () => {
  const db = await createTestDb(pg, "mig_kinds");
  await runMigrations(db, "mediator", [{ version: 1, name: "a", sql: "CREATE TABLE a (x int)" }]);
  assert.deepEqual(
    await runMigrations(db, "participant", [{ version: 1, name: "b", sql: "CREATE TABLE b (x int)" }]),
    {
      applied: [1],
    },
  );
});

test("concurrent runs from many pools apply each migration exactly once", async () => {
  const db = await createTestDb(pg, "mig_race");
  const pools = Array.from({ length: 8 }, () =>
    createPgDb({ connectionString: pg.connectionUrl(db.database), max: 2 }),
  );
  try {
    const results = await Promise.all(pools.map((p) => runMigrations(p, "participant", migrations)));
    const applied = results.flatMap((r) => r.applied).sort();
    assert.deepEqual(applied, [1, 2, 3], "every version applied by exactly one process");
    const log = await db.query<{ version: number }>("SELECT version FROM applied_log ORDER BY version");
    assert.deepEqual(
      log.map((r) => r.version),
      [2, 3],
    );
    const count = await db.one<{ n: bigint }>("SELECT count(*) AS n FROM schema_migrations");
    assert.equal(count.n, 3n);
  } finally {
    await Promise.all(pools.map((p) => p.close()));
  }
});

test("refuses when an applied migration's checksum differs", async () => {
  const db = await createTestDb(pg, "mig_sum");
  await runMigrations(db, "mediator", migrations);
  const changed = migrations.map((m) => (m.version === 2 ? { ...m, sql: `${m.sql};` } : m));
  await assert.rejects(
    runMigrations(db, "mediator", changed),
    (e) =>
      isLockstepError(e, "MIGRATION_CHECKSUM_MISMATCH") && e.metadata.version === "2" && e.exitCode === 3,
  );
});

test("refuses a database migrated by a newer build", async () => {
  const db = await createTestDb(pg, "mig_new");
  await runMigrations(db, "mediator", migrations);
  await assert.rejects(runMigrations(db, "mediator", migrations.slice(0, 2)), (e) =>
    isLockstepError(e, "DATABASE_SCHEMA_TOO_NEW"),
  );
});

test("a failing migration leaves no trace and can be fixed", async () => {
  const db = await createTestDb(pg, "mig_fail");
  const broken: Migration = {
    version: 2,
    name: "broken",
    sql: "CREATE TABLE t2 (x int); SELECT no_such_fn()",
  };
  await assert.rejects(runMigrations(db, "mediator", [migrations[0]!, broken]), /no_such_fn/);
  const versions = await db.query<{ version: number }>("SELECT version FROM schema_migrations");
  assert.deepEqual(
    versions.map((r) => r.version),
    [1],
  );
  assert.equal(
    await db.maybeOne("SELECT to_regclass('t2') AS t WHERE to_regclass('t2') IS NOT NULL"),
    undefined,
  );
  const fixed: Migration = { version: 2, name: "fixed", sql: "CREATE TABLE t2 (x int)" };
  assert.deepEqual(await runMigrations(db, "mediator", [migrations[0]!, fixed]), { applied: [2] });
});

test("duplicate versions are a programming error", async () => {
  const db = await createTestDb(pg, "mig_dup");
  await assert.rejects(runMigrations(db, "x", [migrations[0]!, { ...migrations[1]!, version: 1 }]), (e) =>
    isLockstepError(e, "INTERNAL_ERROR"),
  );
});
