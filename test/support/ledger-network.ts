import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { parse, stringify } from "yaml";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import type { CommandsSchema } from "../../src/gen/lockstep/ledger/v1/commands_pb.ts";
import type { Contract } from "../../src/gen/lockstep/ledger/v1/event_pb.ts";
import { livePid, processFiles } from "../../src/node/process-files.ts";
import { runLockstep, type TestNetworkConfig, type TestNetworkHosts, writeTestConfig } from "./cli.ts";
import { iouArgs, type LedgerClients, ledgerClients } from "./ledger-client.ts";
import { waitFor } from "./wait.ts";

/** The polling helper, re-exported for the scenario tests that import it from here. */
export { waitFor };

/** A whole network started as subprocesses with `lockstep up --detach`, as an operator would. */
export interface LedgerNetwork {
  net: TestNetworkConfig;
  /** `--config FILE` for runLockstep. */
  cfg: string[];
  dataDir: string;
  participantPorts: number[];
  clients: LedgerClients[];
  /** The pid of a detached node's process (from its pid file). */
  pid(node: string): number | undefined;
  /** `lockstep down` and the temp dir removed; safe to call twice. */
  down(): Promise<void>;
}

export interface LedgerNetworkOptions {
  participants?: number;
  /** synchronizer.parameters.ledger-time-record-time-tolerance, e.g. "10s" to time out lost submissions sooner. */
  tolerance?: string;
  /** Per-node `host` (writeTestConfig); the clients dial the participants there. */
  hosts?: Partial<TestNetworkHosts>;
  /** Edits the written config (parsed YAML) before the network starts, e.g. a node's crypto section. */
  configure?: (config: ConfigInput, dir: string) => void;
}

export async function startLedgerNetwork(options: LedgerNetworkOptions = {}): Promise<LedgerNetwork> {
  const net = await writeTestConfig(options.participants ?? 2, { hosts: options.hosts });
  if (options.tolerance || options.configure) {
    const config = parse(readFileSync(net.configPath, "utf8")) as ConfigInput;
    if (options.tolerance) {
      config.synchronizer.parameters = { "ledger-time-record-time-tolerance": options.tolerance };
    }
    options.configure?.(config, net.dir);
    writeFileSync(net.configPath, stringify(config));
  }
  const cfg = ["--config", net.configPath];
  const dataDir = join(net.dir, "data");
  let downed = false;
  const network: LedgerNetwork = {
    net,
    cfg,
    dataDir,
    participantPorts: net.ports.participants,
    clients: net.ports.participants.map((port, i) => ledgerClients(port, net.hosts.participants[i])),
    pid: (node) => livePid(processFiles(dataDir, node).pidFile),
    down: async () => {
      if (downed) return;
      downed = true;
      await runLockstep(["down", ...cfg]);
      rmSync(net.dir, { recursive: true, force: true });
    },
  };
  const up = await runLockstep(["up", "--detach", "--json", ...cfg]);
  if (up.code !== 0) {
    const log = (node: string) => {
      try {
        return readFileSync(processFiles(dataDir, node).logFile, "utf8").slice(-3000);
      } catch {
        return "";
      }
    };
    await network.down();
    throw new Error(`lockstep up failed (${up.code}): ${up.stdout}${up.stderr}\n${log("participant1")}`);
  }
  return network;
}

/** Allocates a party on one participant and waits until every participant's topology knows it. */
export async function allocateKnownParty(
  network: LedgerNetwork,
  participant: number,
  hint: string,
): Promise<string> {
  const { party } = await (network.clients[participant] as LedgerClients).parties.allocateParty({
    partyIdHint: hint,
  });
  for (const clients of network.clients) {
    await waitFor(`${party} in every topology`, async () =>
      (await clients.parties.listParties({})).parties.some((p) => p.party === party) ? true : undefined,
    );
  }
  return party;
}

export type CommandsInit = MessageInitShape<typeof CommandsSchema>;

export function createIouCommand(
  commandId: string,
  issuer: string,
  owner: string,
  options: { userId?: string; amount?: string; dedupMs?: number } = {},
): CommandsInit {
  return {
    userId: options.userId ?? "test-app",
    commandId,
    actAs: [issuer],
    deduplicationPeriod:
      options.dedupMs === undefined
        ? { case: undefined }
        : { case: "deduplicationDuration", value: { seconds: BigInt(Math.floor(options.dedupMs / 1000)) } },
    command: {
      case: "create",
      value: { template: "Iou", createArguments: iouArgs(issuer, owner, options.amount ?? "100.00") },
    },
  };
}

/** A contract reduced to what two participants must agree on (offsets are per participant). */
export function contractKey(
  c: Pick<Contract, "contractId" | "template" | "arguments" | "signatories" | "observers">,
): string {
  return JSON.stringify([c.contractId, c.template, c.arguments, c.signatories, c.observers]);
}

/** The ACS of some parties recomputed from their updates 1…endInclusive (GetUpdates from 0). */
export async function acsFromUpdates(
  clients: LedgerClients,
  parties: string[],
  endInclusive: bigint,
): Promise<Map<string, Contract>> {
  const acs = new Map<string, Contract>();
  if (endInclusive === 0n) return acs;
  for await (const r of clients.updates.getUpdates(
    { beginExclusive: 0n, endInclusive, parties },
    { timeoutMs: 60_000 },
  )) {
    if (r.update.case !== "transaction") continue;
    for (const e of r.update.value.events) {
      if (e.event.case === "created" && e.event.value.contract) {
        const c = e.event.value.contract;
        if (acs.has(c.contractId)) throw new Error(`contract ${c.contractId} created twice`);
        acs.set(c.contractId, c);
      } else if (e.event.case === "archived") {
        if (!acs.delete(e.event.value.contractId))
          throw new Error(`archived unknown contract ${e.event.value.contractId}`);
      }
    }
  }
  return acs;
}
