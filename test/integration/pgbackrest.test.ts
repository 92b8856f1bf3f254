/**
 * pgBackRest primitives against a real PostgreSQL 15 cluster and the real pgbackrest (no mocks): one
 * cluster with archiving on and two databases, `a` and `b`; backups, the chain `info` shows, restores
 * of database `a` alone into scratch clusters (to a backup set, a restore point, a time), verify on a
 * damaged repository, expire. Run as root: the cluster and pgBackRest run as `postgres`.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { embeddedCluster, enableArchiving } from "../../src/backup/pgbackrest/embedded-archiving.ts";
import { PgBackRest } from "../../src/backup/pgbackrest/pgbackrest-cli.ts";
import { pgBackRestRepoPath } from "../../src/backup/pgbackrest/pgbackrest-config.ts";
import { lsnToBigInt, type PgBackRestBackup } from "../../src/backup/pgbackrest/pgbackrest-info.ts";
import { restoreToScratch, type ScratchRestoreRequest } from "../../src/backup/pgbackrest/scratch-restore.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import type { Db } from "../../src/storage/db.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { startTestPostgres } from "../support/postgres.ts";

const pg = await startTestPostgres();
const base = mkdtempSync(join(tmpdir(), "lockstep-pgbackrest-"));
after(() => rmSync(base, { recursive: true, force: true }));

const STANZA = "lockstep";
const pgbackrest = new PgBackRest({
  config: {
    stanza: STANZA,
    repoPath: pgBackRestRepoPath(join(base, "repository")),
    stateDir: join(base, "pgbackrest"),
    cluster: embeddedCluster(pg),
  },
  timeoutMs: 120_000,
});

const dbs: Db[] = [];
after(() => Promise.allSettled(dbs.map((d) => d.close())));
function open(url: string): Db {
  const db = createPgDb({ connectionString: url });
  dbs.push(db);
  return db;
}

async function timed<T>(
  what: string,
  t: { diagnostic(message: string): void },
  fn: () => Promise<T>,
): Promise<T> {
  const started = performance.now();
  const result = await fn();
  t.diagnostic(`${what}: ${Math.round(performance.now() - started)} ms`);
  return result;
}

/** The ids in `t` of database `a` at url, in order. */
async function ids(url: string): Promise<number[]> {
  const db = createPgDb({ connectionString: url });
  try {
    return (await db.query<{ id: number }>("SELECT id FROM t ORDER BY id")).map((r) => r.id);
  } finally {
    await db.close();
  }
}

/** Restores database `a` into a scratch cluster, returns its rows and what the cluster held; cleans up. */
async function restoredRows(
  t: { diagnostic(message: string): void },
  what: string,
  request: Omit<ScratchRestoreRequest, "pgbackrest" | "parentDir" | "databases">,
): Promise<{ rows: number[]; databases: string[]; other: unknown }> {
  const scratch = await timed(`restore of database a (${what})`, t, () =>
    restoreToScratch({ pgbackrest, parentDir: base, databases: ["a"], ...request }),
  );
  try {
    const other = await ids(scratch.connectionUrl("b")).catch((error: unknown) => error);
    return { rows: await ids(scratch.connectionUrl("a")), databases: scratch.databases, other };
  } finally {
    await scratch.cleanup();
  }
}

let a: Db;
let full: PgBackRestBackup;
let incr: PgBackRestBackup;

test("archiving on, two databases, stanza-create and check", async () => {
  assert.match(await pgbackrest.version(), /^2\.\d+/);
  const first = await enableArchiving(pg, pgbackrest);
  assert.equal(first.restarted, true, "archive_mode takes a restart");
  assert.deepEqual(await enableArchiving(pg, pgbackrest), { restarted: false }, "once on, nothing to do");
  for (const name of ["a", "b"]) {
    await pg.ensureDatabase(name);
    const db = open(pg.connectionUrl(name));
    await db.execute("CREATE TABLE t (id int PRIMARY KEY)");
    await db.execute("INSERT INTO t VALUES (1)");
  }
  a = dbs[0]!;
  await pgbackrest.stanzaCreate();
  await pgbackrest.check();
});

