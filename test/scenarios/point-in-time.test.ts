import assert from "node:assert/strict";
import { readdirSync, rmSync } from "node:fs";
import { after, test } from "node:test";
import { embeddedClusterDir } from "../../src/node/node-database.ts";
import { runLockstep } from "../support/cli.ts";
import { allocateKnownParty, type LedgerNetwork, startLedgerNetwork } from "../support/ledger-network.ts";
import {
  acsKeys,
  cliOk,
  createIou,
  killApplyAt,
  type PlanJson,
  serverTime,
  waitForRecovery,
} from "../support/restore-network.ts";
import { waitFor } from "../support/wait.ts";

// Issue 14's network-wide point-in-time recovery, on real pgBackRest and PostgreSQL: a pgBackRest
// backup, transactions a1 a2 | T1 | a3, checkpoint cp1, a4, checkpoint cp2; then everything is
// lost (the data dir with the embedded cluster); the network restored to cp1 holds exactly a1..a3 and goes on (a5);
// restored to cp2 (written after a4, on the history before the first restore) it holds a1..a4.
// Then the network restored to T1, between a2 and a3, holds exactly a1 a2; and a sequencer
// recovered to T1 with the participants at cp1 (events after T1 in their histories) is refused.

let network: LedgerNetwork | undefined;
after(() => network?.down());

const create = createIou;
const cli = cliOk;

/** Both participants hold `count` contracts of the pair (the other's view caught up). */
async function bothSee(n: LedgerNetwork, alice: string, bob: string, count: number): Promise<string[]> {
  return waitFor(`both participants to hold ${count} contracts`, async () => {
    const a = await acsKeys(n, 0, alice).catch(() => []);
    const b = await acsKeys(n, 1, bob).catch(() => []);
    return a.length === count && b.length === count ? a : undefined;
  });
}

