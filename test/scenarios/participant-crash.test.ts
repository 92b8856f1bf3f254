import assert from "node:assert/strict";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { runLockstep } from "../support/cli.ts";
import { assertOneSuccessEach, type PlannedIou, resubmitAll, submitIou } from "../support/exactly-once.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  acsFromUpdates,
  allocateKnownParty,
  contractKey,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";

// SIGKILL of a participant process in the middle of traffic from both participants, then a
// restart: no command takes effect twice, the ACS each participant stores is the one its updates
// describe, and both participants agree on their shared contracts.

const PER_PARTICIPANT = 24;
const WORKERS = 2;
const KILL_AFTER = 6;
const USER = "crash-app";

interface Planned extends PlannedIou {
  participant: 0 | 1;
}

let network: LedgerNetwork | undefined;
after(() => network?.down());

function clientsOf(n: LedgerNetwork, i: 0 | 1): LedgerClients {
  return n.clients[i] as LedgerClients;
}

function submit(n: LedgerNetwork, cmd: Planned): Promise<string> {
  return submitIou(clientsOf(n, cmd.participant), cmd, USER);
}

test("SIGKILL of a participant during traffic: exactly-once commands and consistent ACS after restart", async (t) => {
  // A short tolerance, so that submissions lost with the process time out within seconds.
  const n = await startLedgerNetwork({ tolerance: "10s" });
  network = n;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");

  // Every Iou carries a unique amount, so each command's effect can be counted on the ledger.
  const plan: Planned[] = [];
  for (let i = 0; i < PER_PARTICIPANT; i++) {
    plan.push({ participant: 0, commandId: `p1-${i}`, issuer: alice, owner: bob, amount: `${1000 + i}.00` });
    plan.push({ participant: 1, commandId: `p2-${i}`, issuer: bob, owner: alice, amount: `${2000 + i}.00` });
  }
  const pid = n.pid("participant2");
  assert.ok(pid, "participant2 runs detached");
  let p2Done = 0;
  let killed = false;
  const run = async (participant: 0 | 1, worker: number) => {
    const mine = plan.filter((p) => p.participant === participant);
    for (let i = worker; i < mine.length; i += WORKERS) {
      const cmd = mine[i] as Planned;
      cmd.outcome = await submit(n, cmd);
      if (participant === 1 && cmd.outcome === "ok" && ++p2Done >= KILL_AFTER && !killed) {
        killed = true;
        process.kill(pid, "SIGKILL");
      }
      if (cmd.outcome === "unknown") await sleep(50);
    }
  };
  await Promise.all([0, 1].flatMap((p) => Array.from({ length: WORKERS }, (_, w) => run(p as 0 | 1, w))));
  assert.ok(killed, "participant2 was killed during the traffic");
  const lost = plan.filter((p) => p.outcome !== "ok");
  assert.ok(lost.length > 0, "some participant2 submissions had no known outcome");
  assert.ok(
    plan.filter((p) => p.participant === 0).every((p) => p.outcome === "ok"),
    `participant1 kept working: ${JSON.stringify(plan.filter((p) => p.participant === 0 && p.outcome !== "ok"))}`,
  );

  const restart = await runLockstep(["node", "start", "participant2", "--detach", "--json", ...n.cfg]);
  assert.equal(restart.code, 0, restart.stdout + restart.stderr);
  assert.equal(restart.json<{ role: string }>().role, "active");

  // Resubmit every command with its command id: none lost, none taking effect twice.
  const resubmitted = await resubmitAll(plan, (cmd) => clientsOf(n, cmd.participant), USER);
  t.diagnostic(`lost with the process, then resubmitted: ${JSON.stringify(resubmitted)}`);

  // Both participants caught up to the same shared contracts (every Iou has alice and bob).
  const views = await waitFor(
    "both participants agree",
    async () => {
      const [c1, c2] = [clientsOf(n, 0), clientsOf(n, 1)];
      const [e1, e2] = await Promise.all([c1.state.getLedgerEnd({}), c2.state.getLedgerEnd({})]);
      const [a1, a2] = await Promise.all([
        c1.state.getActiveContracts({ parties: [alice], activeAtOffset: e1.offset }),
        c2.state.getActiveContracts({ parties: [bob], activeAtOffset: e2.offset }),
      ]);
      const k1 = a1.contracts.map(contractKey).sort();
      const k2 = a2.contracts.map(contractKey).sort();
      return k1.length === plan.length && JSON.stringify(k1) === JSON.stringify(k2)
        ? { ends: [e1.offset, e2.offset], stored: [a1.contracts, a2.contracts] }
        : undefined;
    },
    60_000,
    1000,
  );

  // Exactly once: every planned command created exactly one Iou (its amount), on both participants.
  for (const [i, party] of [alice, bob].entries()) {
    const clients = clientsOf(n, i as 0 | 1);
    const end = views.ends[i] as bigint;
    const fromUpdates = await acsFromUpdates(clients, [party], end);
    const stored = views.stored[i] ?? [];
    assert.deepEqual(
      [...fromUpdates.values()].map(contractKey).sort(),
      stored.map(contractKey).sort(),
      `participant${i + 1}: the ACS recomputed from its updates equals its stored ACS`,
    );
    const amounts = stored.map((c) => String(c.arguments?.amount)).sort();
    assert.deepEqual(amounts, plan.map((p) => p.amount).sort(), `participant${i + 1}: one Iou per command`);
  }

  // Each participant completed each of its own commands successfully exactly once.
  for (const [i, party] of [alice, bob].entries()) {
    const own = plan.filter((p) => p.participant === i).map((p) => p.commandId);
    await assertOneSuccessEach(clientsOf(n, i as 0 | 1), USER, party, own, `participant${i + 1}`);
  }
});
