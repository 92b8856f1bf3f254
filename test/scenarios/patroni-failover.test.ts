import assert from "node:assert/strict";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { type PlannedIou, resubmitAll, submitIou } from "../support/exactly-once.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  acsFromUpdates,
  allocateKnownParty,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";
import { type PatroniCluster, type PatroniMember, startPatroniCluster } from "../support/patroni.ts";

// participant1's database on a Patroni cluster (two members, synchronous mode, etcd on loopback),
// named by a libpq multi-host storage.url with target_session_attrs=read-write. The leader is killed
// (SIGKILL of its Patroni and postmaster): Patroni promotes the sync standby, and participant1 follows
// it without operator action. Every command acknowledged before the kill is on its ledger and is a
// duplicate when sent again; new commands commit. Before multi-host-db.ts the node could not even
// start: node-postgres refuses a URL with several hosts ("Invalid URL").

const USER = "patroni-app";
const BEFORE = 8;
const AFTERWARDS = 4;
/** Outcomes that mean "not decided, or not now": the node is between leaders. Sent again. */
const RETRY = new Set([
  "unknown",
  "NODE_PASSIVE",
  "DB_CONNECTION_LOST",
  "NOT_CONNECTED_TO_SYNCHRONIZER",
  "SUBMISSION_ALREADY_IN_FLIGHT",
]);

let cluster: PatroniCluster | undefined;
let network: LedgerNetwork | undefined;
after(async () => {
  await network?.down();
  await cluster?.cleanup();
});

async function health(port: number): Promise<string | undefined> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) });
    return ((await r.json()) as { status: string }).status;
  } catch {
    return undefined;
  }
}

/** The application names connected to participant1's database on one member (empty when it is down). */
async function connectedApps(member: PatroniMember): Promise<string[]> {
  const client = new pg.Client({ connectionString: member.url("postgres"), connectionTimeoutMillis: 2000 });
  client.on("error", () => {});
  await client.connect();
  try {
    const { rows } = await client.query<{ application_name: string }>(
      "SELECT application_name FROM pg_stat_activity WHERE datname = 'participant1'",
    );
    return rows.map((r) => r.application_name);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Submits until decided: "ok" (or DUPLICATE_COMMAND, when an earlier try committed unseen). */
async function commit(clients: LedgerClients, cmd: PlannedIou): Promise<string> {
  return waitFor(
    `${cmd.commandId} to commit`,
    async () => {
      const outcome = await submitIou(clients, cmd, USER);
      if (RETRY.has(outcome)) {
        await sleep(100);
        return undefined;
      }
      return outcome;
    },
    90_000,
    0,
  );
}

test("Patroni fail-over under participant1: it follows the new leader, no acknowledged command lost", async (t) => {
  const t0 = performance.now();
  const c = await startPatroniCluster();
  cluster = c;
  await c.createDatabase("participant1");
  t.diagnostic(`Patroni leader + sync standby in ${Math.round(performance.now() - t0)} ms`);

  const url = c.url("participant1");
  assert.match(url, /@127\.0\.0\.1:\d+,127\.0\.0\.1:\d+\/participant1\?target_session_attrs=read-write$/);
  const n = await startLedgerNetwork({
    participants: 1,
    tolerance: "10s",
    configure: (config: ConfigInput) => {
      const participant = config.participants?.[0] as { storage?: unknown };
      participant.storage = { url };
    },
  });
  network = n;
  const clients = n.clients[0] as LedgerClients;
  const port = n.participantPorts[0] as number;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 0, "bob");

  const oldLeader = await c.leader();
  assert.ok(
    (await connectedApps(oldLeader)).includes("lockstep-participant1"),
    "participant1 is connected to the Patroni leader",
  );

  // Acknowledged before the kill: with synchronous_mode each commit waited for the sync standby.
  const plan: PlannedIou[] = [];
  for (let i = 0; i < BEFORE; i++) {
    const cmd: PlannedIou = { commandId: `before-${i}`, issuer: alice, owner: bob, amount: `${100 + i}.00` };
    cmd.outcome = await submitIou(clients, cmd, USER);
    assert.equal(cmd.outcome, "ok", `${cmd.commandId} before the kill`);
    plan.push(cmd);
  }

  const killedAt = performance.now();
  const killed = await c.killLeader();
  const newLeader = await c.waitForNewLeader(killed);
  const promotedMs = performance.now() - killedAt;
  assert.notEqual(newLeader.name, killed.name);

  // No operator action: participant1 notices, goes passive, takes its lock on the new leader again.
  const first: PlannedIou = { commandId: "after-0", issuer: alice, owner: bob, amount: "200.00" };
  first.outcome = await commit(clients, first);
  const firstCommitMs = performance.now() - killedAt;
  assert.ok(["ok", "DUPLICATE_COMMAND"].includes(first.outcome), `after-0: ${first.outcome}`);
  assert.equal(await health(port), "active");
  assert.ok(
    (await connectedApps(newLeader)).includes("lockstep-participant1"),
    "participant1 is connected to the new leader",
  );
  t.diagnostic(
    `kill → Patroni promoted ${newLeader.name}: ${Math.round(promotedMs)} ms; → first command committed: ${Math.round(firstCommitMs)} ms`,
  );
  const afterwards = [first];
  for (let i = 1; i < AFTERWARDS; i++) {
    const cmd: PlannedIou = { commandId: `after-${i}`, issuer: alice, owner: bob, amount: `${200 + i}.00` };
    cmd.outcome = await submitIou(clients, cmd, USER);
    assert.equal(cmd.outcome, "ok", `${cmd.commandId} after the fail-over`);
    afterwards.push(cmd);
  }

  // Every command acknowledged before the kill, and after it, is on the ledger exactly once.
  const end = (await clients.state.getLedgerEnd({})).offset;
  const acs = await acsFromUpdates(clients, [alice], end);
  const amounts = [...acs.values()].map((contract) => String(contract.arguments?.amount)).sort();
  assert.deepEqual(
    amounts,
    [...plan, ...afterwards].map((cmd) => cmd.amount).sort(),
    "one Iou per acknowledged command on participant1's ledger, nothing else",
  );
  // And participant1 still deduplicates them: the in-flight and completion records survived too.
  await resubmitAll([...plan, ...afterwards.map((cmd) => ({ ...cmd, outcome: "ok" }))], () => clients, USER);
});
