import assert from "node:assert/strict";
import { test } from "node:test";
import type { ErrorCodeName } from "../../src/common/error-codes.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import { type Acs, applyTransaction, recomputeAcs } from "../../src/ledger/acs.ts";
import { type ActiveContract, deriveContractId } from "../../src/ledger/contract.ts";
import { interpret } from "../../src/ledger/interpreter.ts";
import type { Command, Transaction } from "../../src/ledger/transaction.ts";
import {
  hashSerializedTransaction,
  parseTransaction,
  serializeTransaction,
  transactionHash,
} from "../../src/ledger/transaction-codec.ts";
import { validateTransaction } from "../../src/ledger/transaction-validator.ts";
import { isVisibleTo, visibleTo } from "../../src/ledger/transaction-view.ts";

const alice = "alice::1220aa";
const bob = "bob::1220bb";
const carol = "carol::1220cc";
const bank = "bank::1220dd";
const participant = "participant1::1220ee";
const T0 = 1_700_000_000_000_000n;

function run(command: Command, acs: Acs, commandId: string): Transaction {
  return interpret(command, {
    ledgerTime: T0,
    submitter: { participant, userId: "app", commandId, submissionId: `sub-${commandId}` },
    lookupContract: (id) => acs.get(id),
  });
}

function iou(issuer: string, owner: string, commandId: string): Transaction {
  const args = { issuer, owner, amount: "100.00", currency: "USD" };
  return run({ kind: "create", template: "Iou", arguments: args, actAs: [issuer] }, new Map(), commandId);
}

function transfer(acs: Acs, contract: ActiveContract, newOwner: string, commandId: string): Transaction {
  const owner = String(contract.arguments.owner);
  const command: Command = {
    kind: "exercise",
    contractId: contract.contractId,
    choice: "Transfer",
    argument: { newOwner },
    actAs: [owner],
  };
  return run(command, acs, commandId);
}

function first<T>(items: readonly T[]): T {
  assert.ok(items.length > 0);
  return items[0] as T;
}

/** A create and a transfer (bank's Iou from alice to carol), and the ACS before the transfer. */
function scenario() {
  const created = iou(bank, alice, "c1");
  const acs = applyTransaction(new Map(), created);
  const transferred = transfer(acs, first(created.createdContracts), carol, "c2");
  return { created, transferred, acs };
}

/** A deep copy to tamper with (readonly types are not enforced at run time). */
// biome-ignore lint/suspicious/noExplicitAny: tests mutate copies freely
function tamper(tx: Transaction, f: (copy: any) => void): Transaction {
  const copy = structuredClone(tx);
  f(copy);
  return copy;
}

function codes(tx: Transaction, submittingParticipant = participant): ErrorCodeName[] {
  return validateTransaction(tx, { submittingParticipant }).problems.map((p) => p.code);
}

test("serialization round-trips, is canonical, and the hash is stable", () => {
  const { created, transferred } = scenario();
  for (const tx of [created, transferred]) {
    const bytes = serializeTransaction(tx);
    const parsed = parseTransaction(bytes);
    assert.deepEqual(parsed, tx);
    assert.deepEqual(serializeTransaction(parsed), bytes);
    assert.deepEqual(transactionHash(parsed), transactionHash(tx));
    assert.deepEqual(hashSerializedTransaction(bytes), transactionHash(tx));
    assert.equal(transactionHash(tx).length, 32);
  }
  assert.notDeepEqual(transactionHash(created), transactionHash(transferred));
  // Pinned: a change here changes every contract id and root hash, so it must be deliberate.
  assert.equal(
    first(created.createdContracts).contractId,
    "00a503bda0de17c8d2b2bda64459356235372b343f886e9f07a00945ae16829803",
  );
  assert.equal(
    transactionHash(created).toString("hex"),
    "8038e90f0d808b130d7ee53c2fbec8a4e00a830dfebcd3c3b11ea406d82f36c8",
  );
});

test("parseTransaction refuses what is not the canonical encoding", () => {
  const { transferred } = scenario();
  const text = Buffer.from(serializeTransaction(transferred)).toString("utf8");
  const malformed = (s: string) =>
    assert.throws(
      () => parseTransaction(Buffer.from(s)),
      (e) => isLockstepError(e, "LOCAL_VERDICT_MALFORMED_PAYLOAD"),
      s.slice(0, 40),
    );
  malformed("not json");
  malformed(JSON.stringify(JSON.parse(text), null, 2));
  malformed(text.replace('"version":1', '"version":2'));
  malformed(text.replace(/"ledgerTime":"\d+"/, `"ledgerTime":${T0}`));
  malformed(`${text.slice(0, -1)},"extra":1}`);
  malformed("{}");
});

test("validateTransaction accepts an honest transaction, also after a round trip", () => {
  const { created, transferred } = scenario();
  for (const tx of [created, transferred]) {
    const result = validateTransaction(parseTransaction(serializeTransaction(tx)), {
      submittingParticipant: participant,
    });
    assert.deepEqual(result.problems, []);
    assert.equal(result.ok, true);
  }
});

