import assert from "node:assert/strict";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { fromConnectError } from "../../src/common/connect-errors.ts";
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
  dropNodeDatabase,
  killApplyAt,
  nodeLog,
  nodeStart,
  nodeStatus,
  nodeStop,
  type PlanJson,
  restore,
  waitForRecovery,
} from "../support/restore-network.ts";

// Scenarios 1, 4 and 5 on one network (two shared cores): participant2 loses its database after a
// backup, is restored from the older set, replays from the sequencer and ends with the same ledger;
// a command first submitted after the backup is refused while deduplication recovers and never
// commits twice; an application holding pre-restore state is told to reset.

let network: LedgerNetwork | undefined;
after(() => network?.down());

const p = (n: LedgerNetwork, i: 0 | 1) => n.clients[i] as LedgerClients;

async function create(n: LedgerNetwork, i: 0 | 1, id: string, issuer: string, owner: string, amount: string) {
  return p(n, i).commands.submitAndWait(
    { commands: createIouCommand(id, issuer, owner, { amount }) },
    { timeoutMs: 60_000 },
  );
}

async function errorCode(call: () => Promise<unknown>): Promise<string> {
  try {
    await call();
    return "ok";
  } catch (error) {
    return fromConnectError(error)?.code ?? String(error);
  }
}

