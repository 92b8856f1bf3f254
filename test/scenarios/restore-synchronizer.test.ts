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

// Scenarios 2 and 3 on one network: a set taken in the wrong order is refused (and, forced, the
// participant refuses to connect); the synchronizer restored to an older set forks the participants
// that are ahead, and restoring them from the same set makes the network work again.

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

test("wrong order and an older synchronizer are refused or fail loudly; one consistent set repairs the network", async (t) => {
  const n = await startLedgerNetwork({ tolerance: "5s" });
  network = n;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");
  await create(n, 0, "c1", alice, bob);
  const full = await backupCreate(n);
  await create(n, 1, "c2", bob, alice);
  // Scenario 2: the sequencer backed up first, traffic, then the participant: a fork waiting to happen.
  const seqOnly = await backupCreate(n, ["sequencer1", "mediator1"]);
  await create(n, 1, "c3", bob, alice);
  const late = await backupCreate(n, ["participant2"]);
  t.diagnostic(`sets: full ${full}, sequencer ${seqOnly}, participant2 ${late}`);
  const listed = await runLockstep(["backup", "list", "--json", ...n.cfg]);
  const lateSet = listed.json<{ sets: { id: string; safe: boolean }[] }>().sets.find((s) => s.id === late);
  assert.equal(lateSet?.safe, false, "the set is flagged unsafe");
  const plan = await restore(n, "plan", late);
  assert.equal(plan.code, 3, plan.stdout);
  const order = plan.json<PlanJson>().checks.find((c) => c.check === "order");
  assert.equal(order?.verdict, "refuse");
  assert.equal(order?.code, "RESTORE_SET_UNSAFE");

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
  // New traffic reaches the participants from the older sequencer: each detects the fork and stops.
  await p(n, 0)
    .submission.submit({ commands: createIouCommand("c4", alice, bob) }, { timeoutMs: 10_000 })
    .catch(() => {});
  for (const node of ["participant1", "participant2"]) {
    const failed = await waitForNodeError(n, node, FORK_CODES);
    assert.ok(failed.lastError?.remedy, `${node} names the remedy`);
  }

  // Scenario 2, forced: the late participant2 restored against the older sequencer refuses to connect.
  await nodeStop(n, "participant2");
  const refused = await restore(n, "apply", late, ["--replace"]);
  assert.equal(refused.code, 3, refused.stdout);
  const forced = await restore(n, "apply", late, ["--replace", "--force"]);
  assert.equal(forced.code, 0, forced.stdout + forced.stderr);
  const forcedChecks = forced.json<PlanJson>().checks.filter((c) => c.verdict === "warn" && c.code);
  assert.ok(
    forcedChecks.some((c) => c.check === "order"),
    forced.stdout,
  );
  await nodeStart(n, "participant2");
  const p2 = await waitForNodeError(n, "participant2", FORK_CODES);
  t.diagnostic(`participant2 after the forced restore: ${p2.lastError?.code}`);

  // Scenario 3, repaired: both participants restored from the same set as the synchronizer.
  await nodeStop(n, "participant1");
  await nodeStop(n, "participant2");
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
});
