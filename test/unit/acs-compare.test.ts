import assert from "node:assert/strict";
import { test } from "node:test";
import { recomputeAcs } from "../../src/ledger/acs.ts";
import { type ActiveContract, deriveContractId } from "../../src/ledger/contract.ts";
import { type AcsDifference, compareAcs, type ParticipantAcs } from "../../src/participant/acs-compare.ts";
import { repairView } from "../../src/participant/acs-repair.ts";
import { viewFromText, viewToText } from "../../src/participant/participant-store.ts";

const alice = "alice::1220aa";
const bob = "bob::1220bb";
const carol = "carol::1220cc";
const T0 = 1_700_000_000_000_000n;

let salts = 0;
function iou(issuer: string, owner: string, amount = "1.00"): ActiveContract {
  const content = {
    template: "Iou",
    arguments: { issuer, owner, amount, currency: "USD" },
    signatories: [issuer],
    observers: [owner],
    createdAt: T0,
    salt: (++salts).toString(16).padStart(64, "0"),
  };
  return { contractId: deriveContractId(content), ...content };
}

function acs(
  participant: string,
  hosted: string[],
  active: ActiveContract[],
  archived: [string, bigint][] = [],
): ParticipantAcs {
  return { participant, hostedParties: new Set(hosted), active, archived: new Map(archived) };
}

const p1 = (active: ActiveContract[], archived?: [string, bigint][]) =>
  acs("participant1", [alice], active, archived);
const p2 = (active: ActiveContract[], archived?: [string, bigint][]) =>
  acs("participant2", [bob], active, archived);

test("identical contract sets: every shared contract compared, no difference", () => {
  const shared = [iou(alice, bob), iou(bob, alice)];
  const result = compareAcs(p1(shared), p2([...shared].reverse()));
  assert.deepEqual(result, { participants: ["participant1", "participant2"], compared: 2, differences: [] });
});

test("a contract active on one only, whose stakeholder the other hosts, is only-on", () => {
  const x = iou(alice, bob);
  const y = iou(bob, alice);
  const result = compareAcs(p1([x]), p2([y]));
  assert.equal(result.compared, 2);
  const expected: AcsDifference[] = [
    {
      contractId: x.contractId,
      kind: "only-on",
      participant: "participant1",
      missingOn: "participant2",
      template: "Iou",
      stakeholders: [alice, bob],
    },
    {
      contractId: y.contractId,
      kind: "only-on",
      participant: "participant2",
      missingOn: "participant1",
      template: "Iou",
      stakeholders: [alice, bob],
    },
  ].sort((a, b) => (a.contractId < b.contractId ? -1 : 1)) as AcsDifference[];
  assert.deepEqual(result.differences, expected);
});

test("nothing is shared when the other side hosts no stakeholder", () => {
  const own = iou(alice, carol);
  const result = compareAcs(p1([own]), p2([]));
  assert.deepEqual(result, { participants: ["participant1", "participant2"], compared: 0, differences: [] });
});

test("archived on one, active on the other: archived-on, whoever hosts the stakeholders", () => {
  const x = iou(alice, bob);
  const result = compareAcs(p1([x]), p2([], [[x.contractId, 7n]]));
  assert.deepEqual(result.differences, [
    {
      contractId: x.contractId,
      kind: "archived-on",
      participant: "participant2",
      activeOn: "participant1",
      archivedOffset: 7n,
      template: "Iou",
      stakeholders: [alice, bob],
    },
  ]);
  // Archived on both, or archived on one and never stored by the other: the ACSs agree.
  const both = compareAcs(p1([], [[x.contractId, 3n]]), p2([], [[x.contractId, 7n]]));
  assert.deepEqual(both.differences, []);
  assert.equal(both.compared, 0);
  assert.deepEqual(compareAcs(p1([], [[x.contractId, 3n]]), p2([])).differences, []);
});

test("the same id with other content: each differing field, and which side matches its id", () => {
  const x = iou(alice, bob, "5.00");
  const cases: [keyof ActiveContract, ActiveContract][] = [
    ["template", { ...x, template: "Other" }],
    ["arguments", { ...x, arguments: { ...x.arguments, amount: "6.00" } }],
    ["signatories", { ...x, signatories: [alice, bob] }],
    ["observers", { ...x, observers: [] }],
    ["createdAt", { ...x, createdAt: x.createdAt + 1n }],
    ["salt", { ...x, salt: "ff".repeat(32) }],
  ];
  for (const [field, changed] of cases) {
    const [d] = compareAcs(p1([x]), p2([changed])).differences;
    assert.ok(d?.kind === "different", field);
    assert.deepEqual(d.fields, [field], field);
    assert.deepEqual(d.authenticOn, ["participant1"], field);
    const value = (c: ActiveContract) => (field === "createdAt" ? c.createdAt.toString() : c[field]);
    assert.deepEqual(d.values, {
      participant1: { [field]: value(x) },
      participant2: { [field]: value(changed) },
    });
  }
  const [two] = compareAcs(
    p1([{ ...x, salt: "00".repeat(32) }]),
    p2([{ ...x, observers: [carol] }]),
  ).differences;
  assert.ok(two?.kind === "different");
  assert.deepEqual(two.fields, ["observers", "salt"]);
  assert.deepEqual(two.authenticOn, []);
});

test("repair views create and archive the contract, survive storage and replay to the ACS", () => {
  const x = iou(alice, bob);
  const hosted = new Set([bob]);
  const add = viewFromText(
    viewToText(repairView("add", { ...x, createdOffset: 4n } as ActiveContract, hosted, T0)),
  );
  assert.deepEqual(add.createdContracts, [x], "only the instance is kept, not the stored offset");
  assert.deepEqual(add.witnesses, [bob]);
  assert.equal(add.nodes[0]?.kind, "create");
  const purge = viewFromText(viewToText(repairView("purge", x, hosted, T0 + 1n)));
  assert.deepEqual(purge.archivedContracts, [x.contractId]);
  assert.deepEqual(purge.inputContracts, [x]);
  const node = purge.nodes[0];
  assert.ok(node?.kind === "exercise" && node.choice === "Archive" && node.consuming);
  assert.deepEqual(node.actingParties, [alice]);
  assert.equal(recomputeAcs([add]).size, 1);
  assert.equal(recomputeAcs([add, purge]).size, 0);
});
