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
  waitForRecovery,
} from "../support/restore-network.ts";

// Issue 9 defect 1: sequencer pruning never strands a retained backup or a restoring member.
// Old code: `sequencer prune --safe` pruned up to the members' acknowledgements (about a second
// behind the head), after which every participant backup was refused with
// EVENTS_UNAVAILABLE_FOR_TIMESTAMP; restore left the member's acknowledgement where it was; expire
// released nothing; a forced prune did not exist and nothing marked a set as stranded.

let network: LedgerNetwork | undefined;
after(() => network?.down());

interface SequencerStatusJson {
  head: string | null;
  pruningLowerBound: string | null;
  safePruningTimestamp: string | null;
  pinnedBySet: string | null;
  holds: { set: string; member: string; timestamp: string }[];
  stranded: { set: string; prunedBefore: string }[];
  members: { member: string; acknowledged: string | null }[];
}

interface ListJson {
  sets: { id: string; hold: string; withinRetentionUntil: string | null; stranded: unknown }[];
}

const cli = (n: LedgerNetwork, ...args: string[]) => runLockstep([...args, "--json", ...n.cfg]);

async function sequencerStatus(n: LedgerNetwork): Promise<SequencerStatusJson> {
  const r = await cli(n, "sequencer", "status");
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.json<SequencerStatusJson>();
}

/** The participant's last stored event in a set (the position its hold keeps). */
async function heldPosition(n: LedgerNetwork, set: string, node: string): Promise<string> {
  const s = await sequencerStatus(n);
  const hold = s.holds.find((h) => h.set === set && h.member.startsWith(`${node}::`));
  assert.ok(hold, `${set} holds ${node}: ${JSON.stringify(s.holds)}`);
  return hold.timestamp;
}

async function create(n: LedgerNetwork, id: string, party: string) {
  await (n.clients[0] as LedgerClients).commands.submitAndWait(
    { commands: createIouCommand(id, party, party) },
    { timeoutMs: 60_000 },
  );
}

/** Traffic moves the acknowledgements past the set's positions: then its hold pins the safe point. */
async function waitPinnedBy(n: LedgerNetwork, set: string): Promise<SequencerStatusJson> {
  return waitFor(
    `backup set ${set} to pin the safe pruning point`,
    async () => {
      const s = await sequencerStatus(n);
      return s.pinnedBySet === set ? s : undefined;
    },
    60_000,
    500,
  );
}

