/**
 * `lockstep backup expire` drives pgBackRest's expiry (issue 14), against a real PostgreSQL 15
 * cluster and the real pgbackrest: backups full, incr, full, incr, incr; Lockstep sets (in a real
 * BackupRepository) restoring from some of them; after expiry pgBackRest's `info` holds exactly what
 * the remaining sets need (and the newest full), and the verify tier refuses a set whose backup is
 * gone. Run as root: the cluster and pgBackRest run as `postgres`.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { BackupRepository } from "../../src/backup/backup-repository.ts";
import { expireSets } from "../../src/backup/backup-retention.ts";
import type { Manifest, NodeBackup, PgBackRestRecord } from "../../src/backup/manifest.ts";
import { embeddedCluster, enableArchiving } from "../../src/backup/pgbackrest/embedded-archiving.ts";
import { stanzaPgBackRest } from "../../src/backup/pgbackrest/node-cluster.ts";
import { PgBackRest } from "../../src/backup/pgbackrest/pgbackrest-cli.ts";
import { pgBackRestRepoPath } from "../../src/backup/pgbackrest/pgbackrest-config.ts";
import { PgBackRestEngine } from "../../src/backup/pgbackrest/pgbackrest-engine.ts";
import type { PgBackRestBackup } from "../../src/backup/pgbackrest/pgbackrest-info.ts";
import {
  expirePgBackRest,
  type PgBackRestExpiryContext,
} from "../../src/backup/pgbackrest/pgbackrest-retention.ts";
import { configNodes, configSchema } from "../../src/common/config-schema.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { unsignedManifest } from "../support/manifest-fixture.ts";
import { startTestPostgres } from "../support/postgres.ts";

const pg = await startTestPostgres();
const base = mkdtempSync(join(tmpdir(), "lockstep-pgbackrest-expire-"));
after(() => rmSync(base, { recursive: true, force: true }));

const STANZA = "lockstep-expire";
const NODE = "participant1";
const repositoryDir = join(base, "repository");
const dataDir = join(base, "data");
const logger = silentLogger("test");
// Where the CLI keeps the stanza's state (node-cluster.ts), so the tool taking backups and the one
// `backup expire` makes share one config file.
const pgbackrest = new PgBackRest({
  config: {
    stanza: STANZA,
    repoPath: pgBackRestRepoPath(repositoryDir),
    stateDir: join(dataDir, "pgbackrest", STANZA),
    cluster: embeddedCluster(pg),
  },
  timeoutMs: 120_000,
});
const repository = new BackupRepository(repositoryDir, logger);

/** A config whose participant's database is the test cluster, backed up in STANZA (as `backup expire` reads it). */
function lockstepConfig() {
  return configSchema.parse({
    "data-dir": dataDir,
    synchronizer: {
      id: "sync1",
      sequencer: { name: "sequencer", port: 17001 },
      mediator: { name: "mediator", port: 17002 },
    },
    participants: [
      {
        name: NODE,
        port: 17003,
        "ledger-api": { auth: { type: "off" } },
        backup: {
          engine: "pgbackrest",
          pgbackrest: { stanza: STANZA, "pg-data": pg.dataDir, "socket-dir": pg.dir, "pg-port": pg.port },
        },
      },
    ],
    backup: { repository: repositoryDir, engine: "pgbackrest" },
  });
}

/** What the CLI passes to expireSets. */
function context(): PgBackRestExpiryContext {
  const config = lockstepConfig();
  return {
    repoPath: pgBackRestRepoPath(repositoryDir),
    forStanza: (stanza) => {
      const tool = stanzaPgBackRest(config, configNodes(config), stanza, logger);
      tool.prepare();
      return tool;
    },
  };
}

function record(backup: PgBackRestBackup, setId: string): PgBackRestRecord {
  return {
    name: "pgbackrest",
    stanza: STANZA,
    label: backup.label,
    type: backup.type,
    startLsn: backup.lsn.start,
    stopLsn: backup.lsn.stop,
    database: "a",
    target: { type: "name", name: `lockstep-${setId}`, lsn: backup.lsn.stop },
  };
}

/** A complete, safe set of NODE restoring from `backup`, written into the repository at `at`. */
async function writeSet(at: string, backup: PgBackRestBackup): Promise<Manifest> {
  const id = await repository.beginSet(new Date(at));
  const template = unsignedManifest(id);
  const { format: _format, ...node } = template.nodes[0] as NodeBackup;
  const nodes = [{ ...node, name: NODE, engine: record(backup, id) } as NodeBackup];
  return repository.completeSet({ ...template, manifestVersion: 3, nodes });
}

async function labels(): Promise<string[]> {
  return (await pgbackrest.info()).backups.map((b) => b.label);
}

let f1: PgBackRestBackup;
let f1i1: PgBackRestBackup;
let f2: PgBackRestBackup;
let f2i1: PgBackRestBackup;
let f2i2: PgBackRestBackup;
let setA: Manifest;
let setB: Manifest;
let setC: Manifest;

