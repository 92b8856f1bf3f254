import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { nowMicros } from "../../src/common/time.ts";
import type {
  GetUpdatesRequestSchema,
  GetUpdatesResponse,
} from "../../src/gen/lockstep/ledger/v1/update_service_pb.ts";
import { interpret } from "../../src/ledger/interpreter.ts";
import { visibleTo } from "../../src/ledger/transaction-view.ts";
import { LedgerNotifier } from "../../src/participant/ledger-notifier.ts";
import { followLedger } from "../../src/participant/ledger-stream.ts";
import {
  insertContracts,
  nextOffset,
  readMigrationMarkers,
  readUpdates,
  viewToText,
} from "../../src/participant/participant-store.ts";
import type { Db } from "../../src/storage/db.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { iouArgs, type LedgerClients, ledgerClients } from "../support/ledger-client.ts";
import { createIouCommand } from "../support/ledger-network.ts";
import { type ParticipantNetwork, startParticipantNetwork } from "../support/participant-network.ts";
import { startTestPostgres } from "../support/postgres.ts";

// The Ledger API across a synchronizer migration (issue 13): the marker takes an offset of its own
// and every update and completion stream carries it in offset order; a repair update streams as a
// transaction; the ACS keeps the migrated contracts. The marker and the repair are written straight
// into the participant's database, as the offline `lockstep repair …` commands write them, while
// the participant runs (its streams poll the ledger end, so they pick them up without a restart).
const pg = await startTestPostgres();
let net: ParticipantNetwork;
let clients: LedgerClients;
let db: Db;
let alice: string;
let carol: string;
const USER = "marker-app";

interface Ledger {
  /** Transactions before the marker, the marker, the repair after it, a transaction after that. */
  before: { offset: bigint; updateId: string; contractId: string }[];
  marker: bigint;
  repair: { offset: bigint; updateId: string; contractId: string };
  later: { offset: bigint; updateId: string; contractId: string };
  /** What a GetUpdates stream opened before the migration delivered. */
  live: Promise<GetUpdatesResponse[]>;
}
let ledger: Ledger;

before(async () => {
  net = await startParticipantNetwork(pg, ["participant1"]);
  clients = ledgerClients(net.runtime("participant1").port);
  db = createPgDb({ connectionString: pg.connectionUrl("participant1_pt") });
  alice = (await clients.parties.allocateParty({ partyIdHint: "alice" })).party;
  carol = (await clients.parties.allocateParty({ partyIdHint: "carol" })).party;
  const commit = async (commandId: string) => {
    const r = await clients.commands.submitAndWait({
      commands: createIouCommand(commandId, alice, alice, { userId: USER }),
    });
    return { offset: r.offset, updateId: r.updateId, contractId: r.createdContractIds[0] as string };
  };
  const before = [await commit("before-1"), await commit("before-2")];
  // Opened before the migration, it must wait for the marker and what follows. It starts one
  // transaction back, so its first item (before-2) signals that it is open and live.
  let opened!: () => void;
  const open = new Promise<void>((resolve) => {
    opened = resolve;
  });
  const live = collectUpdates(
    { beginExclusive: (before[0] as { offset: bigint }).offset, parties: [alice] },
    (item) => item.commandId === "after-1",
    () => opened(),
  ).then((seen) => seen.slice(1));
  // Awaited by a test later; a failure meanwhile must not count as unhandled.
  live.catch(() => {});
  await open;
  const marker = await writeMigrationMarker();
  const repair = await writeRepairCreate(alice);
  const later = await commit("after-1");
  ledger = { before, marker, repair, later, live };
});

after(async () => {
  await db?.close();
  await net?.stop();
});

/** The migration's marker as synchronizer-migration.ts writes it: one transaction, the next offset. */
async function writeMigrationMarker(): Promise<bigint> {
  return db.transaction(async (tx) => {
    const moved = await tx.execute(
      "UPDATE participant_contracts SET synchronizer_id = 'sync2' WHERE archived_offset IS NULL",
    );
    const offset = await nextOffset(tx);
    // parties_announced_at set: the running participant must not take this for a pending announcement.
    await tx.execute(
      `INSERT INTO participant_synchronizer_migrations (ledger_offset, from_synchronizer, to_synchronizer,
         forced, migrated_at, old_events, contracts_moved, abandoned_command_ids, parties_announced_at)
       VALUES ($1, 'sync1', 'sync2', false, $2, 7, $3, '{}', now())`,
      [offset, 1_700_000_000_000_001n, moved],
    );
    return offset;
  });
}

