import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { after, test } from "node:test";
import pg from "pg";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { SequencerService } from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
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
  dropNodeDatabase,
  nodeLog,
  nodeStart,
  nodeStatus,
  nodeStop,
  restore,
  waitForRecovery,
} from "../support/restore-network.ts";

// Issue 9, defect 4: the deduplication window of a restored participant is anchored on sequencer
// time. The old code opened it at the wall clock of the host that ran `restore apply`: with that
// clock an hour behind, every replayed event counted as "after the restore", so the window closed
// during replay and a command lost with the old database could commit twice.

const LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const LAGGING = { LD_PRELOAD: LIBFAKETIME, FAKETIME: "-1h" };
const TOLERANCE_MICROS = 5_000_000n;

let network: LedgerNetwork | undefined;
after(() => network?.down());

const p1 = (n: LedgerNetwork) => n.clients[0] as LedgerClients;

async function errorCode(call: () => Promise<unknown>): Promise<string> {
  try {
    await call();
    return "ok";
  } catch (error) {
    return fromConnectError(error)?.code ?? String(error);
  }
}

interface SequencerStatusJson {
  head: string | null;
  sequencerTime: string;
  members: { member: string; lastDelivered: string | null }[];
}

async function sequencerStatus(n: LedgerNetwork): Promise<SequencerStatusJson> {
  const r = await runLockstep(["sequencer", "status", "--json", ...n.cfg]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.json<SequencerStatusJson>();
}

/** participant1's newest recovery record, read from its database in the embedded cluster. */
async function recoveryRecord(n: LedgerNetwork) {
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  await cluster.start();
  const client = new pg.Client({
    connectionString: cluster.connectionUrl(embeddedDatabaseName("participant1")),
  });
  await client.connect();
  try {
    const r = await client.query<{
      anchor: string | null;
      anchor_source: string | null;
      expected_end: string | null;
      state: string;
    }>(
      "SELECT anchor::text, anchor_source, expected_end::text, state FROM recovery_records ORDER BY id DESC LIMIT 1",
    );
    return r.rows[0];
  } finally {
    await client.end();
  }
}

test("the deduplication window is anchored on sequencer time, not the restoring host's lagging clock", async (t) => {
  assert.ok(existsSync(LIBFAKETIME), `libfaketime missing (apt-get install faketime): ${LIBFAKETIME}`);
  // libfaketime must really shift what Node sees, else this test proves nothing.
  const seen = spawnSync(process.execPath, ["-e", "process.stdout.write(String(Date.now()))"], {
    env: { ...process.env, ...LAGGING },
    encoding: "utf8",
  });
  const lag = Date.now() - Number(seen.stdout);
  assert.ok(lag > 3_500_000 && lag < 3_700_000, `node under libfaketime lags by ${lag} ms, not ~1h`);

  const n = await startLedgerNetwork({ participants: 1, tolerance: "5s" });
  network = n;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 0, "bob");
  const create = (id: string) =>
    p1(n).commands.submitAndWait({ commands: createIouCommand(id, alice, bob) }, { timeoutMs: 60_000 });
  await create("a1");
  const set = await backupCreate(n, ["participant1"]);
  t.diagnostic(`backup set ${set}`);

  // After the backup, more than the tolerance of sequencer time passes with traffic: replaying it
  // is what closed the old window (each event was "after the restore" by the lagging clock).
  await create("lost-1");
  const first = BigInt((await sequencerStatus(n)).head ?? "0");
  // Wait on the sequencer's own clock, then one more command is sequenced past the mark.
  const mark = first + TOLERANCE_MICROS + 1_000_000n;
  await waitFor(
    "the sequencer's clock past the tolerance",
    async () => (BigInt((await sequencerStatus(n)).sequencerTime) > mark ? true : undefined),
    60_000,
    500,
  );
  await create("later-0");
  assert.ok(BigInt((await sequencerStatus(n)).head ?? "0") > mark);

  await nodeStop(n, "participant1");
  const before = await sequencerStatus(n);
  const headAtRestore = BigInt(before.head ?? "0");
  const p1Last = BigInt(
    before.members.find((m) => m.member.startsWith("participant1::"))?.lastDelivered ?? "0",
  );

  const apply = await runLockstep(
    ["restore", "apply", set, "--nodes", "participant1", "--replace", "--yes", "--json", ...n.cfg],
    { env: LAGGING, timeoutMs: 180_000 },
  );
  assert.equal(apply.code, 0, apply.stdout + apply.stderr);

  // Intake paused: no new sequencer time until we resume, so what follows is deterministic.
  const sequencer = createNodeClient(SequencerService, nodeBaseUrl(n.net.ports.sequencer));
  await sequencer.pauseIntake({ leaseMs: 120_000n });
  await nodeStart(n, "participant1");
  await waitFor(
    "participant1 to replay everything the sequencer had for it",
    async () => {
      const clean = (await nodeStatus(n, "participant1")).position?.clean;
      return typeof clean === "string" && BigInt(clean) >= p1Last ? true : undefined;
    },
    60_000,
    500,
  ).catch((error) => {
    throw new Error(`${error}\n${nodeLog(n, "participant1")}`);
  });
  // Old code: the window had closed during the replay (deduplicationRecovery null) and the
  // resubmission of lost-1 went to the sequencer.
  const recovering = (await nodeStatus(n, "participant1")).deduplicationRecovery;
  assert.ok(recovering, "still recovering after the replay");
  assert.equal(await errorCode(() => create("lost-1")), "DEDUPLICATION_STATE_RECOVERING");
  assert.equal(recovering.anchorSource, "live-sequencer-head");
  const anchor = BigInt(String(recovering.anchor));
  assert.ok(anchor >= headAtRestore, `anchor ${anchor} ≥ the sequencer's head at restore ${headAtRestore}`);
  assert.equal(BigInt(String(recovering.expectedEnd)), anchor + TOLERANCE_MICROS);
  assert.match(String(recovering.waitingFor), /time proofs requested every 1s/);

  // Sequencer time moves again: time proofs close the window, only past anchor + tolerance.
  await sequencer.resumeIntake({});
  const done = await waitForRecovery(n, "participant1");
  assert.ok(BigInt(String(done.position?.clean)) > anchor + TOLERANCE_MICROS, "closed by a later event");
  assert.equal(await errorCode(() => create("lost-1")), "DUPLICATE_COMMAND", "replayed into deduplication");
  assert.equal(await errorCode(() => create("after-1")), "ok");
});

