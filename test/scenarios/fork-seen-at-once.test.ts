import assert from "node:assert/strict";
import { after, test } from "node:test";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { type CliResult, runLockstep } from "../support/cli.ts";
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
  nodeStart,
  nodeStatus,
  nodeStop,
  type PlanJson,
  restore,
} from "../support/restore-network.ts";

// Issue 9, defect 6: a member checks its history against the sequencer on every (re)subscription,
// traffic or not; the Ledger API refuses submissions until that check passed; a SubmitAndWait ends
// with the fatal error as soon as the connection stops on one, and by its deadline in any case.
// The tests run in order on one network (each needs the state the previous one left).

let network: LedgerNetwork | undefined;
after(() => network?.down());

const FORK_CODES = [
  "SEQUENCER_FORK_DETECTED",
  "PREVIOUS_TIMESTAMP_MISMATCH",
  "SEQUENCER_CHAIN_HASH_MISMATCH",
];

interface CliError {
  error: { code: string; message: string; retryable: boolean; metadata?: Record<string, string> };
}

let n: LedgerNetwork;
let alice: string;
let bob: string;
let fullSet: string;

/** `lockstep ledger submit` creating an Iou alice → bob on participant1, through the CLI. */
function submit(commandId: string, timeout?: string): Promise<CliResult> {
  const args = [
    "ledger",
    "submit",
    "--participant",
    "participant1",
    "--act-as",
    alice,
    "--command-id",
    commandId,
    "--create",
    "Iou",
    "--args",
    JSON.stringify({ issuer: alice, owner: bob, amount: "10.00", currency: "USD" }),
    ...(timeout ? ["--timeout", timeout] : []),
    "--json",
    ...n.cfg,
  ];
  return runLockstep(args, { timeoutMs: 180_000 });
}

function errorOf(r: CliResult): CliError["error"] {
  assert.notEqual(r.code, 0, `expected a failure: ${r.stdout}${r.stderr}`);
  return r.json<CliError>().error;
}

async function position(node: string): Promise<Record<string, unknown>> {
  return (await nodeStatus(n, node)).position ?? {};
}

async function recoveryRecords(node: string): Promise<{ id: bigint; resubscribed_at: Date | null }[]> {
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  await cluster.start();
  const db = createPgDb({ connectionString: cluster.connectionUrl(embeddedDatabaseName(node)) });
  try {
    return await db.query("SELECT id, resubscribed_at FROM recovery_records ORDER BY id");
  } finally {
    await db.close();
  }
}

test("setup: traffic, a full backup set, more traffic", async () => {
  n = await startLedgerNetwork({ tolerance: "5s" });
  network = n;
  alice = await allocateKnownParty(n, 0, "alice");
  bob = await allocateKnownParty(n, 1, "bob");
  const p1 = n.clients[0] as LedgerClients;
  await p1.commands.submitAndWait({ commands: createIouCommand("c1", alice, bob) }, { timeoutMs: 60_000 });
  fullSet = await backupCreate(n);
  await p1.commands.submitAndWait({ commands: createIouCommand("c2", alice, bob) }, { timeoutMs: 60_000 });
  assert.equal((await position("participant1")).subscriptionCheck, "passed");
});

test("until the resubscription check passed, submissions are refused with NOT_CONNECTED_TO_SYNCHRONIZER (retryable)", async () => {
  // The sequencer stays stopped while participant1 restarts, so its check cannot pass.
  await nodeStop(n, "sequencer1");
  await nodeStop(n, "participant1");
  await nodeStart(n, "participant1");
  assert.equal((await position("participant1")).subscriptionCheck, "pending");

  // Old code: accepted (registered in flight, the send failing as retryable) and left waiting.
  const refused = errorOf(await submit("gate-1", "20s"));
  assert.equal(refused.code, "NOT_CONNECTED_TO_SYNCHRONIZER", refused.message);
  assert.equal(refused.retryable, true);
  assert.match(refused.message, /reconnecting/);

  // Once the sequencer is back the check passes and the same command commits.
  await nodeStart(n, "sequencer1");
  const committed = await waitFor(
    "the same command to commit once the check passed",
    async () => {
      const r = await submit("gate-1", "30s");
      if (r.code === 0) return r.json<{ updateId: string }>();
      assert.equal(errorOf(r).code, "NOT_CONNECTED_TO_SYNCHRONIZER", r.stdout);
      return undefined;
    },
    60_000,
    500,
  );
  assert.ok(committed.updateId);
  assert.equal((await position("participant1")).subscriptionCheck, "passed");
});

