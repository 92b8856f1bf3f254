import assert from "node:assert/strict";
import { after, test } from "node:test";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { createStorageDb } from "../../src/storage/storage-db.ts";
import { runLockstep } from "../support/cli.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  allocateKnownParty,
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";
import { nodeStart, nodeStop } from "../support/restore-network.ts";

// Issue 13 (docs/restore.md, "The synchronizer is lost or restored behind the participants"): after
// a synchronizer loss two participants' contract sets may disagree; `lockstep repair compare-acs`
// finds the shared contracts they disagree on, `repair add` and `repair purge` fix them on a stopped
// participant, each at ledger offsets of its own that the update stream then shows. All through the
// CLI on real PostgreSQL.

let network: LedgerNetwork | undefined;
after(() => network?.down());

const p = (n: LedgerNetwork, i: 0 | 1) => n.clients[i] as LedgerClients;

async function create(clients: LedgerClients, id: string, issuer: string, owner: string) {
  const r = await clients.commands.submitAndWait(
    { commands: createIouCommand(id, issuer, owner) },
    { timeoutMs: 60_000 },
  );
  return r.createdContractIds[0] as string;
}

async function activeIds(clients: LedgerClients, party: string): Promise<string[]> {
  const r = await clients.state.getActiveContracts({ parties: [party] }, { timeoutMs: 30_000 });
  return r.contracts.map((c) => c.contractId).sort();
}

function cli(n: LedgerNetwork, args: string[], json = true) {
  return runLockstep([...args, ...(json ? ["--json"] : []), ...n.cfg], { timeoutMs: 180_000 });
}

interface Difference {
  contractId: string;
  kind: string;
  participant: string;
  missingOn?: string;
  activeOn?: string;
  archivedOffset?: string;
}
interface Comparison {
  participants: string[];
  compared: number;
  differences: Difference[];
}
interface Repair {
  participant: string;
  operation: string;
  ledgerEndBefore: string;
  ledgerEnd: string;
  contracts: { contractId: string; offset: string; updateId: string; stakeholders: string[] }[];
}
interface Failure {
  error: { code: string; message: string };
}

/** The refusal's code, after checking its exit code (docs/cli.md: the code's category decides). */
function refusal(r: { code: number; stdout: string; stderr: string; json: <T>() => T }, exitCode: number) {
  assert.equal(r.code, exitCode, r.stdout + r.stderr);
  return r.json<Failure>().error;
}

/**
 * The loss to repair: participant2 never learned of a commit (the synchronizer went down before it
 * delivered it there). Simulated on participant2's stopped database by removing the update that
 * created the contract and the contract itself, as if that update had never come.
 */
async function loseCommit(n: LedgerNetwork, node: string, contractId: string): Promise<void> {
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  await cluster.start();
  const db = createStorageDb({ connectionString: cluster.connectionUrl(embeddedDatabaseName(node)) });
  try {
    await db.transaction(async (tx) => {
      const removed = await tx.execute(
        `DELETE FROM participant_updates WHERE ledger_offset =
           (SELECT created_offset FROM participant_contracts WHERE contract_id = $1)`,
        [contractId],
      );
      assert.equal(removed, 1);
      await tx.execute("DELETE FROM participant_contracts WHERE contract_id = $1", [contractId]);
    });
  } finally {
    await db.close();
  }
}

