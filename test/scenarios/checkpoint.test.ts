import assert from "node:assert/strict";
import { after, test } from "node:test";
import { runLockstep } from "../support/cli.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  allocateKnownParty,
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
} from "../support/ledger-network.ts";
import { waitUntil } from "../support/wait.ts";

// `lockstep checkpoint create|list` (src/backup/checkpoint.ts) on a live network under traffic: one
// restore point for the embedded cluster all nodes share, each node's position read under its
// writers' lock, in the safe order (no member ahead of the sequencer), and written as a backup set
// that replays the cluster's pgBackRest backup to it. A cluster without a backup to replay from is
// refused. Restoring to a checkpoint: test/scenarios/point-in-time.test.ts.

let network: LedgerNetwork | undefined;
after(() => network?.down());

interface CheckpointJson {
  name: string;
  set: string;
  clusters: { cluster: string; lsn: string; nodes: string[] }[];
  nodes: { name: string; kind: string; position: Record<string, unknown> }[];
}

test("a checkpoint under traffic: one restore point per cluster, positions in the safe order", async () => {
  const n = await startLedgerNetwork({
    configure: (config) => {
      config.backup = { ...(config.backup ?? {}), engine: "pgbackrest" };
    },
  });
  network = n;
  // No pgBackRest backup yet: nothing a recovery to the checkpoint could start from.
  const early = await runLockstep(["checkpoint", "create", "cp0", "--json", ...n.cfg]);
  assert.equal(early.code, 2, early.stdout + early.stderr);
  assert.match(early.stdout, /PITR_NO_BASE_BACKUP/);
  const backup = await runLockstep(["backup", "create", "--json", ...n.cfg], { timeoutMs: 180_000 });
  assert.equal(backup.code, 0, backup.stdout + backup.stderr);
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");
  const clients = n.clients as LedgerClients[];
  let stop = false;
  let committed = 0;
  const traffic = (async () => {
    for (let i = 0; !stop; i++) {
      await (clients[i % 2] as LedgerClients).commands.submitAndWait(
        { commands: createIouCommand(`t-${i}`, i % 2 ? bob : alice, i % 2 ? alice : bob) },
        { timeoutMs: 60_000 },
      );
      committed++;
    }
  })();
  await waitUntil("traffic flowing", () => committed >= 3, 60_000, 20);
  const created = await runLockstep(["checkpoint", "create", "cp1", "--json", ...n.cfg]);
  const afterCheckpoint = committed;
  await waitUntil("traffic after the checkpoint", () => committed >= afterCheckpoint + 2, 60_000, 20);
  stop = true;
  await traffic;
  assert.equal(created.code, 0, created.stdout + created.stderr);
  const record = created.json<CheckpointJson>();
  assert.equal(record.clusters.length, 1, "the embedded cluster: one restore point");
  assert.match(record.clusters[0]?.lsn ?? "", /^[0-9A-F]+\/[0-9A-F]+$/);
  assert.deepEqual(record.nodes.map((x) => x.name).sort(), [
    "mediator1",
    "participant1",
    "participant2",
    "sequencer1",
  ]);
  const sequencer = record.nodes.find((x) => x.kind === "sequencer")?.position as {
    head: string;
    members: Record<string, string | null>;
  };
  for (const member of record.nodes.filter((x) => x.kind !== "sequencer")) {
    const clean = member.position.clean as string | null;
    assert.ok(
      clean !== null && BigInt(clean) <= BigInt(sequencer.head),
      `${member.name} is not ahead of the sequencer`,
    );
  }

  const again = await runLockstep(["checkpoint", "create", "cp1", "--json", ...n.cfg]);
  assert.equal(again.code, 2, "a name is used once");
  const set = await runLockstep(["backup", "list", "--json", ...n.cfg]);
  const listedSet = set
    .json<{ sets: { id: string; mode: string; safe: boolean }[] }>()
    .sets.find((s) => s.id === record.set);
  assert.equal(listedSet?.mode, "checkpoint", set.stdout);
  assert.equal(listedSet?.safe, true, "the checkpoint's set passes the order check");
  // Exactness under traffic: each node recovered to the restore point (a scratch cluster) has the
  // identity and position the checkpoint read under its writer lock (the drill compares them).
  const drill = await runLockstep(["backup", "verify", record.set, "--drill", "--json", ...n.cfg], {
    timeoutMs: 300_000,
  });
  assert.equal(drill.code, 0, drill.stdout + drill.stderr);
  const drilled = drill.json<{ ok: boolean; drill: { node: string; checks: string[] }[] }>();
  assert.equal(drilled.ok, true);
  assert.equal(drilled.drill.length, 4);
  for (const node of drilled.drill) assert.match(node.checks.join(";"), /position match the manifest/);
  const listed = await runLockstep(["checkpoint", "list", "--json", ...n.cfg]);
  assert.deepEqual(
    listed.json<{ checkpoints: CheckpointJson[] }>().checkpoints.map((c) => c.name),
    ["cp1"],
  );
});