test("with the sequencer unreachable during apply, the node anchors on the first time proof after it starts", async () => {
  const n = network;
  assert.ok(n, "the first test started the network");
  const alice = (await p1(n).parties.listParties({})).parties[0]?.party ?? "";
  // A fresh set: participant1 is not started between it and the restore, so the backup's own
  // writer epoch (stamped, unverified) is still the sequencer's record and the node starts above it.
  const set = await backupCreate(n, ["participant1"]);
  await nodeStop(n, "participant1");
  await dropNodeDatabase(n, "participant1");
  const headAtStop = BigInt((await sequencerStatus(n)).head ?? "0");
  await nodeStop(n, "sequencer1");

  const plan = await restore(n, "plan", set, ["--nodes", "participant1"]);
  const skipped = plan
    .json<{ checks: { check: string; verdict: string; code: string | null }[] }>()
    .checks.filter((c) => c.code === "RESTORE_CHECK_SKIPPED")
    .map((c) => `${c.check}:${c.verdict}`)
    .sort();
  assert.deepEqual(skipped, ["keys:warn", "sequencer-events:warn", "sequencer-fork:warn"], plan.stdout);
  const apply = await restore(n, "apply", set, ["--nodes", "participant1"]);
  assert.equal(apply.code, 0, apply.stdout + apply.stderr);
  const restored = apply.json<{ restored: { anchor: string | null; epochUnverified: boolean }[] }>()
    .restored[0];
  assert.deepEqual([restored?.anchor, restored?.epochUnverified], [null, true]);

  await nodeStart(n, "participant1");
  const waiting = await waitFor("participant1 to report its recovery", async () => {
    const s = await nodeStatus(n, "participant1");
    return s.deduplicationRecovery ?? undefined;
  });
  assert.equal(waiting.anchor, null);
  assert.match(String(waiting.waitingFor), /anchor unknown/);
  // The sequencer back, its intake paused: the node connects, but no sequencer time passes, so the
  // window cannot close whatever the anchor; a submission is refused.
  await nodeStart(n, "sequencer1");
  const sequencer = createNodeClient(SequencerService, nodeBaseUrl(n.net.ports.sequencer));
  await sequencer.pauseIntake({ leaseMs: 120_000n });
  assert.equal(
    await errorCode(() =>
      p1(n).commands.submitAndWait(
        { commands: createIouCommand("x-1", alice, alice) },
        { timeoutMs: 60_000 },
      ),
    ),
    "DEDUPLICATION_STATE_RECOVERING",
  );
  await sequencer.resumeIntake({});
  await waitForRecovery(n, "participant1");
  // Old code: no anchor at all (the window opened at the restoring host's wall clock).
  const record = await recoveryRecord(n);
  assert.equal(record?.anchor_source, "first-observed");
  assert.ok(
    BigInt(record?.anchor ?? "0") > headAtStop,
    "after everything the sequencer had at the node's start",
  );
  assert.equal(BigInt(record?.expected_end ?? "0"), BigInt(record?.anchor ?? "0") + TOLERANCE_MICROS);
  assert.equal(record?.state, "complete");
});
