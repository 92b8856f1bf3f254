import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { after, test } from "node:test";
import pg from "pg";
import { parse, stringify } from "yaml";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { freePort } from "../../src/common/loopback.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { runLockstep } from "../support/cli.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  allocateKnownParty,
  contractKey,
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";
import {
  backupCreate,
  nodeStart,
  nodeStop,
  type PlanJson,
  restore,
  waitForNodeError,
} from "../support/restore-network.ts";

// Issue 13 (docs/restore.md, "The synchronizer is lost or restored behind the participants"), the
// second remedy: roll out a new synchronizer and migrate the participants to it, as Canton's
// repair.migrate_synchronizer(source, target, force = true). All through the CLI on real PostgreSQL.
// Traffic; the synchronizer alone backed up; more traffic; the synchronizer lost and restored from
// the older set: the participants stop on the fork. sync2 rolled out beside it (the old one keeps
// running under its own config); both participants
// migrated (one with a submission still in flight: refused, then forced); their contract sets agree;
// new transactions commit on sync2, transfers of contracts from before the loss among them; nothing
// duplicated or lost; the streams carry the migration marker; a set taken afterwards is safe and
// restorable, and one taken before is refused onto the migrated participant unless forced.

let network: LedgerNetwork | undefined;
/** The old synchronizer's config, written when the config moves to sync2 (its nodes keep running beside). */
let oldConfig: string | undefined;
after(async () => {
  if (oldConfig && network) {
    for (const node of ["sequencer1", "mediator1"])
      await runLockstep(["node", "stop", node, "--config", oldConfig]);
  }
  await network?.down();
});

const FORK_CODES = [
  "SEQUENCER_FORK_DETECTED",
  "PREVIOUS_TIMESTAMP_MISMATCH",
  "SEQUENCER_CHAIN_HASH_MISMATCH",
];
const p = (n: LedgerNetwork, i: 0 | 1) => n.clients[i] as LedgerClients;

async function create(clients: LedgerClients, id: string, issuer: string, owner: string, amount = "10.00") {
  const r = await clients.commands.submitAndWait(
    { commands: createIouCommand(id, issuer, owner, { amount }) },
    { timeoutMs: 60_000 },
  );
  return r.createdContractIds[0] as string;
}

async function transfer(
  clients: LedgerClients,
  id: string,
  contractId: string,
  owner: string,
  newOwner: string,
) {
  const r = await clients.commands.submitAndWait(
    {
      commands: {
        userId: "test-app",
        commandId: id,
        actAs: [owner],
        command: {
          case: "exercise",
          value: { contractId, choice: "Transfer", choiceArgument: { newOwner } },
        },
      },
    },
    { timeoutMs: 60_000 },
  );
  return r.createdContractIds[0] as string;
}

/** A party's active contracts at a participant, as what two participants must agree on. */
async function acs(clients: LedgerClients, party: string): Promise<Map<string, string>> {
  const r = await clients.state.getActiveContracts({ parties: [party] }, { timeoutMs: 30_000 });
  return new Map(r.contracts.map((c) => [c.contractId, contractKey(c)]));
}

/** Rows a query returns in a node's database (embedded cluster), read from outside the node. */
async function participantRows(n: LedgerNetwork, node: string, sql: string): Promise<number> {
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  await cluster.start();
  const client = new pg.Client({ connectionString: cluster.connectionUrl(embeddedDatabaseName(node)) });
  await client.connect();
  try {
    return (await client.query(sql)).rowCount ?? 0;
  } finally {
    await client.end();
  }
}

async function cli(n: LedgerNetwork, args: string[]) {
  return runLockstep([...args, "--json", ...n.cfg], { timeoutMs: 180_000 });
}

interface MigrationJson {
  participant: string;
  offset: string;
  from: string;
  to: string;
  forced: boolean;
  contractsMoved: string;
  abandonedCommandIds: string[];
  alreadyMigrated: boolean;
  started: boolean;
}

