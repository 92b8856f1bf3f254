/**
 * A malicious member against the confirmation protocol on a real network (docs/design.md §2
 * "Transactions"): mallory, a member hosting parties of its own, and eve, a member hosting none,
 * send raw requests and responses through the sequencer. Each case checks what the mediator decided
 * and that participant1 (alice's) committed nothing it should not, and that honest traffic goes on.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import type pg from "pg";
import { nowMicros } from "../../src/common/time.ts";
import { ConfirmationRequestSchema } from "../../src/gen/lockstep/protocol/v1/confirmation_pb.ts";
import type { ActiveContract } from "../../src/ledger/contract.ts";
import type { Command } from "../../src/ledger/transaction.ts";
import { parseTransaction } from "../../src/ledger/transaction-codec.ts";
import { protocolPayload } from "../../src/protocol/confirmation-messages.ts";
import { allocation } from "../support/member-attacks.ts";
import { type ParticipantNetwork, startParticipantNetwork } from "../support/participant-network.ts";
import { startTestPostgres } from "../support/postgres.ts";
import {
  confirmationRequest,
  createIou,
  iou,
  queryOnce,
  responsePayload,
} from "../support/protocol-attacks.ts";
import { TestMember } from "../support/sequencer-harness.ts";
import { waitFor } from "../support/wait.ts";

const cluster = await startTestPostgres();
let net: ParticipantNetwork;
let p1: string;
let mediator: string;
let alice: string;
const mallory = new TestMember("mallory");
const eve = new TestMember("eve");
const m1 = `m1::${mallory.namespace.fingerprint}`;
const m2 = `m2::${mallory.namespace.fingerprint}`;

before(async () => {
  net = await startParticipantNetwork(cluster, ["participant1"]);
  alice = (await net.backend("participant1").allocateParty("alice")).party;
  await mallory.register(net.sequencer.client);
  await eve.register(net.sequencer.client);
  for (const hint of ["m1", "m2"])
    await net.sequencer.client.submitTopology({ transactions: [allocation(mallory, hint)] });
  await waitFor("participant1 sees mallory's parties", async () => {
    const parties = (await net.backend("participant1").listParties()).map((p) => p.party);
    return parties.includes(m1) && parties.includes(m2) ? true : undefined;
  });
  const members = (await net.sequencer.client.getSequencerStatus({})).members.map((m) => m.member);
  p1 = members.find((m) => m.startsWith("participant1::")) as string;
  mediator = members.find((m) => m.startsWith("mediator::")) as string;
});
after(async () => {
  await net?.stop();
});

const query = <R extends pg.QueryResultRow>(database: string, sql: string, values: unknown[]) =>
  queryOnce<R>(cluster.connectionUrl(database), sql, values);

async function send(member: TestMember, recipients: string[], payload: Uint8Array): Promise<void> {
  await net.sequencer.client.send(member.sendRequest({ recipients, payload }));
}

/** A signed response of `member` to the mediator; `participant`/`signWith` forge it. */
const respond = (
  member: TestMember,
  r: { requestId: bigint; rootHash: Buffer },
  parties: string[],
  verdict: "approve" | "reject",
  forge: { participant?: string; signWith?: TestMember } = {},
) => send(member, [mediator], responsePayload(member, r, parties, verdict, forge));

interface MediatorRow {
  request_id: string;
  state: string;
  outcome: { kind: string; code?: string; unresponsiveParties?: string[] } | null;
}
const mediatorRow = async (rootHash: Buffer) =>
  (
    await query<MediatorRow>(
      "mediator_pt",
      "SELECT request_id::text, state, outcome FROM mediator_requests WHERE root_hash = $1",
      [rootHash],
    )
  )[0];
const opened = async (rootHash: Buffer) => {
  const row = await waitFor("the mediator has the request", () => mediatorRow(rootHash));
  return { requestId: BigInt(row.request_id), rootHash };
};
const verdict = async (rootHash: Buffer) =>
  (
    await waitFor("the mediator's verdict", async () => {
      const row = await mediatorRow(rootHash);
      return row?.state === "decided" ? row : undefined;
    })
  ).outcome;
/** participant1's row of the request once decided (it has had the verdict). */
const p1Decided = (rootHash: Buffer) =>
  waitFor("participant1 decided the request", async () => {
    const rows = await query<{ state: string; local_rejection: string | null }>(
      "participant1_pt",
      "SELECT state, local_rejection FROM participant_requests WHERE root_hash = $1",
      [rootHash],
    );
    const row = rows[0];
    return row && row.state !== "pending" ? row : undefined;
  });
const responses = async (requestId: bigint) =>
  await query<{ sender: string; verdict: string; counted: boolean; note: string | null }>(
    "mediator_pt",
    "SELECT sender, verdict, counted, note FROM mediator_responses WHERE request_id = $1 ORDER BY received_at",
    [requestId],
  );

