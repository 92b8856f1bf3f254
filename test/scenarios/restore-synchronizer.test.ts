import assert from "node:assert/strict";
import { after, test } from "node:test";
import { runLockstep } from "../support/cli.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  allocateKnownParty,
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";
import {
  acsKeys,
  backupCreate,
  nodeStart,
  nodeStop,
  type PlanJson,
  restore,
  waitForNodeError,
} from "../support/restore-network.ts";

// Scenarios 2 and 3 on one network, and issue 9 defect 2 (a set is safe only if each member's
// history is a prefix of the sequencer's, by chain hash) and defect 3 (retention keeps the set a
// disaster needs). A set without the sequencer is checked against the live sequencer, at backup time
// and at restore time; the synchronizer restored to an older set forks the participants that are
// ahead: the next backup must say so (the old timestamps-only check called it safe, and `backup
// expire --keep 1` then deleted the last consistent set); restoring them from the same set repairs it.

let network: LedgerNetwork | undefined;
after(() => network?.down());

const p = (n: LedgerNetwork, i: 0 | 1) => n.clients[i] as LedgerClients;
const FORK_CODES = [
  "SEQUENCER_FORK_DETECTED",
  "PREVIOUS_TIMESTAMP_MISMATCH",
  "SEQUENCER_CHAIN_HASH_MISMATCH",
];

async function create(n: LedgerNetwork, i: 0 | 1, id: string, issuer: string, owner: string) {
  return p(n, i).commands.submitAndWait(
    { commands: createIouCommand(id, issuer, owner) },
    { timeoutMs: 60_000 },
  );
}

interface CreateJson {
  set: string;
  safe: boolean;
  orderCheck: string;
  unsafe: { node: string; storedHash: string; sequencerHash: string | null; sequencerSet: string | null }[];
}

async function backupJson(n: LedgerNetwork, nodes?: string[]): Promise<CreateJson> {
  const args = ["backup", "create", "--json", ...(nodes ? ["--nodes", nodes.join(",")] : []), ...n.cfg];
  const r = await runLockstep(args, { timeoutMs: 180_000 });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.json<CreateJson>();
}

const verdict = (plan: PlanJson, node: string, check: string) =>
  plan.checks.find((c) => c.node === node && c.check === check)?.verdict;