test("a lost synchronizer: roll out sync2, migrate both participants, and the ledger goes on there", async (t) => {
  const n = await startLedgerNetwork({ tolerance: "5s" });
  network = n;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");

  const a1 = await create(p(n, 0), "a1", alice, bob);
  const b1 = await create(p(n, 1), "b1", bob, alice);
  const beforeMigration = await backupCreate(n); // every node: restore-plan's synchronizer check below
  const a2 = await create(p(n, 0), "a2", alice, bob);
  const synchronizerOnly = await backupCreate(n, ["sequencer1", "mediator1"]);
  const a3 = await create(p(n, 0), "a3", alice, bob);
  const b2 = await create(p(n, 1), "b2", bob, alice);

  // The synchronizer is lost with a transaction in flight: its mediator goes first, so
  // participant1's request (alice only) is sequenced and stays pending, without a verdict.
  await nodeStop(n, "mediator1");
  await p(n, 0).submission.submit(
    { commands: createIouCommand("in-flight", alice, alice) },
    { timeoutMs: 10_000 },
  );
  await waitFor("participant1's request to be pending", async () =>
    (await participantRows(n, "participant1", "SELECT 1 FROM participant_requests WHERE state = 'pending'")) >
    0
      ? true
      : undefined,
  );
  await nodeStop(n, "sequencer1");
  // Restored from the older set, it is behind the participants: they stop on the fork.
  const restored = await restore(n, "apply", synchronizerOnly, [
    "--nodes",
    "sequencer1,mediator1",
    "--replace",
  ]);
  assert.equal(restored.code, 0, restored.stdout + restored.stderr);
  await nodeStart(n, "sequencer1");
  await nodeStart(n, "mediator1");
  await p(n, 1)
    .submission.submit({ commands: createIouCommand("after-restore", bob, alice) }, { timeoutMs: 10_000 })
    .catch(() => {});
  for (const node of ["participant1", "participant2"]) await waitForNodeError(n, node, FORK_CODES);

  // Roll out sync2 beside it: the participants stop, the config names the new synchronizer; the old
  // one keeps running under its own config (other participants might still use it).
  for (const node of ["participant1", "participant2"]) await nodeStop(n, node);
  const sync1Config = readFileSync(n.net.configPath, "utf8");
  oldConfig = `${n.net.configPath}.sync1.yaml`;
  writeFileSync(oldConfig, sync1Config);
  const config = parse(sync1Config) as ConfigInput;
  config.synchronizer.id = "sync2";
  config.synchronizer.sequencer = {
    ...config.synchronizer.sequencer,
    name: "sequencer2",
    port: await freePort(),
  };
  config.synchronizer.mediator = {
    ...config.synchronizer.mediator,
    name: "mediator2",
    port: await freePort(),
  };
  writeFileSync(n.net.configPath, stringify(config));

  const rolledOut = await cli(n, ["repair", "new-synchronizer", "--id", "sync2"]);
  assert.equal(rolledOut.code, 0, rolledOut.stdout + rolledOut.stderr);
  const rollout = rolledOut.json<{ synchronizerId: string; next: string[] }>();
  assert.match(rollout.synchronizerId, /^sync2::/);
  assert.equal(rollout.next.length, 2, "both participants are still on sync1");

  // participant1 has a submission in flight: refused without --force (Canton's id), forced with it.
  const migrate = (node: string, ...extra: string[]) =>
    cli(n, ["repair", "migrate-synchronizer", node, "--from", "sync1", "--to", "sync2", ...extra]);
  // A wrong source is refused, and changes nothing.
  const wrongSource = await cli(n, [
    "repair",
    "migrate-synchronizer",
    "participant2",
    "--from",
    "sync9",
    "--to",
    "sync2",
  ]);
  assert.equal(wrongSource.json<{ error: { code: string } }>().error.code, "SYNCHRONIZER_MIGRATION_INVALID");
  const refused = await migrate("participant1");
  assert.equal(refused.code, 3, refused.stdout + refused.stderr);
  assert.equal(
    refused.json<{ error: { code: string } }>().error.code,
    "SYNC_SERVICE_SYNCHRONIZER_MUST_NOT_HAVE_IN_FLIGHT_TRANSACTIONS",
  );
  const forced = await migrate("participant1", "--force");
  assert.equal(forced.code, 0, forced.stdout + forced.stderr);
  const m1 = forced.json<MigrationJson>();
  assert.deepEqual(m1.abandonedCommandIds, ["in-flight"]);
  assert.equal(m1.forced, true);
  assert.equal(m1.started, true);
  const second = await migrate("participant2");
  assert.equal(second.code, 0, second.stdout + second.stderr);
  const m2 = second.json<MigrationJson>();
  assert.equal(m2.forced, false);
  assert.equal(
    (await migrate("participant2")).json<MigrationJson>().alreadyMigrated,
    true,
    "a rerun changes nothing",
  );
  t.diagnostic(`participant1: ${forced.stderr.trim()}`);

  // Every contract from before the loss moved; the participants agree.
  const expected = [a1, b1, a2, a3, b2].sort();
  assert.deepEqual([...(await acs(p(n, 0), alice)).keys()].sort(), expected);
  assert.deepEqual([...(await acs(p(n, 1), bob)).keys()].sort(), expected);
  assert.equal(BigInt(m1.contractsMoved), 5n);
  const compared = await cli(n, ["repair", "compare-acs", "participant1", "participant2"]);
  assert.equal(compared.code, 0, compared.stdout + compared.stderr);

  // The ledger goes on on sync2, including transfers of contracts created before the loss.
  const c1 = await create(p(n, 0), "on-sync2", alice, bob);
  const moved = await transfer(p(n, 0), "transfer-b1", b1, alice, bob); // alice owns b1
  const back = await transfer(p(n, 1), "transfer-a1", a1, bob, alice); // bob owns a1
  // b1 moved to bob alone (issuer bob, owner bob), a1 back to alice alone: one side each.
  const shared = [a2, a3, b2, c1];
  // Each transfer was acknowledged by its submitter's participant; the other sees it a moment later.
  const settled = (clients: LedgerClients, party: string, expected: string[]) =>
    waitFor(`${party}'s contracts to settle`, async () => {
      const now = await acs(clients, party);
      return [...now.keys()].sort().join() === [...expected].sort().join() ? now : undefined;
    }).catch(async (error: unknown) => {
      throw new Error(
        `${error}: ${[...(await acs(clients, party)).keys()].sort().join()} ≠ ${[...expected].sort().join()}`,
      );
    });
  const atP1 = await settled(p(n, 0), alice, [...shared, back]);
  const atP2 = await settled(p(n, 1), bob, [...shared, moved]);
  assert.deepEqual(
    [...atP1.keys()].sort(),
    [...shared, back].sort(),
    "participant1: nothing duplicated or lost",
  );
  assert.deepEqual(
    [...atP2.keys()].sort(),
    [...shared, moved].sort(),
    "participant2: nothing duplicated or lost",
  );
  for (const id of shared) assert.equal(atP2.get(id), atP1.get(id), `${id} is the same contract on both`);

  // The streams: the marker at its offset, between the old and the new updates; the abandoned
  // command completes with its code.
  const offsets: { offset: bigint; kind: string }[] = [];
  const end = (await p(n, 0).state.getLedgerEnd({})).offset;
  for await (const r of p(n, 0).updates.getUpdates({
    beginExclusive: 0n,
    endInclusive: end,
    parties: [alice],
  })) {
    if (r.update.case === "transaction") offsets.push({ offset: r.update.value.offset, kind: "transaction" });
    if (r.update.case === "synchronizerMigration") {
      offsets.push({ offset: r.update.value.offset, kind: "migration" });
      assert.equal(r.update.value.toSynchronizerId, "sync2");
    }
  }
  const marker = offsets.find((o) => o.kind === "migration");
  assert.equal(marker?.offset, BigInt(m1.offset));
  assert.ok(
    offsets.every((o, i) => i === 0 || o.offset > (offsets[i - 1] as { offset: bigint }).offset),
    "offsets strictly increase",
  );
  assert.ok(
    offsets.some((o) => o.offset < BigInt(m1.offset)) && offsets.some((o) => o.offset > BigInt(m1.offset)),
  );
  const abort = new AbortController();
  const completions: string[] = [];
  const stream = p(n, 0).completions.completionStream(
    { userId: "test-app", parties: [alice], beginExclusive: 0n },
    { signal: abort.signal },
  );
  for await (const r of stream) {
    if (r.response.case === "completion" && r.response.value.commandId === "in-flight") {
      const status = r.response.value.status;
      completions.push(status.case === "failed" ? status.value.code : "succeeded");
    }
    if (r.response.case === "synchronizerMigration") completions.push("marker");
    if (completions.includes("marker") && completions.length >= 2) break;
  }
  abort.abort();
  assert.deepEqual(completions, ["SYNCHRONIZER_MIGRATED_WHILE_IN_FLIGHT", "marker"]);

  // status: sync1 inactive since the marker, sync2 active.
  const statusNow = await cli(n, ["status"]);
  const p1Status = statusNow
    .json<{ nodes: { name: string; position: { synchronizers?: unknown } | null }[] }>()
    .nodes.find((x) => x.name === "participant1");
  assert.deepEqual(p1Status?.position?.synchronizers, [
    { id: "sync1", status: "inactive", untilOffset: m1.offset, forced: true },
    { id: "sync2", status: "active" },
  ]);
  // Started again under the old config, the migrated participant refuses to connect to sync1.
  await nodeStop(n, "participant1");
  const underOld = await runLockstep([
    "node",
    "start",
    "participant1",
    "--detach",
    "--json",
    "--config",
    oldConfig,
  ]);
  assert.equal(underOld.code, 0, underOld.stdout + underOld.stderr);
  const mismatch = await waitForNodeError(n, "participant1", ["PARTICIPANT_SYNCHRONIZER_MISMATCH"]);
  assert.match(mismatch.lastError?.remedy ?? "", /migrate-synchronizer participant1 --from sync2 --to sync1/);
  await nodeStop(n, "participant1");
  await nodeStart(n, "participant1");

  // A set taken now is safe and restorable; one taken before the migration is refused onto the
  // migrated participant unless that check is forced.
  const afterSet = await cli(n, ["backup", "create"]);
  assert.equal(afterSet.code, 0, afterSet.stdout + afterSet.stderr);
  assert.equal(afterSet.json<{ safe: boolean }>().safe, true, afterSet.stdout);
  const drill = await cli(n, ["backup", "verify", afterSet.json<{ set: string }>().set, "--drill"]);
  assert.equal(drill.code, 0, drill.stdout + drill.stderr);
  const synchronizerCheck = (plan: PlanJson) =>
    plan.checks.find((c) => c.node === "participant1" && c.check === "synchronizer");
  const oldPlan = (
    await restore(n, "plan", beforeMigration, ["--nodes", "participant1", "--replace"])
  ).json<PlanJson>();
  assert.equal(synchronizerCheck(oldPlan)?.verdict, "refuse", JSON.stringify(oldPlan.checks));
  assert.equal(synchronizerCheck(oldPlan)?.code, "RESTORE_SYNCHRONIZER_MIGRATED");
  const forcedPlan = (
    await restore(n, "plan", beforeMigration, [
      "--nodes",
      "participant1",
      "--replace",
      "--force",
      "synchronizer",
    ])
  ).json<PlanJson>();
  assert.equal(synchronizerCheck(forcedPlan)?.verdict, "warn");
});