/** Honest traffic goes on: alice's own create commits, and the ledger end moves by it. */
async function honestCreateCommits(): Promise<void> {
  const backend = net.backend("participant1");
  const end = (await backend.ledgerEnd()).offset;
  const command = { kind: "create" as const, template: "Iou", arguments: iou(alice, alice, "7.00") };
  await backend.submitAndWait({ userId: "app", commandId: randomUUID(), actAs: [alice], command });
  assert.ok((await backend.ledgerEnd()).offset > end);
}
const aliceContracts = async () =>
  (await net.backend("participant1").activeContracts({ parties: [alice] })).contracts.length;

test("a request acting for a party its sender does not host is rejected by the party's participant", async () => {
  // Before: participant1 validated the transaction's authorization by act-as alone, so any member
  // could create (or exercise) as alice. mallory hosts parties of its own; eve hosts none.
  for (const attacker of [mallory, eve]) {
    const end = await net.backend("participant1").ledgerEnd();
    const contracts = await aliceContracts();
    // To mallory's own party, or (eve hosting none) to alice herself: either way alice never asked.
    const owner = attacker === mallory ? m1 : alice;
    const { rootHash, payload } = confirmationRequest(
      attacker.id,
      createIou(iou(alice, owner, "1000.00"), [alice]),
    );
    await send(attacker, [p1, mediator], payload);
    const outcome = await verdict(rootHash);
    assert.equal(outcome?.kind, "reject", attacker.name);
    assert.equal(outcome?.code, "LOCAL_VERDICT_MALFORMED_REQUEST");
    const local = await p1Decided(rootHash);
    assert.equal(local.state, "rejected");
    assert.match(local.local_rejection ?? "", /does not host the act-as parties/);
    assert.deepEqual(await net.backend("participant1").ledgerEnd(), end);
    assert.equal(await aliceContracts(), contracts);
  }
  await honestCreateCommits();
});

test("a request naming another submitting participant than its sender is rejected by the mediator", async () => {
  const end = await net.backend("participant1").ledgerEnd();
  // Everything as participant1 would send it, but sequenced from mallory.
  const { rootHash, payload } = confirmationRequest(p1, createIou(iou(alice, m1), [alice]));
  await send(mallory, [p1, mediator], payload);
  const outcome = await verdict(rootHash);
  assert.equal(outcome?.code, "MEDIATOR_RECEIVED_MALFORMED_MESSAGE");
  assert.equal((await p1Decided(rootHash)).state, "rejected");
  assert.deepEqual(await net.backend("participant1").ledgerEnd(), end);
});

test("a request kept from an informee's participant is rejected by the mediator", async () => {
  // m1 may give alice an Iou, but alice's participant must see the request: else the verdict
  // would commit a contract of alice's that participant1 never learns of.
  const end = await net.backend("participant1").ledgerEnd();
  const { rootHash, payload } = confirmationRequest(mallory.id, createIou(iou(m1, alice), [m1]));
  await send(mallory, [mediator], payload);
  await respond(mallory, await opened(rootHash), [m1], "approve"); // m1's own host approves
  const outcome = await verdict(rootHash);
  assert.equal(outcome?.code, "MEDIATOR_RECEIVED_MALFORMED_MESSAGE");
  assert.deepEqual(await net.backend("participant1").ledgerEnd(), end);
});

test("a payload that does not hash to the request's root hash is never committed, even approved", async () => {
  // mallory confirms for m1, the only confirming party, so the mediator approves; participant1,
  // an observer's participant, must not commit a transaction that is not the one approved.
  const end = await net.backend("participant1").ledgerEnd();
  const contracts = await aliceContracts();
  const { payload, rootHash } = confirmationRequest(mallory.id, createIou(iou(m1, alice), [m1]), {
    rootHash: randomBytes(32),
  });
  await send(mallory, [p1, mediator], payload);
  await respond(mallory, await opened(rootHash), [m1], "approve");
  assert.equal((await verdict(rootHash))?.kind, "approve");
  const local = await p1Decided(rootHash);
  assert.equal(local.state, "rejected");
  assert.match(local.local_rejection ?? "", /LOCAL_VERDICT_MALFORMED_PAYLOAD/);
  assert.deepEqual(await net.backend("participant1").ledgerEnd(), end);
  assert.equal(await aliceContracts(), contracts);
  await honestCreateCommits();
});

