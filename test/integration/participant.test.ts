import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { isLockstepError, type LockstepError } from "../../src/common/errors.ts";
import { nowMicros } from "../../src/common/time.ts";
import { recomputeAcs } from "../../src/ledger/acs.ts";
import type { LedgerApiBackend, SubmitCommands, Update } from "../../src/participant/ledger-api-backend.ts";
import { allActiveContracts, readUpdates } from "../../src/participant/participant-store.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { type ParticipantNetwork, startParticipantNetwork } from "../support/participant-network.ts";
import { startTestPostgres } from "../support/postgres.ts";
import { waitUntil } from "../support/wait.ts";

// A real sequencer and mediator, alice and carol on participant1, bob on participant2.
const pg = await startTestPostgres();
let net: ParticipantNetwork;
let p1: LedgerApiBackend;
let p2: LedgerApiBackend;
let alice: string;
let bob: string;
let carol: string;

before(async () => {
  net = await startParticipantNetwork(pg, ["participant1", "participant2"]);
  p1 = net.backend("participant1");
  p2 = net.backend("participant2");
  alice = (await p1.allocateParty("alice", "Alice")).party;
  carol = (await p1.allocateParty("carol")).party;
  bob = (await p2.allocateParty("bob")).party;
  // participant1 must also see bob's hosting before it can address him.
  await waitUntil("bob in participant1's parties", async () =>
    (await p1.listParties()).some((p) => p.party === bob),
  );
});

after(async () => {
  await net?.stop();
});

function createIou(owner: string, extra: Partial<SubmitCommands> = {}): SubmitCommands {
  return {
    userId: "app",
    commandId: randomUUID(),
    actAs: [alice],
    command: {
      kind: "create",
      template: "Iou",
      arguments: { issuer: alice, owner, amount: "100.00", currency: "USD" },
    },
    ...extra,
  };
}

function transfer(
  contractId: string,
  actAs: string,
  newOwner: string,
  commandId = randomUUID(),
): SubmitCommands {
  return {
    userId: "app",
    commandId,
    actAs: [actAs],
    command: { kind: "exercise", contractId, choice: "Transfer", argument: { newOwner } },
  };
}

async function collectUpdates(backend: LedgerApiBackend, parties: string[], endInclusive?: bigint) {
  const end = endInclusive ?? (await backend.ledgerEnd()).offset;
  const out: Update[] = [];
  for await (const u of backend.updates(
    { beginExclusive: 0n, endInclusive: end, parties },
    new AbortController().signal,
  ))
    out.push(u);
  return out;
}

async function rejection(promise: Promise<unknown>): Promise<LockstepError> {
  try {
    await promise;
  } catch (error) {
    if (isLockstepError(error)) return error;
    throw error;
  }
  assert.fail("expected a rejection");
}

test("parties: ids in the participant's namespace, listed with their hosts", async () => {
  assert.match(alice, /^alice::1220[0-9a-f]+$/);
  const parties = await p1.listParties();
  const a = parties.find((p) => p.party === alice);
  assert.equal(a?.isLocal, true);
  assert.equal(a?.displayName, "Alice");
  assert.equal(parties.find((p) => p.party === bob)?.isLocal, false);
});