test("retention holds: prune keeps retained sets and restoring members; expire releases; a forced prune strands, visibly", async () => {
  const n = await startLedgerNetwork({ participants: 1, tolerance: "5s" });
  network = n;
  const alice = await allocateKnownParty(n, 0, "alice");
  await create(n, "h1", alice);
  const s1 = await backupCreate(n);
  const s1Position = await heldPosition(n, s1, "participant1");
  assert.ok(
    (await sequencerStatus(n)).holds.some((h) => h.set === s1 && h.member.startsWith("mediator1::")),
    "the mediator's position is held too",
  );
  await create(n, "h2", alice);
  const pinned = await waitPinnedBy(n, s1);
  assert.ok(BigInt(pinned.safePruningTimestamp ?? 0) <= BigInt(s1Position));

  // --safe stops at the hold; a restore plan of the set still finds its events.
  const pruned = await cli(n, "sequencer", "prune", "--safe");
  assert.equal(pruned.code, 0, pruned.stdout + pruned.stderr);
  const plan = await restore(n, "plan", s1, ["--nodes", "participant1", "--replace"]);
  const events = plan.json<PlanJson>().checks.find((c) => c.check === "sequencer-events");
  assert.equal(events?.verdict, "pass", plan.stdout);

  // Past the hold: refused, naming the set; --force never overrides an acknowledgement.
  const past = await cli(n, "sequencer", "prune", "--before", String(BigInt(s1Position) + 1n));
  assert.equal(past.code, 3, past.stdout + past.stderr);
  assert.match(past.stdout, /UNSAFE_TO_PRUNE/);
  assert.match(past.stdout, new RegExp(s1));
  const head = BigInt((await sequencerStatus(n)).head ?? 0);
  const beyondAcks = await cli(n, "sequencer", "prune", "--before", String(head + 1n), "--force");
  assert.equal(beyondAcks.code, 3, beyondAcks.stdout);
  assert.match(beyondAcks.stdout, /acknowledged|has not acknowledged/);

  // A restored member goes back behind its acknowledgement: restore apply lowers it.
  await nodeStop(n, "participant1");
  const applied = await restore(n, "apply", s1, ["--nodes", "participant1", "--replace"]);
  assert.equal(applied.code, 0, applied.stdout + applied.stderr);
  const ack = (await sequencerStatus(n)).members.find((m) => m.member.startsWith("participant1::"));
  assert.equal(ack?.acknowledged, s1Position, "the acknowledgement is the restored position");
  await nodeStart(n, "participant1");
  await waitFor(
    "participant1 to replay h2",
    async () => ((await acsKeys(n, 0, alice)).length === 2 ? true : undefined),
    60_000,
    500,
  );
  // Replay can finish before the restored participant's deduplication recovery does: until then it
  // refuses submissions (DEDUPLICATION_STATE_RECOVERING, retryable).
  await waitForRecovery(n, "participant1");

  // A newer complete set: expire deletes the older one and releases its holds.
  const s2 = await backupCreate(n);
  const expired = await cli(n, "backup", "expire", "--keep", "1");
  assert.equal(expired.code, 0, expired.stdout + expired.stderr);
  assert.deepEqual(expired.json<{ deleted: string[] }>().deleted, [s1]);
  const afterExpire = await sequencerStatus(n);
  assert.deepEqual([...new Set(afterExpire.holds.map((h) => h.set))], [s2]);
  const listed = (await cli(n, "backup", "list")).json<ListJson>().sets.find((s) => s.id === s2);
  assert.equal(listed?.hold, "held");
  assert.ok(listed?.withinRetentionUntil, "backup list shows until when the retention keeps the set");

  // A forced prune past s2's hold (not past any acknowledgement) strands s2, visibly.
  await create(n, "h3", alice);
  const s2Pinned = await waitPinnedBy(n, s2);
  const acks = s2Pinned.members.map((m) => BigInt(m.acknowledged ?? 0));
  const [minAck = 0n] = acks.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const unforced = await cli(n, "sequencer", "prune", "--before", String(minAck));
  assert.equal(unforced.code, 3, unforced.stdout);
  const forced = await cli(n, "sequencer", "prune", "--before", String(minAck), "--force");
  assert.equal(forced.code, 0, forced.stdout + forced.stderr);
  assert.deepEqual(forced.json<{ stranded: string[] }>().stranded, [s2]);
  assert.match(forced.stderr, /can no longer be restored/);
  const strandedList = (await cli(n, "backup", "list")).json<ListJson>().sets.find((s) => s.id === s2);
  assert.equal(strandedList?.hold, "stranded");
  const refused = await restore(n, "plan", s2, ["--nodes", "participant1", "--replace"]);
  assert.equal(refused.code, 3, refused.stdout);
  const retention = refused.json<PlanJson>().checks.find((c) => c.check === "retention");
  assert.equal(retention?.code, "RESTORE_SET_STRANDED", refused.stdout);
  assert.equal(retention?.verdict, "refuse");

  // A stranded set still restores whole, sequencer included: the restored sequencer gets the
  // repository's holds, and the restored members' acknowledgements in it are at their positions.
  const s2Position = (await restore(n, "plan", s2, ["--nodes", "participant1", "--replace"])).json<{
    nodes: { position: { lastStored: { timestamp: string } } }[];
  }>().nodes[0]?.position.lastStored.timestamp;
  for (const node of ["participant1", "mediator1", "sequencer1"]) await nodeStop(n, node);
  const whole = await restore(n, "apply", s2, ["--replace"]);
  assert.equal(whole.code, 0, whole.stdout + whole.stderr);
  await nodeStart(n, "sequencer1");
  const restoredStatus = await sequencerStatus(n);
  assert.deepEqual([...new Set(restoredStatus.holds.map((h) => h.set))], [s2]);
  const p1Ack = restoredStatus.members.find((m) => m.member.startsWith("participant1::"))?.acknowledged;
  assert.ok(p1Ack === null || BigInt(p1Ack ?? 0) <= BigInt(s2Position ?? 0), `${p1Ack} <= ${s2Position}`);
  await nodeStart(n, "mediator1");
  await nodeStart(n, "participant1");
  await waitFor(
    "the restored network to commit",
    async () => {
      // A retry after a commit that timed out on the way back is a duplicate: committed too.
      await create(n, "h4", alice).catch((error: Error) => {
        if (!/DUPLICATE_COMMAND/.test(error.message)) throw error;
      });
      return true;
    },
    90_000,
    2000,
  );
});