test("a request declaring only the submitter's parties as confirming is never committed by the others", async () => {
  // alice issues m1 an Iou; m1 may transfer it, but alice, its signatory, must confirm (she checks
  // it is still active). mallory declares m1 alone as confirming: the mediator waits for m1 only.
  const backend = net.backend("participant1");
  const command = { kind: "create" as const, template: "Iou", arguments: iou(alice, m1, "5.00") };
  await backend.submitAndWait({ userId: "app", commandId: randomUUID(), actAs: [alice], command });
  const committed = await query<{ transaction: Buffer }>(
    "participant1_pt",
    "SELECT transaction FROM participant_requests WHERE state = 'committed' ORDER BY request_id DESC LIMIT 1",
    [],
  );
  // What mallory, m1's participant, received with that request.
  const issued = parseTransaction(committed[0]?.transaction as Buffer).createdContracts[0] as ActiveContract;
  const end = await backend.ledgerEnd();
  for (const newOwner of [m2, m1]) {
    // Twice: without alice's check, one Iou would become two at her own participant.
    const transfer: Command = {
      kind: "exercise",
      contractId: issued.contractId,
      choice: "Transfer",
      argument: { newOwner },
      actAs: [m1],
    };
    const { rootHash, payload } = confirmationRequest(mallory.id, transfer, {
      input: issued,
      confirmingParties: [m1],
    });
    await send(mallory, [p1, mediator], payload);
    await respond(mallory, await opened(rootHash), [m1], "approve");
    assert.equal((await verdict(rootHash))?.kind, "approve");
    const local = await p1Decided(rootHash);
    assert.equal(local.state, "rejected");
    assert.match(local.local_rejection ?? "", /confirming parties differ/);
  }
  assert.deepEqual(await backend.ledgerEnd(), end);
  const active = (await backend.activeContracts({ parties: [alice] })).contracts.map((c) => c.contractId);
  assert.ok(active.includes(issued.contractId), "alice's Iou is still active");
});

test("a request sent to no mediator locks nothing: the issuer can still archive its Iou", async () => {
  // A valid transfer by m1, the owner, that alice's participant would approve and lock for: with no
  // mediator, no verdict would ever release the lock.
  const backend = net.backend("participant1");
  const command = { kind: "create" as const, template: "Iou", arguments: iou(alice, m1, "9.00") };
  const { updateId } = await backend.submitAndWait({
    userId: "app",
    commandId: randomUUID(),
    actAs: [alice],
    command,
  });
  const [row] = await query<{ transaction: Buffer }>(
    "participant1_pt",
    "SELECT transaction FROM participant_requests WHERE encode(root_hash, 'hex') = $1",
    [updateId],
  );
  const issued = parseTransaction(row?.transaction as Buffer).createdContracts[0] as ActiveContract;
  const transfer: Command = {
    kind: "exercise",
    contractId: issued.contractId,
    choice: "Transfer",
    argument: { newOwner: m2 },
    actAs: [m1],
  };
  const { rootHash, payload } = confirmationRequest(mallory.id, transfer, { input: issued });
  await send(mallory, [p1], payload);
  // participant1 processes events in order: once it sees mallory's next party, it had the request.
  await net.sequencer.client.submitTopology({ transactions: [allocation(mallory, "marker")] });
  await waitFor("participant1 past the request", async () =>
    (await backend.listParties()).some((p) => p.party === `marker::${mallory.namespace.fingerprint}`)
      ? true
      : undefined,
  );
  const archive = {
    kind: "exercise" as const,
    contractId: issued.contractId,
    choice: "Archive",
    argument: {},
  };
  await backend.submitAndWait({ userId: "app", commandId: randomUUID(), actAs: [alice], command: archive });
  const active = (await backend.activeContracts({ parties: [alice] })).contracts.map((c) => c.contractId);
  assert.ok(!active.includes(issued.contractId));
  const stored = await query("participant1_pt", "SELECT 1 FROM participant_requests WHERE root_hash = $1", [
    rootHash,
  ]);
  assert.equal(stored.length, 0, "not processed");
});

test("a replayed request commits once; the replay neither commits nor stops the participant", async () => {
  const backend = net.backend("participant1");
  const { rootHash, payload } = confirmationRequest(mallory.id, createIou(iou(m1, alice, "3.00"), [m1]));
  const requestIds = new Set<string>();
  for (const round of [1, 2]) {
    await send(mallory, [p1, mediator], payload);
    const r = await waitFor("the mediator has this round's request", async () => {
      const rows = await query<{ request_id: string }>(
        "mediator_pt",
        "SELECT request_id::text FROM mediator_requests WHERE root_hash = $1 ORDER BY request_id",
        [rootHash],
      );
      return rows.length === round ? rows[round - 1] : undefined;
    });
    requestIds.add(r.request_id);
    const end = await backend.ledgerEnd();
    await respond(mallory, { requestId: BigInt(r.request_id), rootHash }, [m1], "approve");
    const state = await waitFor("participant1 decided this round", async () => {
      const rows = await query<{ state: string }>(
        "participant1_pt",
        "SELECT state FROM participant_requests WHERE request_id = $1",
        [r.request_id],
      );
      return rows[0]?.state === "pending" ? undefined : rows[0]?.state;
    });
    assert.equal(state, round === 1 ? "committed" : "rejected");
    if (round === 2) assert.deepEqual(await backend.ledgerEnd(), end);
  }
  assert.equal(requestIds.size, 2);
  assert.equal(net.runtime("participant1").currentRole, "active");
  await honestCreateCommits();
});