test("create and transfer are visible to both stakeholders and to nobody else", async () => {
  const created = await p1.submitAndWait(createIou(alice));
  assert.equal(created.createdContractIds.length, 1);
  assert.equal(created.completion.status.kind, "succeeded");
  const iou = created.createdContractIds[0] as string;
  const moved = await p1.submitAndWait(transfer(iou, alice, bob));
  assert.deepEqual(moved.archivedContractIds, [iou]);
  const bobsIou = moved.createdContractIds[0] as string;

  // bob's participant commits the transfer too (the verdict reaches every informee participant).
  await waitUntil(
    "a contract in bob's ACS on participant2",
    async () => (await p2.activeContracts({ parties: [bob] })).contracts.length > 0,
  );
  const bobAcs = await p2.activeContracts({ parties: [bob] });
  assert.deepEqual(
    bobAcs.contracts.map((c) => c.contractId),
    [bobsIou],
  );
  assert.deepEqual(bobAcs.contracts[0]?.arguments, {
    issuer: alice,
    owner: bob,
    amount: "100.00",
    currency: "USD",
  });
  const aliceAcs = await p1.activeContracts({ parties: [alice] });
  assert.ok(aliceAcs.contracts.some((c) => c.contractId === bobsIou));
  assert.ok(!aliceAcs.contracts.some((c) => c.contractId === iou));
  // At the create's offset the first Iou was active.
  const before = await p1.activeContracts({ parties: [alice], activeAtOffset: created.offset });
  assert.ok(before.contracts.some((c) => c.contractId === iou));

  // bob sees only the transfer (a create of his Iou); carol on participant1 sees nothing of it.
  const bobUpdates = await collectUpdates(p2, [bob]);
  const transferForBob = bobUpdates.find((u) => u.updateId === moved.updateId);
  assert.ok(transferForBob);
  assert.equal(transferForBob.commandId, "");
  assert.deepEqual(
    transferForBob.events.map((e) => e.kind),
    ["created"],
  );
  assert.ok(!bobUpdates.some((u) => u.updateId === created.updateId));
  const aliceUpdates = await collectUpdates(p1, [alice]);
  const transferForAlice = aliceUpdates.find((u) => u.updateId === moved.updateId);
  assert.deepEqual(
    transferForAlice?.events.map((e) => e.kind),
    ["archived", "created"],
  );
  assert.notEqual(transferForAlice?.commandId, "");
  assert.deepEqual(await collectUpdates(p1, [carol]), []);
  assert.deepEqual((await p1.activeContracts({ parties: [carol] })).contracts, []);

  // Completions per user and party.
  const completions = [];
  const controller = new AbortController();
  for await (const c of p1.completions(
    { beginExclusive: 0n, userId: "app", parties: [alice] },
    controller.signal,
  )) {
    completions.push(c);
    if (c.offset >= moved.offset) break;
  }
  assert.ok(completions.some((c) => c.updateId === moved.updateId && c.status.kind === "succeeded"));
});

test("concurrent double spend: exactly one transfer wins", async () => {
  const { createdContractIds } = await p1.submitAndWait(createIou(alice));
  const iou = createdContractIds[0] as string;
  const results = await Promise.allSettled([
    p1.submitAndWait(transfer(iou, alice, bob)),
    p1.submitAndWait(transfer(iou, alice, carol)),
  ]);
  const won = results.filter((r) => r.status === "fulfilled");
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  assert.equal(won.length, 1, JSON.stringify(lost.map((r) => String(r.reason))));
  assert.equal(lost.length, 1);
  assert.ok(
    ["CONTRACT_NOT_ACTIVE", "LOCAL_VERDICT_LOCKED_CONTRACTS"].includes(
      (lost[0] as PromiseRejectedResult).reason.code,
    ),
    String(lost[0]?.reason),
  );
});

test("deduplication: the same command id again is DUPLICATE_COMMAND, concurrently SUBMISSION_ALREADY_IN_FLIGHT", async () => {
  const commandId = randomUUID();
  const first = await p1.submitAndWait(createIou(alice, { commandId }));
  const duplicate = await rejection(p1.submitAndWait(createIou(alice, { commandId })));
  assert.equal(duplicate.code, "DUPLICATE_COMMAND");
  assert.equal(duplicate.metadata.completionOffset, String(first.offset));

  // A deduplication offset at or after the accepted completion lets the command through again.
  const again = await p1.submitAndWait(
    createIou(alice, { commandId, deduplicationPeriod: { kind: "offset", offset: first.offset } }),
  );
  assert.deepEqual(again.completion.deduplicationPeriod, { kind: "offset", offset: first.offset });
  const byOffset = await rejection(
    p1.submitAndWait(
      createIou(alice, { commandId, deduplicationPeriod: { kind: "offset", offset: first.offset } }),
    ),
  );
  assert.equal(byOffset.code, "DUPLICATE_COMMAND");

  const concurrentId = randomUUID();
  const results = await Promise.allSettled([
    p1.submit(createIou(alice, { commandId: concurrentId })),
    p1.submit(createIou(alice, { commandId: concurrentId })),
  ]);
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  assert.equal(refused.length, 1);
  assert.equal((refused[0] as PromiseRejectedResult).reason.code, "SUBMISSION_ALREADY_IN_FLIGHT");
});