test("the network restored to a checkpoint after losing everything, then to a time between two transactions", async (t) => {
  const n = await startLedgerNetwork({
    tolerance: "5s",
    configure: (config) => {
      config.backup = { ...(config.backup ?? {}), engine: "pgbackrest" };
    },
  });
  network = n;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");
  await create(n, 0, "a1", alice, bob);
  await cli(n, "backup", "create", "--json");
  // --to-time needs a backup that stopped at least a whole second before the target (pgBackRest's
  // stop times are in seconds; point-in-time.ts): a2 and T1 come once the cluster's clock is past that.
  const backedUpAt = Date.parse(await serverTime(n));
  await waitFor(
    "the cluster's clock 2 s past the backup",
    async () => (Date.parse(await serverTime(n)) > backedUpAt + 2000 ? true : undefined),
    10_000,
    200,
  );
  await create(n, 0, "a2", alice, bob);
  const atT1 = await bothSee(n, alice, bob, 2);
  const t1 = await serverTime(n);
  await create(n, 0, "a3", alice, bob);
  const atCp1 = await bothSee(n, alice, bob, 3);
  const cp = (await cli(n, "checkpoint", "create", "cp1", "--json")).json<{
    set: string;
    clusters: { serverTime: string }[];
  }>();
  t.diagnostic(`T1 ${t1}; checkpoint cp1 → set ${cp.set}`);
  await create(n, 0, "a4", alice, bob);
  const atCp2 = await bothSee(n, alice, bob, 4);
  await cli(n, "checkpoint", "create", "cp2", "--json");

  // Everything on this machine is lost but the backup repository.
  await cli(n, "down", "--json");
  rmSync(n.dataDir, { recursive: true, force: true });

  const plan = await runLockstep(["restore", "plan", "--checkpoint", "cp1", "--json", ...n.cfg], {
    timeoutMs: 300_000,
  });
  assert.equal(plan.code, 0, plan.stdout + plan.stderr);
  assert.equal(plan.json<PlanJson>().ok, true);
  const paths = plan.json<PlanJson>().checks.filter((c) => c.check === "restore-path");
  assert.equal(paths.length, 4);
  for (const c of paths) assert.match(c.message, /physical, in place/);
  const fromCheckpoint = await cli(n, "restore", "apply", "--checkpoint", "cp1", "--yes", "--json");
  assert.match(fromCheckpoint.stderr, /in place/, "the whole cluster, restored in place");
  await cli(n, "up", "--detach", "--json");
  for (const node of ["participant1", "participant2"]) await waitForRecovery(n, node);
  assert.deepEqual(await bothSee(n, alice, bob, 3), atCp1, "the ledgers are as at the checkpoint");
  await create(n, 0, "a5", alice, bob);
  await bothSee(n, alice, bob, 4);

  // The cluster now runs on a new timeline from cp1; cp2 was written later on the old one and is
  // still reachable (recovery follows the timeline a restore point was written on).
  await cli(n, "down", "--json");
  await cli(n, "restore", "apply", "--checkpoint", "cp2", "--replace", "--yes", "--json");
  await cli(n, "up", "--detach", "--json");
  for (const node of ["participant1", "participant2"]) await waitForRecovery(n, node);
  assert.deepEqual(await bothSee(n, alice, bob, 4), atCp2, "the ledgers are as at cp2, a5 gone");

  // A time in the future of the cluster's own clock (the one that stamps commits; not this host's)
  // is refused before anything is recovered, naming that clock.
  const ahead = new Date(Date.parse(await serverTime(n)) + 3_600_000).toISOString();
  const future = await runLockstep(["restore", "plan", "--to-time", ahead, "--replace", "--json", ...n.cfg], {
    timeoutMs: 300_000,
  });
  assert.notEqual(future.code, 0, future.stdout + future.stderr);
  assert.match(future.stdout + future.stderr, /PITR_TARGET_UNREACHABLE/);
  assert.match(future.stdout + future.stderr, /future of the cluster's clock/);

  // A sequencer recovered to T1 cannot serve participants recovered to the checkpoint: refused.
  await cli(n, "down", "--json");
  const behind = await runLockstep(
    [
      "restore",
      "plan",
      "--to-time",
      cp.clusters[0]?.serverTime as string,
      "--sequencer-to-time",
      t1,
      "--replace",
      "--json",
      ...n.cfg,
    ],
    { timeoutMs: 300_000 },
  );
  assert.equal(behind.code, 3, behind.stdout + behind.stderr);
  const refused = behind.json<PlanJson>().checks.filter((c) => c.verdict === "refuse");
  assert.ok(
    refused.some((c) => c.check === "order"),
    `the order check refuses: ${JSON.stringify(refused)}`,
  );

  // The network to T1: exactly a1 and a2. The whole embedded cluster holds only the restored nodes:
  // it is restored in place. A first apply is killed after the swap, before any node is stamped: the
  // nodes refuse to start until a rerun finished it; the replaced data directories are kept.
  const planT1 = await runLockstep(["restore", "plan", "--to-time", t1, "--replace", "--json", ...n.cfg], {
    timeoutMs: 300_000,
  });
  assert.equal(planT1.code, 0, planT1.stdout + planT1.stderr);
  const setT1 = planT1.json<{ set: string }>().set;
  const killed = await killApplyAt(n, setT1, ["--replace"], /recovering to/);
  assert.match(killed, /in place/);
  const refusedStart = await runLockstep(["node", "start", "participant1", "--detach", "--json", ...n.cfg], {
    timeoutMs: 120_000,
  });
  assert.equal(refusedStart.code, 3, refusedStart.stdout + refusedStart.stderr);
  assert.match(refusedStart.stdout, /RESTORE_IN_PROGRESS/);
  const applied = await cli(n, "restore", "apply", "--to-time", t1, "--replace", "--yes", "--json");
  assert.equal(applied.json<{ set: string }>().set, setT1, "the plan's set is reused");
  const clusterDir = embeddedClusterDir(n.dataDir);
  const kept = readdirSync(clusterDir).filter((f) => f.startsWith("data.replaced-"));
  assert.equal(
    kept.length,
    4,
    `the two checkpoints' restores, the killed one and the rerun each kept one: ${kept}`,
  );
  await cli(n, "up", "--detach", "--json");
  for (const node of ["participant1", "participant2"]) await waitForRecovery(n, node);
  assert.deepEqual(await bothSee(n, alice, bob, 2), atT1, "the ledgers are as at T1");
});