/** A `lockstep repair add` of one Iou: an update of kind 'repair' without command or request. */
async function writeRepairCreate(party: string) {
  const ledgerTime = nowMicros();
  const transaction = interpret(
    { kind: "create", template: "Iou", arguments: iouArgs(party, party, "42.00"), actAs: [party] },
    {
      ledgerTime,
      submitter: { participant: "repair", userId: "", commandId: "", submissionId: randomUUID() },
      lookupContract: () => undefined,
    },
  );
  const view = visibleTo(transaction, [party]);
  assert.ok(view);
  const updateId = `repair-${randomUUID()}`;
  const offset = await db.transaction(async (tx) => {
    const offset = await nextOffset(tx);
    await insertContracts(tx, view.createdContracts, offset);
    await tx.execute(
      `INSERT INTO participant_updates
         (ledger_offset, update_id, request_id, record_time, ledger_time, command_id, act_as, informees, view, kind)
       VALUES ($1, $2, NULL, $3, $3, '', '{}', $4, $5, 'repair')`,
      [offset, updateId, ledgerTime, [...transaction.informees], viewToText(view)],
    );
    return offset;
  });
  return { offset, updateId, contractId: view.createdContracts[0]?.contractId as string };
}

type UpdatesInit = MessageInitShape<typeof GetUpdatesRequestSchema>;
type Item = { kind: "transaction" | "marker"; offset: bigint; updateId?: string; commandId?: string };

function itemOf(r: GetUpdatesResponse): Item {
  if (r.update.case === "synchronizerMigration") return { kind: "marker", offset: r.update.value.offset };
  assert.equal(r.update.case, "transaction");
  const tx = r.update.value;
  return { kind: "transaction", offset: tx.offset, updateId: tx.updateId, commandId: tx.commandId };
}

/** GetUpdates until endInclusive, or (unbounded) until an item is the last one wanted. */
/**
 * A stream's deadline as a signal, not `timeoutMs`: connect-es keeps a `timeoutMs` timer running when
 * the caller leaves a stream early (its stream iterator has no `return`), and that timer held this
 * process open for 30 s after the last test. AbortSignal.timeout does not hold a process open.
 */
const withDeadline = (signal: AbortSignal) => AbortSignal.any([signal, AbortSignal.timeout(30_000)]);

async function collectUpdates(
  request: UpdatesInit,
  last?: (item: Item) => boolean,
  onItem?: () => void,
): Promise<GetUpdatesResponse[]> {
  const abort = new AbortController();
  const seen: GetUpdatesResponse[] = [];
  try {
    for await (const r of clients.updates.getUpdates(request, { signal: withDeadline(abort.signal) })) {
      seen.push(r);
      onItem?.();
      if (last?.(itemOf(r))) break;
    }
  } finally {
    abort.abort();
  }
  return seen;
}

const items = async (request: UpdatesInit) => (await collectUpdates(request)).map(itemOf);

test("GetUpdates from 0: transactions, the marker, the repair, transactions, offsets strictly increasing", async () => {
  const { before, marker, repair, later } = ledger;
  const end = (await clients.state.getLedgerEnd({})).offset;
  assert.equal(end, later.offset);
  const all = await items({ beginExclusive: 0n, endInclusive: end, parties: [alice] });
  assert.deepEqual(
    all.map((i) => [i.kind, i.offset]),
    [
      ...before.map((t) => ["transaction", t.offset]),
      ["marker", marker],
      ["transaction", repair.offset],
      ["transaction", later.offset],
    ],
  );
  for (let i = 1; i < all.length; i++) {
    assert.ok((all[i] as Item).offset > (all[i - 1] as Item).offset, "strictly increasing, no reuse");
  }
  // The marker took the offset after the last transaction; nothing was handed out twice.
  assert.equal(marker, (before[1] as { offset: bigint }).offset + 1n);
  assert.equal(repair.offset, marker + 1n);
  assert.equal(later.offset, repair.offset + 1n);

  const [response] = (
    await collectUpdates({ beginExclusive: marker - 1n, endInclusive: marker, parties: [alice] })
  ).filter((r) => r.update.case === "synchronizerMigration");
  assert.equal(response?.update.case, "synchronizerMigration");
  const m = response.update.value;
  assert.deepEqual(
    [m.offset, m.fromSynchronizerId, m.toSynchronizerId, m.forced, m.contractsMoved, m.abandonedSubmissions],
    [marker, "sync1", "sync2", false, 2n, 0n],
  );
  assert.deepEqual(m.migratedAt && [m.migratedAt.seconds, m.migratedAt.nanos], [1_700_000_000n, 1000]);
});

