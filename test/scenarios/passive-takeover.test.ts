import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { freePort } from "../../src/common/loopback.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import { logTail, processFiles } from "../../src/node/process-files.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { runLockstep } from "../support/cli.ts";
import { assertOneSuccessEach, type PlannedIou, resubmitAll, submitIou } from "../support/exactly-once.ts";
import { type LedgerClients, ledgerClients } from "../support/ledger-client.ts";
import {
  allocateKnownParty,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";
import { waitUntil } from "../support/wait.ts";

// Two processes of participant1 on one database (docs/operations.md, "Single writer"): the passive
// one takes over when the active one is SIGKILLed, when it loses its database connection, and on a
// switch-over; through all three, traffic with command ids goes on and no command is lost or takes
// effect twice.

/** The bound, from the kill (or the cut) to the first Ledger API call the other process answers. */
const TAKEOVER_BOUND_MS = 5000;
const USER = "takeover-app";
const PER_PHASE = 8;

interface Proc {
  name: string;
  port: number;
  clients: LedgerClients;
}

let network: LedgerNetwork | undefined;
after(() => network?.down());

let n: LedgerNetwork;
let main: Proc;
let r2: Proc;
let alice: string;
let bob: string;
const plan: PlannedIou[] = [];

interface StatusJson {
  nodes: {
    name: string;
    role: string | null;
    processes: {
      replica: string | null;
      running: boolean;
      role: string | null;
      writerEpoch: string | null;
    }[];
  }[];
}

async function processesOf(node: string): Promise<StatusJson["nodes"][number]["processes"]> {
  const status = await runLockstep(["status", "--json", ...n.cfg]);
  assert.equal(status.code, 0, status.stderr);
  return status.json<StatusJson>().nodes.find((x) => x.name === node)?.processes ?? [];
}

async function health(port: number): Promise<string | undefined> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) });
    return ((await r.json()) as { status: string }).status;
  } catch {
    return undefined;
  }
}

/** Milliseconds from `since` until `proc` answers a Ledger API call (a passive one refuses with NODE_PASSIVE). */
async function untilServing(proc: Proc, since: number): Promise<number> {
  await waitFor(
    `${proc.name} serving the Ledger API`,
    async () => ((await proc.clients.state.getLedgerEnd({}, { timeoutMs: 1000 })) ? true : undefined),
    30_000,
    20,
  );
  return performance.now() - since;
}

/**
 * PER_PHASE commands from two workers to `target()`, whichever process that is at the time; `after`
 * runs once `trigger` of them succeeded. A command refused because the process it reached is not the
 * active one (or is gone) goes again, as a client behind a health-checking load balancer would send it.
 */
async function traffic(phase: string, target: () => Proc, trigger: number, fire: () => void): Promise<void> {
  const mine: PlannedIou[] = [];
  for (let i = 0; i < PER_PHASE; i++) {
    const amount = `${plan.length + mine.length + 1}.00`;
    mine.push({ commandId: `${phase}-${i}`, issuer: alice, owner: bob, amount });
  }
  plan.push(...mine);
  let succeeded = 0;
  let fired = false;
  const worker = async (w: number) => {
    for (let i = w; i < mine.length; i += 2) {
      const cmd = mine[i] as PlannedIou;
      const deadline = Date.now() + 30_000;
      do {
        cmd.outcome = await submitIou(target().clients, cmd, USER);
        if (!["NODE_PASSIVE", "unknown", "NOT_CONNECTED_TO_SYNCHRONIZER"].includes(cmd.outcome)) break;
        await sleep(100);
      } while (Date.now() < deadline);
      if (cmd.outcome === "ok" && ++succeeded >= trigger && !fired) {
        fired = true;
        fire();
      }
    }
  };
  await Promise.all([worker(0), worker(1)]);
  assert.ok(fired, `${phase}: the trigger fired during the traffic`);
}

test("a second process of participant1 is passive; status shows both", async () => {
  n = await startLedgerNetwork({ tolerance: "10s" });
  network = n;
  const host = n.net.hosts.participants[0];
  main = {
    name: "participant1",
    port: n.participantPorts[0] as number,
    clients: n.clients[0] as LedgerClients,
  };
  const replicaPort = await freePort();
  r2 = { name: "participant1.r2", port: replicaPort, clients: ledgerClients(replicaPort, host) };
  alice = await allocateKnownParty(n, 0, "alice");
  bob = await allocateKnownParty(n, 1, "bob");

  const started = await runLockstep([
    ...["node", "start", "participant1", "--replica", "r2", "--port", String(replicaPort), "--detach"],
    ...["--json", ...n.cfg],
  ]);
  assert.equal(started.code, 0, started.stdout + started.stderr);
  assert.equal(started.json<{ role: string }>().role, "passive");
  assert.equal(await health(r2.port), "passive");
  await assert.rejects(
    r2.clients.state.getLedgerEnd({}),
    (e) => fromConnectError(e)?.code === "NODE_PASSIVE",
  );

  const processes = await processesOf("participant1");
  assert.deepEqual(
    processes.map((p) => [p.replica, p.role]),
    [
      [null, "active"],
      ["r2", "passive"],
    ],
  );
});