test("archiving, stanza, and backups full, incr, full, incr, incr", async (t) => {
  await enableArchiving(pg, pgbackrest);
  await pg.ensureDatabase("a");
  const db = createPgDb({ connectionString: pg.connectionUrl("a") });
  after(() => db.close());
  await db.execute("CREATE TABLE t (id int PRIMARY KEY)");
  await pgbackrest.stanzaCreate();
  await pgbackrest.check();
  let row = 0;
  const take = async (type: "full" | "incr") => {
    await db.execute("INSERT INTO t VALUES ($1)", [++row]);
    return pgbackrest.backup(type);
  };
  const started = performance.now();
  f1 = await take("full");
  f1i1 = await take("incr");
  f2 = await take("full");
  f2i1 = await take("incr");
  f2i2 = await take("incr");
  t.diagnostic(`5 backups: ${Math.round(performance.now() - started)} ms`);
  assert.deepEqual(f1i1.references, [f1.label]);
  assert.equal(f2i2.prior, f2i1.label, "the second incr builds on the first");
  assert.deepEqual(f2i2.references.sort(), [f2.label, f2i1.label].sort());
  assert.deepEqual(await labels(), [f1.label, f1i1.label, f2.label, f2i1.label, f2i2.label]);
});

test("dry run: says which backups would go and why, expires nothing", async () => {
  setA = await writeSet("2026-12-01T01:00:00Z", f1i1);
  setB = await writeSet("2026-12-01T02:00:00Z", f2i1);
  setC = await writeSet("2026-12-01T03:00:00Z", f2i2);
  const lines: string[] = [];
  const result = await expireSets(repository, 1, true, [NODE], (l) => lines.push(l), undefined, context());
  assert.deepEqual(
    result.decisions.map((d) => [d.id, d.action]),
    [
      [setC.id, "keep"],
      [setB.id, "delete"],
      [setA.id, "delete"],
    ],
  );
  assert.equal(result.pgbackrest.length, 1);
  const plan = result.pgbackrest[0]!;
  assert.equal(plan.stanza, STANZA);
  assert.deepEqual(
    plan.expired.map((e) => e.label),
    [f1.label, f1i1.label],
  );
  assert.match(plan.expired[1]!.reason, new RegExp(`set ${setA.id}, deleted now, did`));
  assert.deepEqual(
    plan.kept.map((k) => [k.label, k.neededBy]),
    [
      [f2.label, [setC.id]],
      [f2i1.label, [setC.id]],
      [f2i2.label, [setC.id]],
    ],
  );
  assert.ok(lines.some((l) => l.includes(`would expire ${f1.label}`)));
  assert.equal((await labels()).length, 5, "nothing expired");
  assert.equal((await repository.listSets()).length, 3, "nothing deleted");
});

test("expire: the sets go, then the backups only they needed; the deleted set's incr under C's stays", async () => {
  const result = await expireSets(repository, 1, false, [NODE], () => {}, undefined, context());
  assert.deepEqual(result.deleted.sort(), [setA.id, setB.id].sort());
  assert.deepEqual(
    (await repository.listSets()).map((s) => s.id),
    [setC.id],
  );
  assert.deepEqual(
    result.pgbackrest[0]?.expired.map((e) => e.label),
    [f1.label, f1i1.label],
  );
  assert.equal(result.pgbackrest[0]?.error, undefined);
  // Exactly what set C needs: its incr and the two backups it builds on.
  assert.deepEqual(await labels(), [f2.label, f2i1.label, f2i2.label]);
});

test("the verify tier refuses a set whose backup pgBackRest no longer holds", async () => {
  const engine = new PgBackRestEngine(lockstepConfig(), { type: "incr" }, logger);
  const listed = engine.verifyTiers[0]!;
  const artifact = (set: Manifest) => ({
    setDir: repository.setDir(set.id),
    name: "participant1.pgbackrest.json",
    record: set.nodes[0]!.engine as PgBackRestRecord,
  });
  assert.match(await listed.check(artifact(setC)), new RegExp(`lists backup ${f2i2.label}`));
  await assert.rejects(
    listed.check(artifact(setA)),
    (e: unknown) => isLockstepError(e, "PGBACKREST_BACKUP_MISSING") && e.message.includes(f1i1.label),
  );
});

test("a backup taken by hand goes at the next expire; what set C needs stays", async () => {
  const byHand = await pgbackrest.backup("incr");
  const result = await expireSets(repository, 1, false, [NODE], () => {}, undefined, context());
  assert.deepEqual(result.deleted, []);
  assert.deepEqual(
    result.pgbackrest[0]?.expired.map((e) => e.label),
    [byHand.label],
  );
  assert.match(result.pgbackrest[0]!.expired[0]!.reason, /taken by hand/);
  assert.deepEqual(await labels(), [f2.label, f2i1.label, f2i2.label]);
});

test("no set left: only the newest full stays, its incrs go with one `expire --set`", async () => {
  await repository.deleteSet(setC.id);
  const lines: string[] = [];
  const result = await expirePgBackRest({
    context: context(),
    dryRun: false,
    deleted: [setC],
    current: async () => ({ remaining: [], writing: [] }),
    progress: (l) => lines.push(l),
  });
  assert.deepEqual(
    result[0]?.expired.map((e) => e.label),
    [f2i1.label, f2i2.label],
  );
  assert.deepEqual(
    result[0]?.kept.map((k) => [k.label, k.neededBy]),
    [[f2.label, []]],
  );
  assert.match(result[0]!.kept[0]!.reason, /newest full backup/);
  assert.deepEqual(await labels(), [f2.label]);
  // Nothing more to expire: a second run changes nothing.
  const again = await expirePgBackRest({
    context: context(),
    dryRun: false,
    deleted: [],
    current: async () => ({ remaining: [], writing: [] }),
    progress: () => {},
  });
  assert.deepEqual(again[0]?.expired, []);
  assert.deepEqual(await labels(), [f2.label]);
});