test("compare-acs finds the contracts two participants disagree on; add and purge fix them offline", async (t) => {
  const n = await startLedgerNetwork({ participants: 2 });
  network = n;
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");

  const x1 = await create(p(n, 0), "x1", alice, bob);
  const x2 = await create(p(n, 0), "x2", alice, bob);
  const x3 = await create(p(n, 1), "x3", bob, alice);
  const own = await create(p(n, 0), "own", alice, alice); // no stakeholder on participant2
  const shared = [x1, x2, x3].sort();
  await waitFor("participant2 to see the shared contracts", async () =>
    JSON.stringify(await activeIds(p(n, 1), bob)) === JSON.stringify(shared) ? true : undefined,
  );

  // Agreement: the shared contracts compared, none differs; alice's own contract is not shared.
  const same = await cli(n, ["repair", "compare-acs", "participant1", "participant2"]);
  assert.equal(same.code, 0, same.stdout + same.stderr);
  assert.deepEqual(same.json<Comparison>(), {
    participants: ["participant1", "participant2"],
    compared: 3,
    differences: [],
  });

  // A repair needs the participant stopped (SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE: a safety
  // refusal, exit 3 by docs/cli.md, as a restore onto a running node).
  const running = await cli(n, ["repair", "purge", "participant2", "--contract-id", x1]);
  assert.equal(refusal(running, 3).code, "SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE");

  const before = (await p(n, 1).state.getLedgerEnd({})).offset;
  await nodeStop(n, "participant2");

  // Purge: all or nothing. One id that is not there refuses the whole command.
  const mixed = await cli(n, ["repair", "purge", "participant2", "--contract-id", x3, "--contract-id", own]);
  const notThere = refusal(mixed, 3);
  assert.equal(notThere.code, "REPAIR_CONTRACT_CONFLICT");
  assert.match(notThere.message, /not stored there/);
  const purged = await cli(n, ["repair", "purge", "participant2", "--contract-id", x1]);
  assert.equal(purged.code, 0, purged.stdout + purged.stderr);
  const purge = purged.json<Repair>();
  assert.equal(purge.ledgerEndBefore, String(before));
  assert.equal(purge.ledgerEnd, String(before + 1n));
  assert.deepEqual(
    purge.contracts.map((c) => [c.contractId, c.offset]),
    [[x1, String(before + 1n)]],
  );
  assert.deepEqual(purge.contracts[0]?.stakeholders, [alice, bob].sort());
  const again = await cli(n, ["repair", "purge", "participant2", "--contract-id", x1]);
  assert.match(refusal(again, 3).message, /archived there already/);

  // participant2 also never got x2's commit.
  await loseCommit(n, "participant2", x2);

  const differ = await cli(n, ["repair", "compare-acs", "participant1", "participant2"]);
  assert.equal(differ.code, 3, differ.stdout + differ.stderr);
  const found = differ.json<Comparison>();
  assert.equal(found.compared, 3);
  const expected: Difference[] = [
    {
      contractId: x1,
      kind: "archived-on",
      participant: "participant2",
      activeOn: "participant1",
      archivedOffset: String(before + 1n),
    },
    { contractId: x2, kind: "only-on", participant: "participant1", missingOn: "participant2" },
  ];
  assert.deepEqual(
    found.differences.map(({ contractId, kind, participant, missingOn, activeOn, archivedOffset }) => ({
      contractId,
      kind,
      participant,
      ...(missingOn ? { missingOn } : {}),
      ...(activeOn ? { activeOn } : {}),
      ...(archivedOffset ? { archivedOffset } : {}),
    })),
    expected.sort((a, b) => (a.contractId < b.contractId ? -1 : 1)),
  );
  const text = await cli(n, ["repair", "compare-acs", "participant1", "participant2"], false);
  assert.equal(text.code, 3);
  assert.match(text.stdout, /2 difference\(s\)/);
  assert.match(text.stdout, new RegExp(`${x2}\\s+only-on`));
  assert.match(text.stdout, new RegExp(`${x1}\\s+archived-on`));

  // Add refuses what it must not copy: a contract archived there (it never becomes active again, as
  // with Canton's repair.add), one active there, one the source does not hold, one of no party there.
  const addTo2 = (id: string) =>
    cli(n, ["repair", "add", "participant2", "--from-participant", "participant1", "--contract-id", id]);
  const refusals: [string, RegExp][] = [
    [x1, /archived there at offset/],
    [x3, /already active there/],
    [own, /hosts none of its stakeholders/],
    [`00${"ab".repeat(32)}`, /participant1 does not hold it/],
  ];
  for (const [id, reason] of refusals) {
    const refused = refusal(await addTo2(id), 3);
    assert.equal(refused.code, "REPAIR_CONTRACT_CONFLICT", id);
    assert.match(refused.message, reason);
  }
  const added = await addTo2(x2);
  assert.equal(added.code, 0, added.stdout + added.stderr);
  const add = added.json<Repair>();
  assert.deepEqual(
    add.contracts.map((c) => [c.contractId, c.offset]),
    [[x2, String(before + 2n)]],
  );

  // The other side of x1: purge it on participant1 too, and the participants agree again.
  await nodeStop(n, "participant1");
  const onP1 = await cli(n, ["repair", "purge", "participant1", "--contract-id", x1]);
  assert.equal(onP1.code, 0, onP1.stdout + onP1.stderr);
  const agreed = await cli(n, ["repair", "compare-acs", "participant1", "participant2"]);
  assert.equal(agreed.code, 0, agreed.stdout + agreed.stderr);
  assert.deepEqual(agreed.json<Comparison>().differences, []);
  await nodeStart(n, "participant1");
  await nodeStart(n, "participant2");

  // participant2's Ledger API: the ACS reflects the repairs, which the update stream shows at the
  // offsets after the previous ledger end.
  assert.deepEqual(await activeIds(p(n, 1), bob), [x2, x3].sort());
  assert.deepEqual(await activeIds(p(n, 0), alice), [x2, x3, own].sort());
  const end = (await p(n, 1).state.getLedgerEnd({})).offset;
  assert.equal(end, before + 2n);
  const updates = [];
  for await (const r of p(n, 1).updates.getUpdates(
    { beginExclusive: before, endInclusive: end, parties: [bob] },
    { timeoutMs: 30_000 },
  )) {
    if (r.update.case === "transaction") updates.push(r.update.value);
  }
  const events = updates.map((u) => ({
    offset: u.offset,
    repair: u.updateId.startsWith("repair-") && u.commandId === "",
    events: u.events.map((e) =>
      e.event.case === "created"
        ? ["created", e.event.value.contract?.contractId]
        : ["archived", e.event.value?.contractId],
    ),
  }));
  assert.deepEqual(events, [
    { offset: before + 1n, repair: true, events: [["archived", x1]] },
    { offset: before + 2n, repair: true, events: [["created", x2]] },
  ]);
  t.diagnostic(`repairs at offsets ${before + 1n} and ${before + 2n}`);

  // The ledger goes on: the added contract is usable, and new contracts commit on both.
  const transferred = await p(n, 1).commands.submitAndWait(
    {
      commands: {
        userId: "test-app",
        commandId: "transfer-x2",
        actAs: [bob],
        command: {
          case: "exercise",
          value: { contractId: x2, choice: "Transfer", choiceArgument: { newOwner: bob } },
        },
      },
    },
    { timeoutMs: 60_000 },
  );
  assert.deepEqual(transferred.archivedContractIds, [x2]);
  const x4 = await create(p(n, 0), "x4", alice, bob);
  const expectedAcs = [x3, x4, transferred.createdContractIds[0] as string].sort();
  await waitFor("both participants to agree on the new contracts", async () =>
    JSON.stringify(await activeIds(p(n, 1), bob)) === JSON.stringify(expectedAcs) &&
    JSON.stringify(await activeIds(p(n, 0), alice)) === JSON.stringify([...expectedAcs, own].sort())
      ? true
      : undefined,
  );
  const last = await cli(n, ["repair", "compare-acs", "participant1", "participant2"]);
  assert.equal(last.code, 0, last.stdout + last.stderr);
  assert.equal(last.json<Comparison>().compared, 3);
});