test("resuming before the marker gets it and what follows; at the marker only what follows", async () => {
  const { before, marker, repair, later } = ledger;
  const first = (before[0] as { offset: bigint }).offset;
  assert.deepEqual(
    (await items({ beginExclusive: first, endInclusive: later.offset, parties: [alice] })).map(
      (i) => i.offset,
    ),
    [(before[1] as { offset: bigint }).offset, marker, repair.offset, later.offset],
  );
  assert.deepEqual(
    (await items({ beginExclusive: marker, endInclusive: later.offset, parties: [alice] })).map(
      (i) => i.offset,
    ),
    [repair.offset, later.offset],
  );
  // end_inclusive before the marker excludes it; at the marker, the marker is the last.
  const upToBefore = await items({ beginExclusive: 0n, endInclusive: marker - 1n, parties: [alice] });
  assert.ok(upToBefore.every((i) => i.kind === "transaction"));
  const upToMarker = await items({ beginExclusive: 0n, endInclusive: marker, parties: [alice] });
  assert.deepEqual(upToMarker.at(-1), { kind: "marker", offset: marker });
});

test("every subscriber gets the marker, whatever its party filter; a stream opened before gets it live", async () => {
  const { marker, repair, later } = ledger;
  assert.deepEqual(await items({ beginExclusive: 0n, endInclusive: later.offset, parties: [carol] }), [
    { kind: "marker", offset: marker },
  ]);
  assert.deepEqual(await items({ beginExclusive: 0n, endInclusive: later.offset, parties: [] }), [
    { kind: "marker", offset: marker },
  ]);
  assert.deepEqual(
    (await ledger.live).map(itemOf).map((i) => [i.kind, i.offset]),
    [
      ["marker", marker],
      ["transaction", repair.offset],
      ["transaction", later.offset],
    ],
  );
});

test("a repair update streams as a transaction without a command", async () => {
  const { repair } = ledger;
  const [response] = await collectUpdates({
    beginExclusive: repair.offset - 1n,
    endInclusive: repair.offset,
    parties: [alice],
  });
  assert.equal(response?.update.case, "transaction");
  const tx = response.update.value;
  assert.equal(tx.updateId, repair.updateId);
  assert.equal(tx.commandId, "");
  const event = tx.events[0]?.event;
  assert.equal(tx.events.length, 1);
  assert.equal(event?.case, "created");
  assert.equal(event.value.contract?.contractId, repair.contractId);
  assert.deepEqual(event.value.contract?.arguments, iouArgs(alice, alice, "42.00"));
  assert.deepEqual(event.value.witnessParties, [alice]);
});

test("CompletionStream: the user's completions and the marker, in offset order; other users get the marker", async () => {
  const { before, marker, later } = ledger;
  const completions = async (userId: string, stopAt: bigint) => {
    const abort = new AbortController();
    const seen: [string, bigint][] = [];
    try {
      for await (const r of clients.completions.completionStream(
        { userId, parties: [alice], beginExclusive: 0n },
        { signal: withDeadline(abort.signal) },
      )) {
        assert.ok(r.response.value);
        seen.push([r.response.case ?? "", r.response.value.offset]);
        if (r.response.value.offset >= stopAt) break;
      }
    } finally {
      abort.abort();
    }
    return seen;
  };
  assert.deepEqual(await completions(USER, later.offset), [
    ...before.map((t): [string, bigint] => ["completion", t.offset]),
    ["synchronizerMigration", marker],
    ["completion", later.offset],
  ]);
  assert.deepEqual(await completions("another-app", marker), [["synchronizerMigration", marker]]);
});

test("GetActiveContracts keeps the migrated contracts; offsets after the ledger end are still refused", async () => {
  const { before, marker, repair, later } = ledger;
  const acs = await clients.state.getActiveContracts({ parties: [alice] });
  assert.deepEqual(
    acs.contracts.map((c) => c.contractId),
    [...before.map((t) => t.contractId), repair.contractId, later.contractId],
  );
  const atMarker = await clients.state.getActiveContracts({ parties: [alice], activeAtOffset: marker });
  assert.deepEqual(
    atMarker.contracts.map((c) => c.contractId),
    before.map((t) => t.contractId),
  );
  await assert.rejects(
    collectUpdates({ beginExclusive: later.offset + 1n, parties: [alice] }),
    (e: unknown) => fromConnectError(e)?.code === "OFFSET_AFTER_LEDGER_END",
  );
});

test("the merge of transactions and markers does not depend on the page size", async () => {
  const { before, marker, repair, later } = ledger;
  const expected = [...before.map((t) => t.offset), marker, repair.offset, later.offset];
  for (const pageSize of [1, 2, 3]) {
    const offsets: bigint[] = [];
    for await (const item of followLedger<{ offset: bigint }>({
      db,
      notifier: new LedgerNotifier(),
      signal: new AbortController().signal,
      beginExclusive: 0n,
      endInclusive: later.offset,
      pageSize,
      sources: [
        (after, upTo, limit) => readUpdates(db, after, upTo, [alice], limit),
        (after, upTo, limit) => readMigrationMarkers(db, after, upTo, limit),
      ],
    }))
      offsets.push(item.offset);
    assert.deepEqual(offsets, expected, `pages of ${pageSize}`);
  }
});