test("the mediator counts a response only from a confirming party's host, on the root hash, once, in time", async () => {
  // alice and m1 must confirm; the request goes to the mediator and participant1, whose answer
  // (the payload is none) does not matter here: participant1 is stopped so that only mallory speaks.
  await net.stopParticipant("participant1");
  try {
    const request = create(ConfirmationRequestSchema, {
      rootHash: randomBytes(32),
      informees: [alice, m1, m2].sort(),
      confirmingParties: [alice, m1].sort(),
      submittingParticipant: mallory.id,
      ledgerTime: nowMicros(),
    });
    await send(mallory, [p1, mediator], protocolPayload({ kind: "request", message: request }));
    const r = await opened(Buffer.from(request.rootHash));
    await respond(eve, r, [m1], "approve"); // a member hosting none of them
    await respond(mallory, r, [alice], "approve"); // a participant not hosting alice
    await respond(mallory, r, [m2], "approve"); // m2 is no confirming party
    await respond(mallory, { ...r, rootHash: randomBytes(32) }, [m1], "approve");
    await respond(mallory, r, [m1], "approve", { participant: p1 }); // naming another participant
    await respond(mallory, r, [m1], "approve", { signWith: eve }); // a signature of another key
    await respond(mallory, { ...r, requestId: 1n }, [m1], "approve"); // no such request
    await respond(mallory, r, [m1], "approve"); // counted
    await respond(mallory, r, [m1], "reject"); // equivocation: m1 has answered
    await respond(mallory, r, [m1], "approve"); // again
    const outcome = await verdict(r.rootHash);
    // alice never approved: only the deadline decides, and nothing of mallory's rejects it.
    assert.equal(outcome?.kind, "timeout");
    assert.equal(outcome?.code, "MEDIATOR_SAYS_TX_TIMED_OUT");
    assert.deepEqual(outcome?.unresponsiveParties, [alice]);
    await respond(mallory, r, [m1], "reject"); // after the deadline
    const late = await waitFor("the late response recorded", async () => {
      const rows = await responses(r.requestId);
      return rows.length === 10 ? rows : undefined;
    });
    assert.deepEqual(
      late.map((x) => x.sender),
      [eve.id, ...Array(9).fill(mallory.id)],
    );
    // Only mallory's approval for m1, its own party, counted.
    assert.deepEqual(
      late.map((x, i) => (x.counted ? i : -1)).filter((i) => i >= 0),
      [6],
    );
    const reasons = late.map((x) => x.note ?? "");
    assert.match(reasons[0] ?? "", /does not host confirming parties/);
    assert.match(reasons[1] ?? "", /does not host confirming parties/);
    assert.match(reasons[2] ?? "", /does not host confirming parties/);
    assert.match(reasons[3] ?? "", /root hash differs/);
    assert.match(reasons[4] ?? "", /names participant/);
    assert.match(reasons[5] ?? "", /signature does not verify/);
    assert.match(reasons[7] ?? "", /already responded/);
    assert.match(reasons[8] ?? "", /already responded/);
    assert.match(reasons[9] ?? "", /already decided/);
    const unknown = await responses(1n);
    assert.equal(unknown.length, 1);
    assert.equal(unknown[0]?.note, "unknown request");
  } finally {
    await net.startParticipant("participant1");
  }
  await honestCreateCommits();
});

test("a rejection decides at once; an approval after it is ignored", async () => {
  const request = create(ConfirmationRequestSchema, {
    rootHash: randomBytes(32),
    informees: [m1],
    confirmingParties: [m1],
    submittingParticipant: mallory.id,
    ledgerTime: nowMicros(),
  });
  await send(mallory, [mediator], protocolPayload({ kind: "request", message: request }));
  const r = await opened(Buffer.from(request.rootHash));
  await respond(mallory, r, [m1], "reject");
  await respond(mallory, r, [m1], "approve");
  const outcome = await verdict(r.rootHash);
  assert.equal(outcome?.code, "MALLORY_SAYS_NO");
  const rows = await waitFor("both responses recorded", async () => {
    const all = await responses(r.requestId);
    return all.length === 2 ? all : undefined;
  });
  assert.deepEqual(
    rows.map((x) => [x.verdict, x.counted, x.note]),
    [
      ["reject", true, null],
      ["approve", false, "request already decided"],
    ],
  );
});
