import assert from "node:assert/strict";
import { test } from "node:test";
import {
  createStaging,
  inspectTarget,
  restoreTargetFor,
  swapIntoPlace,
} from "../../src/backup/restore-target.ts";
import type { NodeEntry } from "../../src/common/config-schema.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import { silentLogger } from "../../src/common/logging.ts";
import {
  bumpWriterEpoch,
  ensureNodeState,
  latestRecoveryRecord,
  nodeStateMigrations,
  stampRestoredDatabase,
} from "../../src/node/node-state.ts";
import { DeduplicationRecovery } from "../../src/participant/deduplication-recovery.ts";
import { lockIdForDatabase, SessionLock } from "../../src/storage/advisory-lock.ts";
import { runMigrations } from "../../src/storage/migrations.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { startTestPostgres } from "../support/postgres.ts";

const pg = await startTestPostgres();
const log = silentLogger();

function entryFor(database: string): NodeEntry {
  const url = pg.connectionUrl(database);
  return {
    name: "participant1",
    kind: "participant",
    port: 1,
    config: {
      name: "participant1",
      port: 1,
      storage: { url, replication: { check: "off", "min-sync-standbys": 1 } },
    },
  } as NodeEntry;
}

async function nodeDb(url: string, incarnationCheck = true) {
  const db = createPgDb({ connectionString: url });
  await runMigrations(db, "participant", nodeStateMigrations);
  if (incarnationCheck) await ensureNodeState(db, "participant1", "participant");
  return db;
}

test("a restore goes to a staging database, is stamped, and replaces the target in one step", async () => {
  await pg.ensureDatabase("node_a");
  const target = await restoreTargetFor(entryFor("node_a"), "/nonexistent", log);
  assert.equal(target.database, "node_a");

  const live = await nodeDb(target.url);
  const before = await ensureNodeState(live, "participant1", "participant");
  let state = await inspectTarget(target);
  assert.deepEqual(
    [state.exists, state.empty, state.lockHeld, state.stagingLeft],
    [true, false, false, false],
  );
  const session = await live.session();
  const lock = new SessionLock(session, lockIdForDatabase("node_a"));
  assert.ok(await lock.tryAcquire());
  assert.equal((await inspectTarget(target)).lockHeld, true, "the node's single-writer lock is seen as held");
  session.release(true);
  await live.close();

  // What pg_restore would produce: the node's tables, from a backup (another incarnation).
  await createStaging(target);
  assert.equal(
    (await inspectTarget(target)).stagingLeft,
    true,
    "a staging database marks an unfinished restore",
  );
  const staged = await nodeDb(target.stagingUrl);
  const stamp = await stampRestoredDatabase(staged, {
    backupSet: "set-1",
    forcedChecks: [],
    minWriterEpoch: 7n,
    recovering: true,
    restoredAtMicros: 1_000n,
  });
  assert.equal(stamp.writerEpoch, 7n, "at least the sequencer's record");
  await staged.close();
  await swapIntoPlace(target);

  state = await inspectTarget(target);
  assert.equal(state.stagingLeft, false);
  assert.deepEqual(state.lastRestore, { backupSet: "set-1", startedSince: false });
  const restored = await nodeDb(target.url);
  const identity = await bumpWriterEpoch(restored);
  assert.equal(identity.incarnation, stamp.incarnation);
  assert.notEqual(identity.incarnation, before.incarnation);
  assert.equal(identity.writerEpoch, 8n);
  assert.deepEqual((await inspectTarget(target)).lastRestore, { backupSet: "set-1", startedSince: true });

  // Deduplication recovery over the record: window from the first post-restore event, then complete.
  const recovery = new DeduplicationRecovery(restored, "reject", () => 5, log);
  await recovery.load();
  assert.equal(recovery.active, true);
  await restored.transaction((tx) => recovery.observe(500n, tx));
  assert.equal(recovery.status()?.replayedToHead, false, "an event before the restore does not count");
  await restored.transaction((tx) => recovery.observe(2_000n, tx));
  assert.equal(recovery.status()?.expectedEnd, "7000");
  assert.throws(
    () => recovery.checkSubmission("c1"),
    (e) => isLockstepError(e, "DEDUPLICATION_STATE_RECOVERING"),
  );
  await restored.transaction((tx) => recovery.observe(7_000n, tx));
  assert.equal(recovery.active, true, "not before a timestamp later than the expected end");
  await restored.transaction((tx) => recovery.observe(7_001n, tx));
  assert.equal(recovery.active, false);
  recovery.checkSubmission("c1");
  assert.equal((await latestRecoveryRecord(restored))?.state, "complete");
  await restored.close();
});
