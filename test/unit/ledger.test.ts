import assert from "node:assert/strict";
import { test } from "node:test";
import { z } from "zod";
import { isLockstepError } from "../../src/common/errors.ts";
import { type Acs, applyTransaction, recomputeAcs } from "../../src/ledger/acs.ts";
import { type ActiveContract, contractIdMatches, isContractId } from "../../src/ledger/contract.ts";
import { type InterpretationContext, interpret } from "../../src/ledger/interpreter.ts";
import { normalizeDecimal } from "../../src/ledger/templates/decimal.ts";
import { iouTemplate } from "../../src/ledger/templates/iou.ts";
import {
  defineChoice,
  defineTemplate,
  partySchema,
  TemplateRegistry,
} from "../../src/ledger/templates/template-registry.ts";
import type { Command, SubmitterInfo, Transaction } from "../../src/ledger/transaction.ts";
import { validateTransaction } from "../../src/ledger/transaction-validator.ts";
import { visibleTo } from "../../src/ledger/transaction-view.ts";

const alice = "alice::1220aa";
const bob = "bob::1220bb";
const carol = "carol::1220cc";
const bank = "bank::1220dd";
const T0 = 1_700_000_000_000_000n;

let submissions = 0;
function submitter(commandId = `cmd-${++submissions}`): SubmitterInfo {
  return { participant: "participant1::1220ee", userId: "app", commandId, submissionId: `sub-${commandId}` };
}

function run(command: Command, acs: Acs = new Map(), sub = submitter(), ledgerTime = T0): Transaction {
  return interpret(command, { ledgerTime, submitter: sub, lookupContract: (id) => acs.get(id) });
}

function createIou(issuer: string, owner: string, amount = "100.00", sub = submitter()): Transaction {
  return run(
    {
      kind: "create",
      template: "Iou",
      arguments: { issuer, owner, amount, currency: "USD" },
      actAs: [issuer],
    },
    new Map(),
    sub,
  );
}

function transfer(acs: Acs, contract: ActiveContract, newOwner: string, actAs: string[]): Transaction {
  return run(
    { kind: "exercise", contractId: contract.contractId, choice: "Transfer", argument: { newOwner }, actAs },
    acs,
  );
}

function only<T>(items: readonly T[]): T {
  assert.equal(items.length, 1);
  return items[0] as T;
}

test("create: the issuer signs, the owner observes, both are informees", () => {
  const tx = createIou(bank, alice, "100");
  const created = only(tx.createdContracts);
  assert.equal(created.template, "Iou");
  assert.deepEqual(created.arguments, { issuer: bank, owner: alice, amount: "100.00", currency: "USD" });
  assert.deepEqual(created.signatories, [bank]);
  assert.deepEqual(created.observers, [alice]);
  assert.equal(created.createdAt, T0);
  assert.ok(isContractId(created.contractId) && contractIdMatches(created));
  assert.deepEqual(tx.informees, [alice, bank].sort());
  assert.deepEqual(tx.confirmingParties, [bank]);
  assert.deepEqual(tx.inputContracts, []);
  assert.deepEqual(tx.archivedContracts, []);
  const node = only(tx.nodes);
  assert.equal(node.kind, "create");
  assert.equal(node.contractId, created.contractId);
  assert.deepEqual(tx.command, {
    kind: "create",
    template: "Iou",
    arguments: created.arguments,
    actAs: [bank],
  });
});

test("transfer: archives the input, creates the new Iou, informs old and new owner", () => {
  const iou = only(createIou(bank, alice).createdContracts);
  const acs = new Map([[iou.contractId, iou]]);
  const tx = transfer(acs, iou, carol, [alice]);
  assert.deepEqual(
    tx.inputContracts.map((c) => c.contractId),
    [iou.contractId],
  );
  assert.deepEqual(tx.archivedContracts, [iou.contractId]);
  const created = only(tx.createdContracts);
  assert.deepEqual(created.arguments, { ...iou.arguments, owner: carol });
  assert.deepEqual(created.signatories, [bank]);
  assert.deepEqual(created.observers, [carol]);
  assert.deepEqual(tx.informees, [alice, bank, carol].sort());
  assert.deepEqual(tx.confirmingParties, [bank]);
  const root = only(tx.nodes);
  assert.ok(root.kind === "exercise");
  assert.equal(root.choice, "Transfer");
  assert.equal(root.consuming, true);
  assert.deepEqual(root.actingParties, [alice]);
  assert.equal(only(root.children).contractId, created.contractId);

  const after = applyTransaction(acs, tx);
  assert.deepEqual([...after.keys()], [created.contractId]);
  assert.equal(acs.size, 1, "applyTransaction leaves its input unchanged");
});