test("a SubmitAndWait that cannot complete ends with REQUEST_TIME_OUT by its deadline; the submission stays in flight", async () => {
  // Without a mediator no verdict comes: the request waits for ever. Old code: SubmitAndWait waited
  // as long as the caller did (and `ledger submit` had no deadline at all).
  await nodeStop(n, "mediator1");
  const started = Date.now();
  const timedOut = errorOf(await submit("stuck-1", "4s"));
  const elapsed = Date.now() - started;
  assert.equal(timedOut.code, "REQUEST_TIME_OUT", timedOut.message);
  assert.ok(elapsed >= 3500 && elapsed < 15_000, `ended after ${elapsed} ms`);
  // The waiter gave up, the participant did not: the change id is still in flight.
  const again = errorOf(await submit("stuck-1", "4s"));
  assert.equal(again.code, "SUBMISSION_ALREADY_IN_FLIGHT", again.message);
});

test("idle participants ahead of a restored sequencer stop with a fork code within seconds; a waiting SubmitAndWait ends with it", async (t) => {
  // A submission in flight on participant1 (the mediator is still stopped: no verdict will come).
  const cleanBefore = BigInt(String((await position("participant1")).clean));
  const waiting = submit("stuck-2", "150s");
  await waitFor(
    "participant1 to see its request sequenced",
    async () => (BigInt(String((await position("participant1")).clean)) > cleanBefore ? true : undefined),
    30_000,
    200,
  );

  // The synchronizer goes back to the full set; the participants, ahead of it, stay as they are.
  await nodeStop(n, "sequencer1");
  const applied = await restore(n, "apply", fullSet, ["--nodes", "sequencer1,mediator1", "--replace"]);
  assert.equal(applied.code, 0, applied.stdout + applied.stderr);
  const ahead = applied.json<PlanJson>().checks.filter((c) => c.check === "members-ahead");
  assert.ok(ahead.length > 0, applied.stdout);
  const restarted = Date.now();
  await nodeStart(n, "sequencer1");
  await nodeStart(n, "mediator1");

  // No new traffic. Old code: both participants stayed healthy until some event reached them, and
  // the SubmitAndWait kept waiting until its caller's deadline.
  const ended = await waiting;
  const waitedMs = Date.now() - restarted;
  const forked = errorOf(ended);
  assert.ok(FORK_CODES.includes(forked.code), `SubmitAndWait ended with ${forked.code}: ${forked.message}`);
  t.diagnostic(`the waiting SubmitAndWait ended ${waitedMs} ms after the restart began (${forked.code})`);
  assert.ok(waitedMs < 60_000, `the waiting SubmitAndWait ended ${waitedMs} ms after the restart`);
  for (const node of ["participant1", "participant2"]) {
    const failed = await waitFor(
      `${node} to stop with a fork code`,
      async () => {
        const s = await nodeStatus(n, node);
        return s.lastError && FORK_CODES.includes(s.lastError.code) ? s : undefined;
      },
      20_000,
      500,
    );
    assert.ok(failed.lastError?.remedy, `${node} names the remedy`);
  }
  const p1 = await nodeStatus(n, "participant1");
  assert.equal(forked.code, p1.lastError?.code, "the waiter ended with the participant's own error");

  // New submissions get that error too, not an acceptance that can never complete.
  const afterFork = errorOf(await submit("after-fork", "10s"));
  assert.equal(afterFork.code, p1.lastError?.code);

  // The restored mediator is behind the sequencer (same set): its check passes and is recorded.
  await waitFor(
    "mediator1 to pass its resubscription check",
    async () => ((await position("mediator1")).subscriptionCheck === "passed" ? true : undefined),
    30_000,
    500,
  );
  const records = await recoveryRecords("mediator1");
  assert.ok(records.at(-1)?.resubscribed_at instanceof Date, `records: ${records.length}`);
});

test("participants restored from the same set pass the check, record it, and the network commits again", async () => {
  await nodeStop(n, "participant1");
  await nodeStop(n, "participant2");
  const repair = await restore(n, "apply", fullSet, ["--nodes", "participant1,participant2", "--replace"]);
  assert.equal(repair.code, 0, repair.stdout + repair.stderr);
  await nodeStart(n, "participant1");
  await nodeStart(n, "participant2");
  for (const node of ["participant1", "participant2"]) {
    await waitFor(
      `${node} to pass its resubscription check`,
      async () => ((await position(node)).subscriptionCheck === "passed" ? true : undefined),
      30_000,
      500,
    );
    await waitFor(
      `${node}'s recovery record to be stamped`,
      async () => ((await recoveryRecords(node)).at(-1)?.resubscribed_at instanceof Date ? true : undefined),
      10_000,
      300,
    );
  }
  await waitFor(
    "the repaired network to commit a new command",
    async () => {
      const r = await submit("repaired-1", "30s");
      return r.code === 0 ? true : undefined;
    },
    90_000,
    1000,
  );
});
