import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  bumpWriterEpoch,
  ensureNodeState,
  nodeStateMigrations,
  raiseWriterEpochAbove,
  unverifiedWriterEpoch,
} from "../../src/node/node-state.ts";
import type { Db } from "../../src/storage/db.ts";
import { runMigrations } from "../../src/storage/migrations.ts";
import { createTestDb, startTestPostgres } from "../support/postgres.ts";

// The node side of writer fencing (docs/design.md §3): activations, and the epoch a restore could not
// verify raised above the sequencer's record. The flag is set by SQL as `restore apply` does.

const pg = await startTestPostgres();
const dbs: Db[] = [];
after(async () => {
  for (const db of dbs) await db.close();
});

async function nodeDb(): Promise<Db> {
  const db = await createTestDb(pg, "node_epoch");
  dbs.push(db);
  await runMigrations(db, "participant", nodeStateMigrations);
  await ensureNodeState(db, "participant1", "participant");
  return db;
}

async function flagRestore(db: Db, epoch: bigint): Promise<void> {
  await db.execute("UPDATE node_state SET writer_epoch = $1", [epoch]);
  await db.execute(
    `INSERT INTO recovery_records
       (backup_set, restored_at_micros, previous_incarnation, incarnation, state, epoch_unverified)
     VALUES ('set-1', 0, 'a', 'b', 'complete', true)`,
  );
}

test("every activation bumps the epoch and draws a new activation id, which ensureNodeState reads", async () => {
  const db = await nodeDb();
  const first = await bumpWriterEpoch(db);
  const second = await bumpWriterEpoch(db);
  assert.equal(second.writerEpoch, first.writerEpoch + 1n);
  assert.ok(first.writerActivation.length > 0 && second.writerActivation !== first.writerActivation);
  assert.equal(
    (await ensureNodeState(db, "participant1", "participant")).writerActivation,
    second.writerActivation,
  );
});

test("an unverified epoch is raised to exactly the sequencer's record + 1, and the flag cleared", async () => {
  const db = await nodeDb();
  await flagRestore(db, 3n);
  const activated = await bumpWriterEpoch(db); // 4, below the record
  const id = await unverifiedWriterEpoch(db);
  assert.ok(id !== undefined);
  const raised = await raiseWriterEpochAbove(db, id, 7n);
  assert.equal(raised.writerEpoch, 8n);
  assert.notEqual(raised.writerActivation, activated.writerActivation, "a new activation");
  assert.equal(await unverifiedWriterEpoch(db), undefined);
});

test("an epoch already above the record is kept, with its activation; the flag is cleared", async () => {
  const db = await nodeDb();
  await flagRestore(db, 5n);
  const activated = await bumpWriterEpoch(db); // 6
  const raised = await raiseWriterEpochAbove(db, (await unverifiedWriterEpoch(db)) as bigint, 5n);
  assert.deepEqual(
    [raised.writerEpoch, raised.writerActivation],
    [activated.writerEpoch, activated.writerActivation],
  );
  assert.equal(await unverifiedWriterEpoch(db), undefined);
});
