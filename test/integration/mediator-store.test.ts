import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type DecidedVerdict,
  InMemoryRequestStore,
  type MediatorInput,
  processMediatorEvent,
} from "../../src/mediator/confirmation-aggregator.ts";
import {
  DbRequestStore,
  markVerdictSequenced,
  mediatorMigrations,
  openRequestCount,
  unsequencedVerdicts,
} from "../../src/mediator/mediator-store.ts";
import { runMigrations } from "../../src/storage/migrations.ts";
import {
  alice,
  bob,
  p1,
  p2,
  request,
  response,
  T0,
  TIMEOUT,
  tick,
  topology,
} from "../support/mediator-fixtures.ts";
import { createTestDb, startTestPostgres } from "../support/postgres.ts";

const pg = await startTestPostgres();

const events: MediatorInput[] = [
  request(T0),
  request(T0 + 1n, [alice]),
  request(T0 + 2n, [bob]),
  response(T0 + 3n, T0, p1, [alice]),
  response(T0 + 4n, T0 + 2n, p2, [bob], { reject: "no" }),
  response(T0 + 5n, T0 + 2n, p2, [bob]), // late
  request(T0 + 6n, [alice, bob], { sender: p2 }), // malformed: p2 claims p1 submitted
  request(T0 + 7n, [alice, bob]),
  response(T0 + 8n, T0 + 7n, p1, [alice]),
  response(T0 + 9n, T0 + 7n, p2, [bob]),
  tick(T0 + TIMEOUT + 2n),
];

test("the database store decides exactly as the in-memory reference, event by event", async () => {
  const db = await createTestDb(pg, "mediator_store");
  await runMigrations(db, "mediator", mediatorMigrations);
  const memory = new InMemoryRequestStore();
  const fromMemory: DecidedVerdict[] = [];
  const fromDb: DecidedVerdict[] = [];
  for (const event of events) {
    fromMemory.push(...(await processMediatorEvent(memory, topology, event)).verdicts);
    const result = await db.transaction((tx) =>
      processMediatorEvent(new DbRequestStore(tx), topology, event),
    );
    fromDb.push(...result.verdicts);
  }
  assert.deepEqual(fromDb, fromMemory);
  assert.deepEqual(
    fromDb.map((v) => [v.requestId - T0, v.outcome.kind]),
    [
      [2n, "reject"],
      [6n, "reject"],
      [7n, "approve"],
      [0n, "timeout"],
      [1n, "timeout"],
    ],
  );
  assert.equal(await openRequestCount(db), 0);

  // Every decided verdict waits to be sent, with the outcome as decided, until its receipt is seen.
  const unsent = await unsequencedVerdicts(db);
  assert.deepEqual(
    unsent,
    [...fromDb].sort((a, b) => Number(a.requestId - b.requestId)),
  );
  await db.transaction((tx) => markVerdictSequenced(tx, T0 + 2n, T0 + TIMEOUT + 10n));
  assert.deepEqual(
    (await unsequencedVerdicts(db)).map((v) => v.requestId - T0),
    [0n, 1n, 6n, 7n],
  );

  // The audit trail names why each response did (not) count.
  const responses = await db.query<{ received_at: bigint; counted: boolean; note: string | null }>(
    "SELECT received_at, counted, note FROM mediator_responses ORDER BY received_at",
  );
  assert.deepEqual(
    responses.map((r) => [r.received_at - T0, r.counted, r.note]),
    [
      [3n, true, null],
      [4n, true, null],
      [5n, false, "request already decided"],
      [8n, true, null],
      [9n, true, null],
    ],
  );
});
