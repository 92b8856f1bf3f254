import assert from "node:assert/strict";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { runLockstep } from "../support/cli.ts";
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
// (SIGKILL of its Patroni and postmaster) during traffic: Patroni promotes the sync standby, and
// participant1 follows it without operator action; the traffic goes on. Every command, each one
// acknowledged before the kill above all, is on its ledger exactly once and is a duplicate when sent
// again. The replication check reads Patroni's synchronous mode: it passes with the sync standby, and
// once the standby is gone (Patroni, not strict, then empties synchronous_standby_names) it names the
// finding with Patroni's remedy. Before multi-host-db.ts the node could not even start: node-postgres refuses a URL with
// several hosts ("Invalid URL"); with one host it would have stayed on the dead leader.

const USER = "patroni-app";
const COMMANDS = 20;
const KILL_AFTER = 6;
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

/** How often each refusal came back while participant1 was between leaders (for the diagnostic). */
const retried: Record<string, number> = {};

/** Submits until decided: "ok" (or DUPLICATE_COMMAND, when an earlier try committed unseen). */
async function commit(clients: LedgerClients, cmd: PlannedIou): Promise<string> {
  return waitFor(
    `${cmd.commandId} to commit`,
    async () => {
      const outcome = await submitIou(clients, cmd, USER);
      if (RETRY.has(outcome)) {
        retried[outcome] = (retried[outcome] ?? 0) + 1;
        await sleep(100);
        return undefined;
      }
      return outcome;
    },
    90_000,
    0,
  );
}

test("Patroni fail-over under participant1: traffic goes on through the new leader, no acknowledged command lost", async (t) => {
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

  const check = async () => {
    const r = await runLockstep(["replication", "check", "participant1", "--json", ...n.cfg]);
    return {
      code: r.code,
      report: r.json<{
        ok: boolean;
        managedBy: string | null;
        synchronousStandbyNames: string;
        findings: { kind: string; remedy: string }[];
      }>(),
    };
  };
  const before = await check();
  assert.equal(before.code, 0, JSON.stringify(before.report));
  assert.equal(before.report.managedBy, "patroni");
  assert.notEqual(before.report.synchronousStandbyNames, "", "Patroni's synchronous mode set it");

  const oldLeader = await c.leader();
  assert.ok(
    (await connectedApps(oldLeader)).includes("lockstep-participant1"),
    "participant1 is connected to the Patroni leader",
  );

  // Traffic from two workers through the kill. Each command is sent until it is decided (its command
  // id makes that safe); the leader is killed once KILL_AFTER of them were acknowledged, each of those
  // committed on the leader and, in synchronous mode, on the sync standby.
  const plan: PlannedIou[] = Array.from({ length: COMMANDS }, (_, i) => ({
    commandId: `iou-${i}`,
    issuer: alice,
    owner: bob,
    amount: `${100 + i}.00`,
  }));
  let acknowledged = 0;
  let killedAt = 0;
  let promotedAt = 0;
  // Commands whose first try began after the kill: with the old leader dead they can only commit
  // through the new one. (Not "acknowledged after the test saw the promotion": the participant may
  // reach the new leader and finish every command before this test's own poll notices it.)
  let sentAfterKill = 0;
  let firstAckAfterKill = 0;
  let failover: Promise<PatroniMember> | undefined;
  const worker = async (w: number) => {
    for (let i = w; i < plan.length; i += 2) {
      const cmd = plan[i] as PlannedIou;
      const afterKill = killedAt > 0;
      cmd.outcome = await commit(clients, cmd);
      if (afterKill) {
        sentAfterKill++;
        if (!firstAckAfterKill) firstAckAfterKill = performance.now();
      }
      if (++acknowledged === KILL_AFTER) {
        killedAt = performance.now();
        failover = c.killLeader().then(async (killed) => {
          const next = await c.waitForNewLeader(killed);
          promotedAt = performance.now();
          assert.notEqual(next.name, killed.name);
          return next;
        });
      }
    }
  };
  await Promise.all([worker(0), worker(1)]);
  const newLeader = await (failover as Promise<PatroniMember>);
  assert.ok(sentAfterKill > 0, "commands sent after the kill were acknowledged (through the new leader)");
  t.diagnostic(
    `kill → Patroni promoted ${newLeader.name} (as this test saw it): ${Math.round(promotedAt - killedAt)} ms; → first command sent after the kill acknowledged: ${Math.round(firstAckAfterKill - killedAt)} ms (${sentAfterKill} such commands); sent again after: ${JSON.stringify(retried)}`,
  );

  // No operator action: participant1 noticed, went passive, took its lock on the new leader again.
  assert.equal(await health(port), "active");
  assert.ok(
    (await connectedApps(newLeader)).includes("lockstep-participant1"),
    "participant1 is connected to the new leader",
  );

  // Every command is on participant1's ledger exactly once, the acknowledged ones above all.
  const end = (await clients.state.getLedgerEnd({})).offset;
  const acs = await acsFromUpdates(clients, [alice], end);
  assert.deepEqual(
    [...acs.values()].map((contract) => String(contract.arguments?.amount)).sort(),
    plan.map((cmd) => cmd.amount).sort(),
    "one Iou per command on participant1's ledger, nothing else",
  );
  // And participant1 still deduplicates them: its in-flight and completion records survived too.
  await resubmitAll(
    plan.map((cmd) => ({ ...cmd, outcome: "ok" })),
    () => clients,
    USER,
  );

  // The new leader has no standby left: Patroni's synchronous mode (not strict) drops the sync
  // requirement, and the check says so, with Patroni's remedy rather than an ALTER SYSTEM.
  const after = await waitFor("the check to see the lost sync standby", async () => {
    const r = await check();
    return r.code === 3 ? r : undefined;
  });
  const kinds = after.report.findings.map((f) => f.kind);
  t.diagnostic(`after the fail-over: ${kinds.join(", ")}`);
  assert.ok(kinds.includes("sync-standbys"), JSON.stringify(after.report));
  for (const finding of after.report.findings) assert.match(finding.remedy, /Patroni|patronictl/);
});
