/**
 * Section `sync-standby` of `npm run bench:failover` (issue 12): ledger throughput of a participant
 * whose database has a synchronous standby beside the same participant without one, in the same
 * run. The participant's database lives on a real primary with one streaming standby (the test
 * support's replicated PostgreSQL); the sequencer and the mediator on the embedded cluster. Phase 1:
 * the standby is in synchronous_standby_names, so every commit waits for it. Phase 2: the standby is
 * stopped and synchronous_standby_names emptied: commits wait for the primary's disk only (the
 * baseline). Each phase: BENCH_SYNC_CLIENTS concurrent SubmitAndWait loops for BENCH_SYNC_SECONDS.
 * Goal: with the standby ≥ 0.6× without.
 */

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { runLockstep } from "../src/cli/self-process.ts";
import { fromConnectError } from "../src/common/connect-errors.ts";
import { freePort } from "../src/common/loopback.ts";
import { createNodeClient, nodeBaseUrl } from "../src/common/rpc-client.ts";
import { CommandService } from "../src/gen/lockstep/ledger/v1/command_service_pb.ts";
import { PartyManagementService } from "../src/gen/lockstep/ledger/v1/party_management_service_pb.ts";
import { createIouCommand } from "../test/support/ledger-network.ts";
import { startReplicatedPostgres } from "../test/support/replication.ts";

const SECONDS = Number(process.env.BENCH_SYNC_SECONDS ?? 10);
const CLIENTS = Number(process.env.BENCH_SYNC_CLIENTS ?? 8);

export interface ThroughputFigure {
  section: string;
  what: string;
  samples: number[];
  unit: "tx/s";
  goal?: string;
}

/** Committed SubmitAndWait per second over `seconds`, from `clients` concurrent loops. */
async function throughput(port: number, party: string, phase: string): Promise<number> {
  const commands = createNodeClient(CommandService, nodeBaseUrl(port));
  const until = performance.now() + SECONDS * 1000;
  let committed = 0;
  let seq = 0;
  const loop = async (client: number) => {
    while (performance.now() < until) {
      const commandId = `${phase}-${client}-${seq++}`;
      try {
        await commands.submitAndWait(
          { commands: createIouCommand(commandId, party, party, { userId: "bench-sync", amount: "1.00" }) },
          { timeoutMs: 30_000 },
        );
        committed++;
      } catch (error) {
        throw new Error(`${phase}: ${fromConnectError(error)?.code ?? (error as Error).message}`);
      }
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => loop(i)));
  return committed / ((performance.now() - started) / 1000);
}

export async function syncStandbySection(): Promise<ThroughputFigure[]> {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-bench-sync-"));
  const pg = await startReplicatedPostgres({ replication: "sync", autoCleanup: false });
  const configPath = join(dir, "lockstep.yaml");
  const lockstep = (args: string[]) =>
    runLockstep([...args, "--config", configPath], { env: { ...process.env, LOCKSTEP_LOG_LEVEL: "warn" } });
  try {
    await pg.createDatabase("bench_participant1");
    const ports = { sequencer: await freePort(), mediator: await freePort(), p1: await freePort() };
    writeFileSync(
      configPath,
      stringify({
        "data-dir": join(dir, "data"),
        synchronizer: {
          id: "bench",
          sequencer: { name: "sequencer1", port: ports.sequencer },
          mediator: { name: "mediator1", port: ports.mediator },
        },
        participants: [
          {
            name: "participant1",
            port: ports.p1,
            "ledger-api": { auth: { type: "off" } },
            // Phase 2 runs without the standby on purpose: the check would only repeat that.
            storage: { url: pg.primary.url("bench_participant1"), replication: { check: "off" } },
          },
        ],
      }),
    );
    const up = await lockstep(["up", "--detach", "--json"]);
    if (up.code !== 0) throw new Error(`lockstep up failed: ${up.stdout}${up.stderr}`);
    const { party } = await createNodeClient(PartyManagementService, nodeBaseUrl(ports.p1)).allocateParty({
      partyIdHint: "alice",
    });
    await pg.waitForStandbys({ standby1: "sync" });
    const withStandby = await throughput(ports.p1, party, "sync");
    console.log(`sync-standby: with a synchronous standby ${withStandby.toFixed(1)} tx/s`);
    await pg.setSynchronousStandbyNames("");
    await pg.standbys[0]?.stop("fast");
    const without = await throughput(ports.p1, party, "alone");
    console.log(
      `sync-standby: without a standby ${without.toFixed(1)} tx/s; ratio ${(withStandby / without).toFixed(2)}× (goal ≥ 0.6×)`,
    );
    const section = "sync-standby";
    return [
      {
        section,
        what: `ledger throughput, synchronous standby (${CLIENTS} clients, ${SECONDS} s)`,
        samples: [withStandby],
        unit: "tx/s",
        goal: `≥ 0.6 × ${without.toFixed(1)} (ratio ${(withStandby / without).toFixed(2)})`,
      },
      { section, what: "baseline: the same without a standby", samples: [without], unit: "tx/s" },
    ];
  } finally {
    await lockstep(["down"]);
    await pg.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}