test("full, then incremental backup; info shows the chain with LSNs", async (t) => {
  full = await timed("full backup", t, () => pgbackrest.backup("full"));
  await a.execute("INSERT INTO t VALUES (2), (3)");
  incr = await timed("incremental backup", t, () => pgbackrest.backup("incr"));

  assert.equal(full.type, "full");
  assert.equal(incr.type, "incr");
  assert.equal(incr.prior, full.label);
  assert.deepEqual(incr.references, [full.label]);
  assert.ok(incr.label.startsWith(`${full.label}_`));
  for (const b of [full, incr]) {
    assert.match(b.lsn.start, /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.ok(lsnToBigInt(b.lsn.start) <= lsnToBigInt(b.lsn.stop), `${b.label}: start before stop`);
    assert.ok(b.startedAt.getTime() <= b.stoppedAt.getTime());
  }
  assert.ok(lsnToBigInt(full.lsn.stop) < lsnToBigInt(incr.lsn.start), "the incremental comes after the full");
  assert.ok(incr.size.repositoryDelta < full.size.repositoryDelta, "the incremental stores less");
  t.diagnostic(
    `full stored ${full.size.repositoryDelta} bytes, incremental ${incr.size.repositoryDelta} bytes`,
  );

  const info = await pgbackrest.info();
  assert.deepEqual(
    info.backups.map((b) => b.label),
    [full.label, incr.label],
  );
  assert.equal(info.status.code, 0);
  const range = info.archive[0];
  assert.ok(range?.min && range.max && range.min <= incr.wal.start && incr.wal.stop <= range.max);
  const one = await pgbackrest.info({ set: incr.label });
  assert.deepEqual(one.backups[0]?.databases?.map((d) => d.name).sort(), ["a", "b", "postgres"]);
});

test("restore database a alone from the incremental: the rows at that backup, and no b", async (t) => {
  const restored = await restoredRows(t, "backup set", { set: incr.label });
  assert.deepEqual(restored.rows, [1, 2, 3]);
  assert.deepEqual(restored.databases, ["a"]);
  assert.match(String(restored.other), /database "b" does not exist/);
  // The live cluster is untouched, and still has b.
  assert.deepEqual(await ids(pg.connectionUrl("b")), [1]);
});

test("restore to a restore point: exactly the rows before it", async (t) => {
  await a.execute("INSERT INTO t VALUES (4)");
  await a.query("SELECT pg_create_restore_point('cp1')");
  await a.execute("INSERT INTO t VALUES (5)");
  await pgbackrest.check(); // switches WAL and waits until the segment is in the repository
  const restored = await restoredRows(t, "restore point", { target: { type: "name", name: "cp1" } });
  assert.deepEqual(restored.rows, [1, 2, 3, 4]);
  assert.deepEqual(restored.databases, ["a"]);
});

test("restore to a time between two commits: exactly the first", async (t) => {
  await a.execute("INSERT INTO t VALUES (6)");
  // The server's clock after row 6 committed and before row 7 began, with microseconds.
  const [at] = await a.query<{ now: string }>("SELECT clock_timestamp()::text AS now");
  await a.execute("INSERT INTO t VALUES (7)");
  await pgbackrest.check();
  const restored = await restoredRows(t, "time", { target: { type: "time", time: at!.now } });
  assert.deepEqual(restored.rows, [1, 2, 3, 4, 5, 6]);
});

test("verify finds a damaged file in the repository", async (t) => {
  const clean = await timed("verify", t, () => pgbackrest.verify());
  assert.equal(clean.ok, true, clean.text);
  assert.deepEqual(
    clean.backups.map((b) => [b.label, b.status]),
    [
      [full.label, "valid"],
      [incr.label, "valid"],
    ],
  );

  // Flip bytes in the middle of database a's largest file in the full backup.
  const oid = (await pgbackrest.info({ set: full.label })).backups[0]?.databases?.find(
    (d) => d.name === "a",
  )?.oid;
  const dir = join(pgbackrest.repoPath, "backup", STANZA, full.label, "pg_data", "base", String(oid));
  const [victim] = readdirSync(dir)
    .map((name) => ({ name, size: statSync(join(dir, name)).size }))
    .sort((x, y) => y.size - x.size);
  assert.ok(victim && victim.size > 64, "a file to damage");
  const bytes = readFileSync(join(dir, victim.name));
  for (let i = bytes.length >> 1; i < (bytes.length >> 1) + 16; i++) bytes[i] = bytes[i]! ^ 0xff;
  writeFileSync(join(dir, victim.name), bytes);

  const damaged = await pgbackrest.verify();
  assert.equal(damaged.ok, false);
  assert.equal(damaged.status, "error");
  const fullReport = damaged.backups.find((b) => b.label === full.label);
  assert.equal(fullReport?.status, "invalid");
  assert.equal(fullReport?.checksumInvalid, 1);
  const named = `${full.label}/pg_data/base/${oid}/${victim.name}`;
  assert.ok(
    damaged.problems.some((p) => p.includes(named)),
    `a problem names ${named}: ${damaged.problems}`,
  );
});

test("expire a backup set", async () => {
  await pgbackrest.expire({ set: incr.label });
  assert.deepEqual(
    (await pgbackrest.info()).backups.map((b) => b.label),
    [full.label],
  );
});

test("failures carry the command, exit code and pgBackRest's message", async () => {
  await assert.rejects(
    pgbackrest.expire({ set: "no-such-label" }),
    (e: unknown) =>
      isLockstepError(e) &&
      e.code === "PGBACKREST_FAILED" &&
      e.metadata.command === "expire" &&
      e.metadata.exitCode === "32" &&
      /not a valid backup label format/.test(e.message),
  );
  const missing = new PgBackRest({
    config: {
      stanza: STANZA,
      repoPath: "/nonexistent",
      stateDir: "/nonexistent",
      cluster: embeddedCluster(pg),
    },
    executable: "/nonexistent/pgbackrest",
  });
  await assert.rejects(
    missing.version(),
    (e: unknown) => isLockstepError(e) && e.code === "PGBACKREST_NOT_INSTALLED",
  );
  const aborted = new AbortController();
  aborted.abort(new Error("stopped by the test"));
  await assert.rejects(pgbackrest.info({ signal: aborted.signal }), /stopped by the test/);
  await assert.rejects(
    pgbackrest.verify({ timeoutMs: 1 }),
    (e: unknown) => isLockstepError(e) && e.code === "PGBACKREST_TIMEOUT",
  );
});