test("archive: controlled by the issuer, creates nothing", () => {
  const iou = only(createIou(bank, alice).createdContracts);
  const acs = new Map([[iou.contractId, iou]]);
  const command: Command = {
    kind: "exercise",
    contractId: iou.contractId,
    choice: "Archive",
    argument: null,
    actAs: [bank],
  };
  const tx = run(command, acs);
  assert.deepEqual(tx.createdContracts, []);
  assert.deepEqual(tx.archivedContracts, [iou.contractId]);
  assert.deepEqual(tx.command.kind === "exercise" && tx.command.argument, {});
  assert.equal(applyTransaction(acs, tx).size, 0);
  assert.throws(
    () => run({ ...command, actAs: [alice] }, acs),
    (e) => isLockstepError(e, "DAML_AUTHORIZATION_ERROR"),
  );
});

test("contract ids are deterministic and distinct across commands and submissions", () => {
  const sub = submitter("fixed");
  const a = createIou(bank, alice, "100.00", sub);
  const b = createIou(bank, alice, "100.00", sub);
  assert.deepEqual(a, b);
  const ids = new Set([
    only(a.createdContracts).contractId,
    only(createIou(bank, alice, "100.00", submitter("other")).createdContracts).contractId,
    only(createIou(bank, alice, "100.00", { ...sub, submissionId: "resubmitted" }).createdContracts)
      .contractId,
    only(
      run(
        { kind: "create", template: "Iou", arguments: only(a.createdContracts).arguments, actAs: [bank] },
        new Map(),
        sub,
        T0 + 1n,
      ).createdContracts,
    ).contractId,
  ]);
  assert.equal(ids.size, 4);
});

test("authorization: create needs every signatory, exercise every controller", () => {
  assert.throws(
    () =>
      run({
        kind: "create",
        template: "Iou",
        arguments: { issuer: bank, owner: alice, amount: "1", currency: "USD" },
        actAs: [alice],
      }),
    (e) =>
      isLockstepError(e, "DAML_AUTHORIZATION_ERROR") &&
      e.message.includes(bank) &&
      e.grpc === 3 /* INVALID_ARGUMENT */,
  );
  const iou = only(createIou(bank, alice).createdContracts);
  const acs = new Map([[iou.contractId, iou]]);
  assert.throws(
    () => transfer(acs, iou, bob, [bob]),
    /Transfer.*requires the authorization of alice::1220aa/,
  );
  assert.throws(
    () => transfer(acs, iou, bob, [bank]),
    (e) => isLockstepError(e, "DAML_AUTHORIZATION_ERROR"),
  );
  assert.throws(
    () => transfer(acs, iou, bob, []),
    (e) => isLockstepError(e, "INVALID_ARGUMENT"),
  );
  // Extra act-as parties do no harm.
  assert.equal(transfer(acs, iou, bob, [alice, carol]).archivedContracts.length, 1);
});

test("unknown template, choice or contract and bad arguments are refused with Canton's codes", () => {
  const iou = only(createIou(bank, alice).createdContracts);
  const acs = new Map([[iou.contractId, iou]]);
  const bad = (command: Command, code: Parameters<typeof isLockstepError>[1]) =>
    assert.throws(
      () => run(command, acs),
      (e) => isLockstepError(e, code),
      code,
    );
  const args = { issuer: bank, owner: alice, amount: "1.00", currency: "USD" };
  bad(
    { kind: "create", template: "Nope", arguments: args, actAs: [bank] },
    "TEMPLATES_OR_INTERFACES_NOT_FOUND",
  );
  for (const wrong of [
    { ...args, amount: 1 },
    { ...args, amount: "0.00" },
    { ...args, amount: "-1" },
    { ...args, amount: "1.12345678901" },
    { ...args, currency: "usd" },
    { ...args, owner: "alice" },
    { ...args, extra: true },
    { issuer: bank },
    null,
  ]) {
    bad({ kind: "create", template: "Iou", arguments: wrong, actAs: [bank] }, "COMMAND_PREPROCESSING_FAILED");
  }
  const exercise = { kind: "exercise", contractId: iou.contractId, actAs: [alice] } as const;
  bad({ ...exercise, choice: "Steal", argument: {} }, "COMMAND_PREPROCESSING_FAILED");
  bad({ ...exercise, choice: "Transfer", argument: { owner: bob } }, "COMMAND_PREPROCESSING_FAILED");
  bad({ ...exercise, choice: "toString", argument: {} }, "COMMAND_PREPROCESSING_FAILED");
  bad(
    { ...exercise, contractId: `00${"ab".repeat(32)}`, choice: "Transfer", argument: { newOwner: bob } },
    "CONTRACT_NOT_FOUND",
  );
});