test("validateTransaction rejects a changed amount or owner and an extra created contract", () => {
  const { transferred } = scenario();
  const conformance = "LOCAL_VERDICT_FAILED_MODEL_CONFORMANCE_CHECK";

  const amount = tamper(transferred, (tx) => {
    tx.createdContracts[0].arguments.amount = "1000000.00";
    tx.nodes[0].children[0].arguments.amount = "1000000.00";
  });
  assert.deepEqual(codes(amount), [conformance]);
  const problem = first(validateTransaction(amount).problems);
  assert.match(problem.message, /differs in nodes, createdContracts/);

  // Even with the contract id re-derived to match the changed content.
  const owner = tamper(transferred, (tx) => {
    const contract = tx.createdContracts[0];
    contract.arguments.owner = bob;
    contract.observers = [bob];
    contract.contractId = deriveContractId(contract);
    Object.assign(tx.nodes[0].children[0], {
      contractId: contract.contractId,
      arguments: contract.arguments,
      observers: [bob],
    });
    tx.informees = [alice, bank, bob].sort();
  });
  assert.deepEqual(codes(owner), [conformance]);

  const extra = tamper(transferred, (tx) => {
    const contract = { ...tx.createdContracts[0], salt: "ab".repeat(32) };
    contract.contractId = deriveContractId(contract);
    tx.createdContracts.push(contract);
  });
  assert.deepEqual(codes(extra), [conformance]);

  const fewerInformees = tamper(transferred, (tx) => {
    tx.informees = [bank];
  });
  assert.deepEqual(codes(fewerInformees), [conformance]);
});

test("validateTransaction rejects forged inputs, a wrong sender and missing authorization", () => {
  const { transferred } = scenario();
  const forgedInput = tamper(transferred, (tx) => {
    tx.inputContracts[0].arguments.amount = "1000000.00";
  });
  assert.ok(codes(forgedInput).includes("LOCAL_VERDICT_MALFORMED_PAYLOAD"));

  assert.deepEqual(codes(transferred, "participant2::1220ff"), ["LOCAL_VERDICT_MALFORMED_PAYLOAD"]);

  // Bob claims to transfer alice's Iou to himself, acting as himself.
  const stolen = tamper(transferred, (tx) => {
    tx.command.actAs = [bob];
  });
  const problems = validateTransaction(stolen, { submittingParticipant: participant }).problems;
  assert.ok(problems.every((p) => p.code === "DAML_AUTHORIZATION_ERROR"));
  assert.ok(problems.length >= 1);
});

test("recomputeAcs equals applying the transactions one by one", () => {
  const a = iou(bank, alice, "r1");
  const b = iou(bank, bob, "r2");
  let acs = applyTransaction(applyTransaction(new Map(), a), b);
  const t1 = transfer(acs, first(a.createdContracts), carol, "r3");
  acs = applyTransaction(acs, t1);
  const t2 = transfer(acs, first(t1.createdContracts), bob, "r4");
  acs = applyTransaction(acs, t2);
  const archive = run(
    {
      kind: "exercise",
      contractId: first(b.createdContracts).contractId,
      choice: "Archive",
      argument: {},
      actAs: [bank],
    },
    acs,
    "r5",
  );
  acs = applyTransaction(acs, archive);
  const updates = [a, b, t1, t2, archive];
  assert.deepEqual(recomputeAcs(updates), acs);
  assert.deepEqual(
    [...acs.values()].map((c) => c.arguments.owner),
    [bob],
  );
  assert.deepEqual(recomputeAcs(updates.slice(2), applyTransaction(applyTransaction(new Map(), a), b)), acs);
  assert.throws(
    () => recomputeAcs([a, t1, t1]),
    (e) => isLockstepError(e, "CONTRACT_NOT_ACTIVE"),
  );
  // Per party: the views of one party rebuild that party's part of the ACS.
  const views = updates.map((tx) => visibleTo(tx, carol)).filter((v) => v !== undefined);
  assert.deepEqual([...recomputeAcs(views).keys()], []);
  const bobs = updates.map((tx) => visibleTo(tx, bob)).filter((v) => v !== undefined);
  assert.deepEqual(recomputeAcs(bobs), acs);
});

test("visibility: bob does not see a transfer between alice and carol; carol sees only her new Iou", () => {
  const own = iou(alice, alice, "v1");
  const acs = applyTransaction(new Map(), own);
  const tx = transfer(acs, first(own.createdContracts), carol, "v2");
  assert.equal(isVisibleTo(tx, bob), false);
  assert.equal(visibleTo(tx, [bob]), undefined);
  assert.equal(visibleTo(own, bob), undefined);

  const forAlice = visibleTo(tx, alice);
  assert.ok(forAlice);
  assert.deepEqual(forAlice.nodes, tx.nodes);
  assert.deepEqual(forAlice.archivedContracts, tx.archivedContracts);

  const { transferred } = scenario(); // bank's Iou, alice → carol
  const forCarol = visibleTo(transferred, [carol, bob]);
  assert.ok(forCarol);
  assert.deepEqual(forCarol.witnesses, [carol]);
  const root = first(transferred.nodes);
  assert.ok(root.kind === "exercise");
  assert.deepEqual(forCarol.nodes, root.children, "carol sees the create, not alice's exercise");
  assert.deepEqual(forCarol.inputContracts, []);
  assert.deepEqual(forCarol.archivedContracts, []);
  assert.deepEqual(forCarol.createdContracts, transferred.createdContracts);
  assert.deepEqual(visibleTo(transferred, bank)?.nodes, transferred.nodes);
});
