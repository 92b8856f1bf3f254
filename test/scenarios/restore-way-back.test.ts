import assert from "node:assert/strict";
import { after, test } from "node:test";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
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
  backupCreate,
  killApplyAt,
  nodeStart,
  nodeStatus,
  nodeStop,
  restore,
  waitForRecovery,
} from "../support/restore-network.ts";

// Issue 9, defect 5: a restore keeps the way back. The old code dropped the replaced database right
// after the swap, and with the sequencer down it restored over a live database with only warnings.
// Here: a restore whose live checks cannot run is refused under --replace; `restore apply` killed
// at each of its steps leaves the node's database (old or new) in place and a rerun completes it;
// the replaced database is kept and listed, and drop-kept drops it only once the restored node
// passed its first resubscription check.

let network: LedgerNetwork | undefined;
after(() => network?.down());

interface KeptJson {
  database: string;
  backupSet: string | null;
  resubscribed: boolean;
}

async function errorCode(call: () => Promise<unknown>): Promise<string> {
  try {
    await call();
    return "ok";
  } catch (error) {
    return fromConnectError(error)?.code ?? String(error);
  }
}

async function databases(n: LedgerNetwork): Promise<string[]> {
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  await cluster.start();
  return cluster.listDatabases();
}

async function kept(n: LedgerNetwork): Promise<KeptJson[]> {
  const s = (await nodeStatus(n, "participant1")) as unknown as { keptDatabases: KeptJson[] | null };
  assert.ok(s.keptDatabases, "status lists participant1's kept databases");
  return s.keptDatabases;
}

// The step lines `restore apply` prints for a node, in order (restore-apply.ts).
const STEPS = [
  /participant1: creating staging database/,
  /participant1: pg_restore of/,
  /participant1: bringing the schema up/,
  /participant1: reading the sequencer's head/,
  /participant1: stamping a new incarnation/,
  /participant1: renaming/,
];

test("a restore killed at any step leaves a database in place, keeps the replaced one, and drops it only once safe", async (t) => {
  const n = await startLedgerNetwork({ participants: 1, tolerance: "2s" });
  network = n;
  const p1 = n.clients[0] as LedgerClients;
  const alice = await allocateKnownParty(n, 0, "alice");
  const create = (id: string) =>
    p1.commands.submitAndWait({ commands: createIouCommand(id, alice, alice) }, { timeoutMs: 60_000 });
  await create("a1");
  const set = await backupCreate(n, ["participant1"]);
  await create("a2");
  await nodeStop(n, "participant1");
  const db = embeddedDatabaseName("participant1");

  // The sequencer down: sequencer-events, sequencer-fork and keys cannot run; --replace is refused
  // naming them (old code: warnings only, and the replaced database was dropped).
  await nodeStop(n, "sequencer1");
  const refused = await restore(n, "apply", set, ["--nodes", "participant1", "--replace"]);
  assert.equal(refused.code, 3, refused.stdout + refused.stderr);
  const body = refused.json<{ error: { code: string; message: string } }>();
  assert.equal(body.error.code, "RESTORE_REFUSED");
  for (const check of ["sequencer-events", "sequencer-fork", "keys"]) {
    assert.match(body.error.message, new RegExp(`participant1:${check} \\(RESTORE_CHECK_SKIPPED\\)`));
  }
  await nodeStart(n, "sequencer1");

  for (const [i, step] of STEPS.entries()) {
    const seen = await killApplyAt(n, set, ["--nodes", "participant1", "--replace"], step);
    t.diagnostic(`killed at ${step}: ${seen.trim().split("\n").at(-1)}`);
    assert.ok((await databases(n)).includes(db), `after a kill at ${step}, ${db} exists (old or new)`);
    const rerun = await restore(n, "apply", set, ["--nodes", "participant1", "--replace"]);
    assert.equal(rerun.code, 0, rerun.stdout + rerun.stderr);
    assert.ok(
      (await kept(n)).some((k) => k.backupSet === set),
      "the replaced database is kept and listed with its restore",
    );
    if (i === 0) {
      // Not started since the restore: it has not passed its resubscription check.
      const early = await runLockstep(["restore", "drop-kept", "--json", ...n.cfg]);
      assert.equal(early.code, 3, early.stdout + early.stderr);
      assert.equal(early.json<{ error: { code: string } }>().error.code, "RESTORE_KEPT_DATABASE_NEEDED");
    }
    await nodeStart(n, "participant1");
    await waitForRecovery(n, "participant1");
    assert.equal(
      await errorCode(() => create(`after-${i}`)),
      "ok",
      `participant1 works after a kill at ${step}`,
    );
    if (i < STEPS.length - 1) await nodeStop(n, "participant1");
  }

  // Running and resubscribed: every kept database may go now.
  const all = await waitFor(
    "participant1's resubscription check to be recorded",
    async () => {
      const list = await kept(n);
      return list.length > 0 && list.every((k) => k.resubscribed) ? list : undefined;
    },
    30_000,
    500,
  );
  const dropped = await runLockstep(["restore", "drop-kept", "--nodes", "participant1", "--json", ...n.cfg]);
  assert.equal(dropped.code, 0, dropped.stdout + dropped.stderr);
  assert.deepEqual(
    dropped
      .json<{ dropped: { database: string }[] }>()
      .dropped.map((d) => d.database)
      .sort(),
    all.map((k) => k.database).sort(),
  );
  assert.deepEqual(await kept(n), []);
  const left = (await databases(n)).filter((d) => d.startsWith(`${db}__replaced_`));
  assert.deepEqual(left, [], "dropped on the server");
});
