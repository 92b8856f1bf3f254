import assert from "node:assert/strict";
import { after, test } from "node:test";
import pg from "pg";
import { loadConfig } from "../../src/common/config.ts";
import { createNodeClient } from "../../src/common/rpc-client.ts";
import { configureClientTls } from "../../src/common/tls-client.ts";
import { CommandService } from "../../src/gen/lockstep/ledger/v1/command_service_pb.ts";
import { runLockstep } from "../support/cli.ts";
import { createIouCommand, startLedgerNetwork, waitFor } from "../support/ledger-network.ts";
import { startReplicatedPostgres } from "../support/replication.ts";

// `lockstep failover` (docs/operations.md "Fail-over runbook") with TLS on every port, mutual TLS
// between nodes and the admin token: participant1's database is replicated; its primary is lost, the
// standby promoted, and the command starts participant1 on it, waiting over https (with the admin
// client certificate) until it is active and its sequencer, dialed with participant1's own
// certificate, has heard the new writer epoch. The old writer with a live process is
// tls-failover.test.ts's restored copy (one host here: the old process is stopped first, step 2).

// At the top level, as replication.ts says (its servers outlive a hook's scope).
const repl = await startReplicatedPostgres({ replication: "sync" });
await repl.createDatabase("participant1");

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

test("failover of participant1 to its promoted standby over mutual TLS", async (t) => {
  const n = await startLedgerNetwork({
    participants: 1,
    tolerance: "10s",
    configure: (config) => {
      (config as Record<string, unknown>).tls = { auto: true, "client-auth": "require" };
      const p1 = config.participants?.[0] as Record<string, unknown>;
      p1.storage = { url: repl.primary.url("participant1") };
    },
  });
  cleanups.push(() => n.down());
  configureClientTls((await loadConfig({ path: n.net.configPath })).config);
  const port = n.participantPorts[0] as number;
  const commands = createNodeClient(CommandService, `https://127.0.0.1:${port}`);
  const allocated = await runLockstep([
    ...["ledger", "allocate-party", "alice", "--participant", "participant1", "--json"],
    ...n.cfg,
  ]);
  assert.equal(allocated.code, 0, allocated.stdout + allocated.stderr);
  const alice = allocated.json<{ party: string }>().party;
  const commit = (id: string) =>
    waitFor(
      `${id} to commit`,
      async () => {
        const r = await commands.submitAndWait(
          { commands: createIouCommand(id, alice, alice, { amount: "1.00" }) },
          { timeoutMs: 20_000 },
        );
        return r.offset > 0n ? r.offset : undefined;
      },
      90_000,
      500,
    );
  const before = await commit("before-failover");

  // Runbook steps 2 and 3: the old writer stopped, its primary gone, the standby promoted.
  const stopped = await runLockstep(["node", "stop", "participant1", ...n.cfg]);
  assert.equal(stopped.code, 0, stopped.stdout + stopped.stderr);
  await repl.primary.stop("immediate");
  const client = new pg.Client({ connectionString: repl.standbys[0]?.url("postgres") });
  await client.connect();
  try {
    const r = await client.query<{ promoted: boolean }>("SELECT pg_promote(true, 60) AS promoted");
    assert.equal(r.rows[0]?.promoted, true, "the standby promoted");
  } finally {
    await client.end();
  }

  const target = repl.standbys[0]?.url("participant1") as string;
  const failover = await runLockstep(["failover", "participant1", "--to", target, "--json", ...n.cfg], {
    timeoutMs: 180_000,
  });
  assert.equal(failover.code, 0, failover.stdout + failover.stderr);
  t.diagnostic(`failover (stderr):\n${failover.stderr.trim()}`);
  const result = failover.json<{
    writerEpoch: string;
    writerEpochBefore: string;
    heardBySequencer: boolean;
    oldPrimaryFenced: { fenced: string };
    address: string;
  }>();
  assert.equal(result.oldPrimaryFenced.fenced, "unreachable");
  assert.ok(BigInt(result.writerEpoch) > BigInt(result.writerEpochBefore), JSON.stringify(result));
  assert.equal(result.heardBySequencer, true, "the sequencer heard the new epoch over mutual TLS");

  // The ledger goes on from the promoted copy: the earlier command is there, a new one commits.
  const afterOffset = await commit("after-failover");
  assert.ok(afterOffset > before);
  const end = await runLockstep(["ledger", "end", "--participant", "participant1", "--json", ...n.cfg]);
  assert.equal(end.code, 0, end.stdout + end.stderr);
});