test("exercising an archived contract: CONTRACT_NOT_FOUND when interpreted, CONTRACT_NOT_ACTIVE when applied", () => {
  const iou = only(createIou(bank, alice).createdContracts);
  const acs = new Map([[iou.contractId, iou]]);
  const first = transfer(acs, iou, bob, [alice]);
  const stale = transfer(acs, iou, carol, [alice]); // interpreted against the ACS before `first`
  const after = applyTransaction(acs, first);
  assert.throws(
    () => applyTransaction(after, stale),
    (e) => isLockstepError(e, "CONTRACT_NOT_ACTIVE") && e.metadata.contractId === iou.contractId,
  );
  assert.throws(
    () => transfer(after, iou, carol, [alice]),
    (e) => isLockstepError(e, "CONTRACT_NOT_FOUND"),
  );
  // Creating an existing contract again is refused as well.
  assert.throws(
    () => applyTransaction(after, first),
    (e) => isLockstepError(e, "CONTRACT_NOT_ACTIVE"),
  );
  const create = createIou(bank, alice);
  const withCreate = applyTransaction(new Map(), create);
  assert.throws(
    () => applyTransaction(withCreate, create),
    (e) => isLockstepError(e, "LOCAL_VERDICT_CREATES_EXISTING_CONTRACTS"),
  );
});

test("decimals are exact strings, normalized to at least two fractional digits", () => {
  assert.equal(normalizeDecimal("100"), "100.00");
  assert.equal(normalizeDecimal("007.5"), "7.50");
  assert.equal(normalizeDecimal("100.1230"), "100.123");
  assert.equal(normalizeDecimal("0.0000000001"), "0.0000000001");
  assert.equal(normalizeDecimal("12345678901234567890123456.99"), "12345678901234567890123456.99");
  for (const s of ["100.00", "7.50", "0.0000000001"]) assert.equal(normalizeDecimal(s), s);
  assert.throws(() => normalizeDecimal("1e3"));
  assert.throws(() => normalizeDecimal(".5"));
});

// A template whose non-consuming choice exercises another contract's choice: nested authorization.
const walletTemplate = defineTemplate({
  name: "Wallet",
  arguments: z.strictObject({ owner: partySchema }),
  signatories: (args) => [args.owner],
  observers: () => [],
  choices: {
    Give: defineChoice({
      name: "Give",
      consuming: false,
      argument: z.strictObject({ iouId: z.string(), to: partySchema }),
      controllers: (_arg, wallet) => [String(wallet.arguments.owner)],
      body: (arg) => [
        { kind: "exercise", contractId: arg.iouId, choice: "Transfer", argument: { newOwner: arg.to } },
      ],
    }),
  },
});

test("nested exercises: authorized by the outer contract's signatories and controllers", () => {
  const templates = new TemplateRegistry([iouTemplate, walletTemplate]);
  const context = (acs: Acs, commandId: string): InterpretationContext => ({
    ledgerTime: T0,
    submitter: submitter(commandId),
    lookupContract: (id) => acs.get(id),
    templates,
  });
  const wallet = (owner: string) =>
    interpret(
      { kind: "create", template: "Wallet", arguments: { owner }, actAs: [owner] },
      context(new Map(), `w-${owner}`),
    );
  const setup = [createIou(bank, alice), wallet(alice), wallet(bob)];
  const acs = recomputeAcs(setup);
  const [iou, aliceWallet, bobWallet] = setup.map((tx) => only(tx.createdContracts)) as [
    ActiveContract,
    ActiveContract,
    ActiveContract,
  ];
  const give = (w: ActiveContract, owner: string) =>
    interpret(
      {
        kind: "exercise",
        contractId: w.contractId,
        choice: "Give",
        argument: { iouId: iou.contractId, to: carol },
        actAs: [owner],
      },
      context(acs, `give-${owner}`),
    );

  const tx = give(aliceWallet, alice);
  assert.deepEqual(
    tx.inputContracts.map((c) => c.contractId),
    [aliceWallet.contractId, iou.contractId],
  );
  assert.deepEqual(tx.archivedContracts, [iou.contractId], "the wallet stays active (non-consuming)");
  assert.equal(only(tx.createdContracts).arguments.owner, carol);
  assert.deepEqual(tx.informees, [alice, bank, carol].sort());
  assert.deepEqual(tx.confirmingParties, [alice, bank].sort());
  assert.deepEqual(validateTransaction(tx, { templates }).problems, []);
  assert.equal(validateTransaction(tx).ok, false, "validators need the same templates");
  assert.deepEqual(
    visibleTo(tx, carol)?.nodes.map((n) => n.kind),
    ["create"],
  );
  assert.deepEqual(
    [...applyTransaction(acs, tx).keys()].sort(),
    [aliceWallet.contractId, bobWallet.contractId, only(tx.createdContracts).contractId].sort(),
  );

  // Bob's wallet cannot move alice's Iou: bob's authority does not cover alice's Transfer.
  assert.throws(
    () => give(bobWallet, bob),
    (e) => isLockstepError(e, "DAML_AUTHORIZATION_ERROR") && e.message.includes("Transfer"),
  );
});
