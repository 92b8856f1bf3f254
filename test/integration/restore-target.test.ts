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
    epochUnverified: false,
    recovering: true,
    // The wall clock decides nothing: the anchor (sequencer time) does.
    restoredAtMicros: 999_999_999n,
    anchor: 1_000n,
    anchorSource: "live-sequencer-head",
    expectedEnd: null,
    replacedDatabase: "node_a__replaced_test01",
  });
  assert.equal(stamp.writerEpoch, 7n, "at least the sequencer's record");
  await staged.close();
  assert.equal(await swapIntoPlace(target, "node_a__replaced_test01"), true);

  state = await inspectTarget(target);
  assert.equal(state.stagingLeft, false);
  // The replaced database is kept (old code dropped it), not yet droppable: no resubscription yet.
  assert.deepEqual(
    state.kept.map((k) => [k.database, k.backupSet, k.resubscribed]),
    [["node_a__replaced_test01", "set-1", false]],
  );
  assert.deepEqual(state.lastRestore, { backupSet: "set-1", startedSince: false });
  const restored = await nodeDb(target.url);
  const identity = await bumpWriterEpoch(restored);
  assert.equal(identity.incarnation, stamp.incarnation);
  assert.notEqual(identity.incarnation, before.incarnation);
  assert.equal(identity.writerEpoch, 8n);
  assert.deepEqual((await inspectTarget(target)).lastRestore, { backupSet: "set-1", startedSince: true });

  // Deduplication recovery over the record: window from the anchor (sequencer time), then complete.
  const recovery = new DeduplicationRecovery(restored, "reject", () => 5, log);
  await recovery.load();
  assert.equal(recovery.active, true);
  const ev = (timestamp: bigint, messageId = "m") => ({ timestamp, messageId });
  await restored.transaction((tx) => recovery.observe(ev(500n), tx));
  assert.equal(recovery.status()?.replayedToHead, false, "an event before the anchor does not count");
  await restored.transaction((tx) => recovery.observe(ev(2_000n), tx));
  assert.equal(recovery.status()?.expectedEnd, "6000", "anchor 1000 + 5 ms tolerance");
  assert.throws(
    () => recovery.checkSubmission("c1"),
    (e) => isLockstepError(e, "DEDUPLICATION_STATE_RECOVERING"),
  );
  await restored.transaction((tx) => recovery.observe(ev(6_000n), tx));
  assert.equal(recovery.active, true, "not before a timestamp later than the expected end");
  await restored.transaction((tx) => recovery.observe(ev(6_001n), tx));
  assert.equal(recovery.active, false);
  recovery.checkSubmission("c1");
  assert.equal((await latestRecoveryRecord(restored))?.state, "complete");
  await restored.close();
});

test("without an anchor the first time proof the node requested after start anchors the window", async () => {
  await pg.ensureDatabase("node_b");
  const db = await nodeDb(pg.connectionUrl("node_b"));
  await stampRestoredDatabase(db, {
    backupSet: "set-2",
    forcedChecks: [],
    minWriterEpoch: 3n,
    epochUnverified: true,
    recovering: true,
    restoredAtMicros: 1n,
    anchor: null,
    anchorSource: null,
    expectedEnd: null,
    replacedDatabase: null,
  });
  const record = await latestRecoveryRecord(db);
  assert.equal(record?.epochUnverified, true, "the sequencer's record was not known: no guessed margin");
  const recovery = new DeduplicationRecovery(db, "reject", () => 5, log);
  await recovery.load();
  assert.match(recovery.status()?.waitingFor ?? "", /anchor unknown/);
  // Events of any time do not anchor it, however late: only a time proof requested since start.
  await db.transaction((tx) => recovery.observe({ timestamp: 50_000n, messageId: "other" }, tx));
  assert.equal(recovery.status()?.anchor, null);
  recovery.timeProofRequested("proof-1");
  await db.transaction((tx) => recovery.observe({ timestamp: 60_000n, messageId: "proof-1" }, tx));
  const s = recovery.status();
  assert.deepEqual([s?.anchor, s?.anchorSource, s?.expectedEnd], ["60000", "first-observed", "65000"]);
  assert.match(s?.waitingFor ?? "", /after 65000/);
  await db.transaction((tx) => recovery.observe({ timestamp: 65_001n, messageId: "x" }, tx));
  assert.equal(recovery.active, false);
  const done = await latestRecoveryRecord(db);
  assert.deepEqual([done?.anchor, done?.anchorSource, done?.state], [60_000n, "first-observed", "complete"]);
  await db.close();
});