test("chain-hash order checks: live checks for partial sets, forks after an older synchronizer flagged, scoped --force, retention keeps the consistent set", async (t) => {
  const n = await startLedgerNetwork({ tolerance: "5s" });
  network = n;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");
  await create(n, 0, "c1", alice, bob);
  const full = await backupCreate(n);
  await create(n, 1, "c2", bob, alice);
  // A set without the sequencer is checked against the live one (old code: against the older set's
  // sequencer, by timestamp, so it was "unsafe" and its restore needed --force).
  const late = await backupJson(n, ["participant2"]);
  assert.equal(late.safe, true, JSON.stringify(late));
  assert.equal(late.orderCheck, "checked-against-live-sequencer");
  const latePlan = (await restore(n, "plan", late.set, ["--replace"])).json<PlanJson>();
  assert.equal(verdict(latePlan, "participant2", "order"), "pass", JSON.stringify(latePlan));
  assert.equal(verdict(latePlan, "participant2", "sequencer-fork"), "pass", JSON.stringify(latePlan));
  await create(n, 1, "c3", bob, alice);

  // Scenario 3: the synchronizer goes back to the full set while the participants are ahead.
  await nodeStop(n, "sequencer1");
  await nodeStop(n, "mediator1");
  const sync = await restore(n, "apply", full, ["--nodes", "sequencer1,mediator1", "--replace"]);
  assert.equal(sync.code, 0, sync.stdout + sync.stderr);
  const ahead = sync.json<PlanJson>().checks.filter((c) => c.check === "members-ahead");
  assert.deepEqual(ahead.map((c) => [c.node, c.verdict]).sort(), [
    ["participant1", "warn"],
    ["participant2", "warn"],
  ]);
  await nodeStart(n, "sequencer1");
  await nodeStart(n, "mediator1");
  // New traffic (if a participant still accepts it) goes to both from the older sequencer, at later
  // timestamps; each participant detects the fork and stops.
  await p(n, 0)
    .submission.submit({ commands: createIouCommand("c4", alice, bob) }, { timeoutMs: 10_000 })
    .catch(() => {});
  for (const node of ["participant1", "participant2"]) {
    const failed = await waitForNodeError(n, node, FORK_CODES);
    assert.ok(failed.lastError?.remedy, `${node} names the remedy`);
  }

  // The next backup must say the participants are forked, with both hashes.
  const forkedSet = await backupJson(n);
  assert.equal(forkedSet.safe, false, JSON.stringify(forkedSet));
  assert.deepEqual(forkedSet.unsafe.map((u) => u.node).sort(), ["participant1", "participant2"]);
  for (const u of forkedSet.unsafe) {
    assert.match(u.storedHash, /^[0-9a-f]{64}$/);
    assert.notEqual(u.sequencerHash, u.storedHash);
    assert.equal(u.sequencerSet, forkedSet.set);
  }

  // The partial set is checked again at restore time against the live (older) sequencer: refused.
  await nodeStop(n, "participant1");
  await nodeStop(n, "participant2");
  const lateNow = await restore(n, "apply", late.set, ["--replace"]);
  assert.equal(lateNow.code, 3, lateNow.stdout);
  assert.equal(verdict(lateNow.json<PlanJson>(), "participant2", "sequencer-fork"), "refuse");

  // --force names what it overrides, per node: forcing participant1 leaves participant2 refused.
  const scoped = await restore(n, "plan", forkedSet.set, [
    "--nodes",
    "participant1,participant2",
    "--replace",
    "--force",
    "participant1:sequencer-fork",
  ]);
  assert.equal(scoped.code, 3, scoped.stdout);
  const scopedPlan = scoped.json<PlanJson & { forced: string[] }>();
  assert.deepEqual(scopedPlan.forced, ["participant1:sequencer-fork"]);
  assert.equal(verdict(scopedPlan, "participant1", "sequencer-fork"), "warn");
  assert.equal(verdict(scopedPlan, "participant2", "sequencer-fork"), "refuse");
  const bare = await runLockstep([
    "restore",
    "plan",
    forkedSet.set,
    "--force",
    "everything",
    "--json",
    ...n.cfg,
  ]);
  assert.equal(bare.code, 2, bare.stdout);

  // Retention keeps the last consistent set (old code: the forked set counted as the newest safe
  // one and `--keep 1` deleted `full`).
  const dry = await runLockstep(["backup", "expire", "--keep", "1", "--dry-run", "--json", ...n.cfg]);
  const decisions = dry.json<{ sets: { id: string; action: string; reason: string }[] }>().sets;
  const kept = decisions.find((d) => d.id === full);
  assert.equal(kept?.action, "keep", JSON.stringify(decisions));
  assert.match(kept?.reason ?? "", /never deleted/);
  // The partial set of participant2 is not the one a disaster needs, but it is the newest backup of
  // participant2 (the only one with a key it might have rotated to since): kept too.
  assert.match(decisions.find((d) => d.id === late.set)?.reason ?? "", /newest safe backup of participant2/);
  t.diagnostic(`sets: full ${full}, participant2 ${late.set}, forked ${forkedSet.set}`);

  // Scenario 3, repaired: both participants restored from the same set as the synchronizer.
  const repair = await restore(n, "apply", full, ["--nodes", "participant1,participant2", "--replace"]);
  assert.equal(repair.code, 0, repair.stdout + repair.stderr);
  await nodeStart(n, "participant1");
  await nodeStart(n, "participant2");
  await waitFor(
    "the repaired network to commit a new command",
    async () => ((await create(n, 0, "c5", alice, bob)).updateId ? true : undefined),
    90_000,
    2000,
  );
  await waitFor(
    "both participants to agree",
    async () => {
      const [a, b] = [await acsKeys(n, 0, alice), await acsKeys(n, 1, bob)];
      return a.length >= 2 && JSON.stringify(a) === JSON.stringify(b) ? true : undefined;
    },
    60_000,
    1000,
  );
  // And a set taken now is safe again.
  assert.equal((await backupJson(n)).safe, true);
});