test("bad deduplication periods and offsets after the ledger end are refused", async () => {
  const end = (await p1.ledgerEnd()).offset;
  const tooLong = await rejection(
    p1.submit(createIou(alice, { deduplicationPeriod: { kind: "duration", durationMs: 8 * 86_400_000 } })),
  );
  assert.equal(tooLong.code, "INVALID_DEDUPLICATION_PERIOD");
  const future = await rejection(
    p1.submit(createIou(alice, { deduplicationPeriod: { kind: "offset", offset: end + 100n } })),
  );
  assert.equal(future.code, "INVALID_DEDUPLICATION_PERIOD");
  assert.equal(
    (await rejection(p1.activeContracts({ parties: [alice], activeAtOffset: end + 100n }))).code,
    "OFFSET_AFTER_LEDGER_END",
  );
  const stream = p1.updates({ beginExclusive: end + 100n, parties: [alice] }, new AbortController().signal);
  assert.equal((await rejection(stream[Symbol.asyncIterator]().next())).code, "OFFSET_AFTER_LEDGER_END");
  const old = await rejection(p1.ledgerEnd({ incarnation: "an-older-one" }));
  assert.equal(old.code, "PARTICIPANT_INCARNATION_CHANGED");
});

test("a ledger time outside the tolerance is rejected", async () => {
  const future = await rejection(
    p1.submitAndWait(createIou(alice, { ledgerTime: nowMicros() + 120_000_000n })),
  );
  assert.equal(future.code, "LEDGER_TIME_RECORD_TIME_DELTA_TOO_LARGE");
  // Too far in the past: its max sequencing time has passed, so it can never be sequenced.
  const past = await rejection(
    p1.submitAndWait(createIou(alice, { ledgerTime: nowMicros() - 120_000_000n })),
  );
  assert.equal(past.code, "REQUEST_TIME_OUT");
});

test("a restarted participant keeps its ledger and ACS and continues; the ACS equals the one recomputed from updates", async () => {
  const { createdContractIds } = await p1.submitAndWait(createIou(bob));
  await waitUntil("the new contract in bob's ACS on participant2", async () =>
    (await p2.activeContracts({ parties: [bob] })).contracts.some(
      (c) => c.contractId === createdContractIds[0],
    ),
  );
  const endBefore = await p2.ledgerEnd();
  const acsBefore = await p2.activeContracts({ parties: [bob] });
  await net.restartParticipant("participant2");
  p2 = net.backend("participant2");
  assert.deepEqual(await p2.ledgerEnd(), endBefore);
  assert.deepEqual(await p2.activeContracts({ parties: [bob] }), acsBefore);

  // It continues: bob transfers his Iou back to alice from the restarted participant.
  const back = await p2.submitAndWait(transfer(createdContractIds[0] as string, bob, alice));
  assert.ok(back.offset > endBefore.offset);
  // participant1 commits the transfer on its own time: its updates and its ACS are read below in
  // two statements, so wait for it first (else one read sees the transfer and the other not).
  const returned = back.createdContractIds[0] as string;
  await waitUntil("the transfer committed on participant1", async () =>
    (await net.backend("participant1").activeContracts({ parties: [alice] })).contracts.some(
      (c) => c.contractId === returned,
    ),
  );

  for (const name of ["participant1", "participant2"]) {
    const db = createPgDb({ connectionString: pg.connectionUrl(`${name}_pt`) });
    try {
      const updates = await readUpdates(db, 0n, 2n ** 62n, undefined, 100_000);
      const recomputed = recomputeAcs(updates.map((u) => u.view));
      const stored = await allActiveContracts(db);
      assert.deepEqual(
        [...recomputed.keys()].sort(),
        stored.map((c) => c.contractId).sort(),
        `${name}: the ACS recomputed from its updates equals its stored ACS`,
      );
    } finally {
      await db.close();
    }
  }
});
