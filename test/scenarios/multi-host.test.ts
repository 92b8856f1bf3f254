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

// A network whose nodes stand on four "machines": each binds its own loopback address (Linux
// routes all of 127/8 to lo), so every connection between nodes, and from the CLI, must use the
// configured address: one that still dialed 127.0.0.1 would find nobody there.

const HOSTS = { sequencer: "127.0.0.2", mediator: "127.0.0.3", participants: ["127.0.0.4", "127.0.0.5"] };

let network: LedgerNetwork | undefined;
after(() => network?.down());

interface StatusJson {
  nodes: { name: string; address: string; running: boolean; role: string | null }[];
}

async function healthAt(host: string, port: number): Promise<number> {
  return (await fetch(`http://${host}:${port}/health`, { signal: AbortSignal.timeout(2000) })).status;
}

test("nodes on different addresses: a transaction commits, the CLI reaches each, 127.0.0.1 does not", async () => {
  network = await startLedgerNetwork({ hosts: HOSTS });
  const n = network;
  const { ports } = n.net;

  // Across all four addresses: participant1 → sequencer → mediator and participant2, and back.
  const alice = await allocateKnownParty(n, 0, "alice");
  const bob = await allocateKnownParty(n, 1, "bob");
  const [p1, p2] = n.clients as [LedgerClients, LedgerClients];
  const done = await p1.commands.submitAndWait(
    { commands: createIouCommand("multi-host-1", alice, bob) },
    { timeoutMs: 30_000 },
  );
  assert.equal(done.createdContractIds.length, 1, "the transaction created the Iou");
  await waitFor("the Iou at participant2", async () => {
    const acs = await p2.state.getActiveContracts({ parties: [bob] });
    return acs.contracts.some((c) => c.contractId === done.createdContractIds[0]) ? true : undefined;
  });

  const status = await runLockstep(["status", "--json", ...n.cfg]);
  assert.equal(status.code, 0, status.stderr);
  assert.deepEqual(
    status.json<StatusJson>().nodes.map((s) => [s.name, s.address, s.running, s.role]),
    [
      ["sequencer1", `127.0.0.2:${ports.sequencer}`, true, "active"],
      ["mediator1", `127.0.0.3:${ports.mediator}`, true, "active"],
      ["participant1", `127.0.0.4:${ports.participants[0]}`, true, "active"],
      ["participant2", `127.0.0.5:${ports.participants[1]}`, true, "active"],
    ],
  );
  // The CLI's other paths to a node: the Ledger API and the sequencer's service.
  const end = await runLockstep(["ledger", "end", "--participant", "participant2", "--json", ...n.cfg]);
  assert.equal(end.code, 0, end.stderr);
  assert.ok(BigInt(end.json<{ offset: string }>().offset) >= 1n);
  const sequencer = await runLockstep(["sequencer", "status", "--json", ...n.cfg]);
  assert.equal(sequencer.code, 0, sequencer.stderr);
  assert.equal(sequencer.json<{ members: unknown[] }>().members.length, 3);

  // Each node answers at its own address only.
  const bound: [string, number][] = [
    [HOSTS.sequencer, ports.sequencer],
    [HOSTS.mediator, ports.mediator],
    ...HOSTS.participants.map((h, i): [string, number] => [h, ports.participants[i] as number]),
  ];
  for (const [host, port] of bound) {
    assert.equal(await healthAt(host, port), 200, `${host}:${port} answers`);
    await assert.rejects(healthAt("127.0.0.1", port), `nothing answers at 127.0.0.1:${port}`);
  }
});