test("SIGKILL of the active process: the passive one serves the Ledger API within 5 s", async (t) => {
  const pid = n.pid("participant1");
  assert.ok(pid, "participant1 runs detached");
  let killedAt = 0;
  let takeover: Promise<number> | undefined;
  await traffic(
    "kill",
    () => (killedAt ? r2 : main),
    3,
    () => {
      process.kill(pid, "SIGKILL");
      killedAt = performance.now();
      takeover = untilServing(r2, killedAt);
    },
  );
  const ms = await (takeover as Promise<number>);
  t.diagnostic(`SIGKILL → replica serving the Ledger API: ${Math.round(ms)} ms`);
  assert.ok(ms < TAKEOVER_BOUND_MS, `took over in ${Math.round(ms)} ms`);
  const after = plan.filter((c) => c.commandId.startsWith("kill-"));
  assert.ok(
    after.slice(-2).every((c) => c.outcome === "ok"),
    "the ledger goes on through the replica",
  );

  const processes = await processesOf("participant1");
  assert.deepEqual(
    processes.map((p) => [p.replica, p.running, p.role]),
    [
      [null, false, null],
      ["r2", true, "active"],
    ],
  );
});

test("the active process loses its database connection: it stops writing, the passive one takes over", async (t) => {
  const restarted = await runLockstep(["node", "start", "participant1", "--detach", "--json", ...n.cfg]);
  assert.equal(restarted.code, 0, restarted.stdout + restarted.stderr);
  assert.equal(restarted.json<{ role: string }>().role, "passive");

  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  await cluster.start();
  const admin = createPgDb({
    connectionString: cluster.connectionUrl(embeddedDatabaseName("participant1")),
    max: 1,
  });
  try {
    let cutAt = 0;
    let takeover: Promise<number> | undefined;
    let terminated: Promise<number> | undefined;
    await traffic(
      "cut",
      () => (cutAt ? main : r2),
      3,
      () => {
        cutAt = performance.now();
        // Every connection of the active process (its lock session and its pool), as a network cut would.
        terminated = admin
          .one<{ n: number }>(
            "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1",
            ["lockstep-participant1.r2"],
          )
          .then((r) => r.n);
        takeover = untilServing(main, cutAt);
      },
    );
    assert.ok(((await terminated) ?? 0) >= 2, "the lock session and pool connections were terminated");
    const ms = await (takeover as Promise<number>);
    t.diagnostic(`connections terminated → the other process serving the Ledger API: ${Math.round(ms)} ms`);
    assert.ok(ms < TAKEOVER_BOUND_MS, `took over in ${Math.round(ms)} ms`);
  } finally {
    await admin.close();
  }

  // The cut-off process noticed, fenced itself and went passive; it did not fail.
  await waitUntil("r2 passive", async () => (await health(r2.port)) === "passive", 10_000).catch((error) => {
    throw new Error(`${error}\n${logTail(processFiles(n.dataDir, "participant1", "r2").logFile, 30)}`);
  });
  await assert.rejects(
    r2.clients.state.getLedgerEnd({}),
    (e) => fromConnectError(e)?.code === "NODE_PASSIVE",
  );
  const log = readFileSync(processFiles(n.dataDir, "participant1", "r2").logFile, "utf8");
  assert.match(log, /lost the node's database lock: stopped writing/);
  const processes = await processesOf("participant1");
  assert.deepEqual(
    processes.map((p) => [p.replica, p.role]),
    [
      [null, "active"],
      ["r2", "passive"],
    ],
  );
  const [mainEpoch, r2Epoch] = processes.map((p) => BigInt(p.writerEpoch ?? "0"));
  assert.ok((mainEpoch as bigint) > (r2Epoch as bigint), "the new active process runs a higher writer epoch");
});

test("switch-over through the CLI, then no command lost or duplicated across the three take-overs", async (t) => {
  const switched = await runLockstep(["node", "switch-over", "participant1", "--json", ...n.cfg]);
  assert.equal(switched.code, 0, switched.stdout + switched.stderr);
  const result = switched.json<{
    from: { replica: string | null };
    to: { replica: string | null };
    tookMs: number;
  }>();
  assert.deepEqual([result.from.replica, result.to.replica], [null, "r2"]);
  t.diagnostic(`switch-over: ${result.tookMs} ms`);
  assert.equal(await health(main.port), "passive");

  // Traffic through the new active process, then every command id once more.
  await traffic(
    "switched",
    () => r2,
    PER_PHASE,
    () => {},
  );
  const resubmitted = await resubmitAll(plan, () => r2.clients, USER);
  t.diagnostic(`without a known outcome at first, then resubmitted: ${JSON.stringify(resubmitted)}`);
  await assertOneSuccessEach(
    r2.clients,
    USER,
    alice,
    plan.map((c) => c.commandId),
    "participant1",
  );

  // One Iou per command on both participants.
  const amounts = plan.map((c) => c.amount).sort();
  for (const [clients, party] of [
    [r2.clients, alice],
    [n.clients[1] as LedgerClients, bob],
  ] as const) {
    await waitFor("every Iou once", async () => {
      const end = await clients.state.getLedgerEnd({});
      const acs = await clients.state.getActiveContracts({ parties: [party], activeAtOffset: end.offset });
      const seen = acs.contracts.map((c) => String(c.arguments?.amount)).sort();
      return JSON.stringify(seen) === JSON.stringify(amounts) ? true : undefined;
    });
  }
});