test("a participant restored from an older set replays, recovers deduplication and resets applications", async (t) => {
  const n = await startLedgerNetwork({ tolerance: "5s" });
  network = n;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");
  await create(n, 0, "a1", alice, bob, "1.00");
  await create(n, 1, "b1", bob, alice, "2.00");

  const set = await backupCreate(n);
  t.diagnostic(`backup set ${set}`);

  // After the backup: traffic the restored participant must get back from the sequencer.
  await create(n, 0, "a2", alice, bob, "3.00");
  await create(n, 1, "dup-1", bob, alice, "777.00");
  await create(n, 0, "a3", alice, bob, "4.00");
  const before = await p(n, 1).state.getLedgerEnd({});
  const expected = await acsKeys(n, 0, alice);
  assert.equal(expected.length, 5);

  // The loss: participant2's process and database are gone.
  await nodeStop(n, "participant2");
  await dropNodeDatabase(n, "participant2");

  const plan = await restore(n, "plan", set, ["--nodes", "participant2"]);
  assert.equal(plan.code, 0, plan.stdout + plan.stderr);
  const checks = plan.json<PlanJson>().checks;
  for (const check of ["checksums", "order", "target-empty", "node-stopped", "sequencer-fork", "keys"]) {
    const c = checks.find((x) => x.node === "participant2" && x.check === check);
    assert.equal(c?.verdict, "pass", `${check}: ${JSON.stringify(c)}`);
  }

  // Apply while the sequencer is down, so the application sees the restored state before replay.
  await nodeStop(n, "sequencer1");
  // Scenario 8: the first apply is killed mid-way; the node's database is untouched, a rerun succeeds.
  await killApplyAt(n, set, ["--nodes", "participant2"], /participant2: pg_restore of/);
  const interrupted = await restore(n, "plan", set, ["--nodes", "participant2"]);
  const after = interrupted.json<PlanJson>().checks.filter((c) => c.node === "participant2");
  assert.equal(
    after.find((c) => c.check === "restore-incomplete")?.code,
    "RESTORE_INCOMPLETE",
    interrupted.stdout,
  );
  assert.equal(
    after.find((c) => c.check === "target-empty")?.verdict,
    "pass",
    "the half restore is not in place",
  );
  const apply = await restore(n, "apply", set, ["--nodes", "participant2"]);
  assert.equal(apply.code, 0, apply.stdout + apply.stderr);
  await nodeStart(n, "participant2");

  // Scenario 5: the application's offset is after the restored ledger end; its incarnation is old.
  const restoredEnd = await p(n, 1).state.getLedgerEnd({});
  assert.notEqual(restoredEnd.incarnation, before.incarnation, "a new incarnation");
  assert.ok(restoredEnd.offset < before.offset, `${restoredEnd.offset} < ${before.offset}`);
  const updatesFrom = (incarnation: string) => async () => {
    for await (const _ of p(n, 1).updates.getUpdates(
      { beginExclusive: before.offset, endInclusive: before.offset, parties: [bob], incarnation },
      { timeoutMs: 10_000 },
    ));
  };
  assert.equal(await errorCode(updatesFrom("")), "OFFSET_AFTER_LEDGER_END");
  assert.equal(await errorCode(updatesFrom(before.incarnation)), "PARTICIPANT_INCARNATION_CHANGED");
  assert.equal(
    await errorCode(() => p(n, 1).state.getLedgerEnd({ incarnation: before.incarnation })),
    "PARTICIPANT_INCARNATION_CHANGED",
  );

  // Scenario 4: the command submitted after the backup is refused while deduplication recovers.
  const recovering = await nodeStatus(n, "participant2");
  assert.equal(recovering.deduplicationRecovery?.replayedToHead, false, JSON.stringify(recovering));
  assert.equal(
    await errorCode(() => create(n, 1, "dup-1", bob, alice, "777.00")),
    "DEDUPLICATION_STATE_RECOVERING",
  );

  // Scenario 1: the sequencer comes back, participant2 replays and agrees with participant1.
  await nodeStart(n, "sequencer1");
  await waitFor(
    "participant2 to replay to participant1's ledger",
    async () => (JSON.stringify(await acsKeys(n, 1, bob)) === JSON.stringify(expected) ? true : undefined),
    90_000,
    1000,
  ).catch((error) => {
    throw new Error(`${error}\n${nodeLog(n, "participant2")}`);
  });
  const replayedEnd = await p(n, 1).state.getLedgerEnd({});
  assert.ok(replayedEnd.offset >= before.offset, "replay brought back every update");

  // The window closes by itself (time proofs), then the resubmission is a duplicate, not a second commit.
  const done = await waitForRecovery(n, "participant2");
  assert.equal(done.lastError, null);
  assert.equal(await errorCode(() => create(n, 1, "dup-1", bob, alice, "777.00")), "DUPLICATE_COMMAND");
  await create(n, 1, "b2", bob, alice, "5.00");
  await waitFor("participant1 to see the new command", async () => {
    const keys = await acsKeys(n, 0, alice);
    return keys.length === 6 ? keys : undefined;
  });
  for (const i of [0, 1] as const) {
    const party = i === 0 ? alice : bob;
    const acs = await p(n, i).state.getActiveContracts({ parties: [party] });
    const dup = acs.contracts.filter(
      (c) => c.arguments?.amount === "777.00" || String(c.arguments?.amount) === "777.00",
    );
    assert.equal(dup.length, 1, `participant${i + 1}: dup-1 committed exactly once`);
  }
  assert.deepEqual(await acsKeys(n, 1, bob), await acsKeys(n, 0, alice), "the ledgers agree");

  // Scenario 6: the set's retention holds keep `prune --safe` below its position; once a forced
  // prune passed it anyway, restoring participant2 from it would leave a gap: the plan refuses with
  // EVENTS_UNAVAILABLE_FOR_TIMESTAMP and names the set as stranded.
  const position = BigInt(
    (await restore(n, "plan", set, ["--nodes", "participant2"])).json<{
      nodes: { position: { lastStored: { timestamp: string } } }[];
    }>().nodes[0]?.position.lastStored.timestamp ?? "0",
  );
  const minAck = await waitFor(
    "every acknowledgement past the set's position",
    async () => {
      const s = await runLockstep(["sequencer", "status", "--json", ...n.cfg]);
      const status = s.json<{
        safePruningTimestamp: string | null;
        members: { acknowledged: string | null }[];
      }>();
      assert.ok(BigInt(status.safePruningTimestamp ?? 0) <= position, "the hold keeps the safe point");
      const acks = status.members.map((m) => BigInt(m.acknowledged ?? 0));
      const [min = 0n] = acks.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      return min > position ? min : undefined;
    },
    30_000,
    1000,
  );
  const pruned = await runLockstep([
    "sequencer",
    "prune",
    "--before",
    String(minAck),
    "--force",
    "--json",
    ...n.cfg,
  ]);
  assert.equal(pruned.code, 0, pruned.stdout + pruned.stderr);
  const refused = await restore(n, "plan", set, ["--nodes", "participant2"]);
  assert.equal(refused.code, 3, refused.stdout);
  const events = refused.json<PlanJson>().checks.find((c) => c.check === "sequencer-events");
  assert.equal(events?.verdict, "refuse");
  assert.equal(events?.code, "EVENTS_UNAVAILABLE_FOR_TIMESTAMP");
  const stranded = refused.json<PlanJson>().checks.find((c) => c.check === "retention");
  assert.equal(stranded?.code, "RESTORE_SET_STRANDED");

  // A damaged set is refused: an artifact that does not match its checksum, then the manifest itself.
  const setDir = join(n.net.dir, "backups", set);
  appendFileSync(join(setDir, "participant2.dump"), "x");
  const damaged = await restore(n, "plan", set, ["--nodes", "participant2"]);
  const sums = damaged.json<PlanJson>().checks.find((c) => c.check === "checksums");
  assert.deepEqual([damaged.code, sums?.verdict, sums?.code], [3, "refuse", "BACKUP_CORRUPTED"]);
  const manifestPath = join(setDir, "manifest.json");
  writeFileSync(
    manifestPath,
    readFileSync(manifestPath, "utf8").replace(/"ledgerEnd": "\d+"/, '"ledgerEnd": "999"'),
  );
  const tampered = await restore(n, "plan", set);
  const manifest = tampered.json<PlanJson>().checks[0];
  assert.deepEqual([tampered.code, manifest?.check, manifest?.code], [3, "manifest", "BACKUP_CORRUPTED"]);
});
