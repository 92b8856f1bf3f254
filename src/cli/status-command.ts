import type { Command } from "commander";
import { type KeptDatabase, listKeptDatabases, runningTargetFor } from "../backup/restore-target.ts";
import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { configNodes } from "../common/config-schema.ts";
import { silentLogger } from "../common/logging.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { loadCliConfig, outputFor } from "./cli-context.ts";
import { nodeProcesses, type ProcessStatusJson, representative } from "./node-processes.ts";
import { table } from "./output.ts";
import { keptText } from "./restore-commands.ts";

/** One node's status in docs/cli.md's `status --json` shape. */
export interface NodeStatusJson {
  name: string;
  kind: string;
  port: number;
  /** host:port where the CLI and the other nodes reach it (the config's `address`, or its default). */
  address: string;
  running: boolean;
  role: string | null;
  position: Record<string, unknown> | null;
  incarnation: string | null;
  writerEpoch: string | null;
  deduplicationRecovery: Record<string, unknown> | null;
  /** The node's replication findings (docs/design.md §3); [] when it passes, skips or is not running. */
  replication: { kind: string; message: string; remedy: string }[];
  /** Writer fencing of the activation before the active one (writer-fencing.ts); null when none. */
  fencing: Record<string, unknown> | null;
  lastError: { code: string; message: string; remedy: string } | null;
  pid: number | null;
  /** Databases earlier restores replaced and kept (the way back); null when the database server is not reachable. */
  keptDatabases: KeptDatabase[] | null;
  /**
   * Every process of the node (node-processes.ts): the one at its address and each replica, with its
   * role. The node's own fields above come from the active one (else the one at its address).
   */
  processes: ProcessStatusJson[];
}

/** Read straight from the node's database server (a stopped node has them too); never starts a server. */
async function keptDatabasesOf(config: LockstepConfig, entry: NodeEntry): Promise<KeptDatabase[] | null> {
  try {
    const target = await runningTargetFor(entry, config["data-dir"], silentLogger());
    return target ? await listKeptDatabases(target) : null;
  } catch {
    return null;
  }
}

/** GetStatus carries each finding as JSON (replication-monitor.ts); anything else becomes a message. */
function parseFinding(text: string): NodeStatusJson["replication"][number] {
  try {
    return JSON.parse(text) as NodeStatusJson["replication"][number];
  } catch {
    return { kind: "unknown", message: text, remedy: "" };
  }
}

function parseJson(text: string): Record<string, unknown> | null {
  return text ? (JSON.parse(text) as Record<string, unknown>) : null;
}

/** Asks every node of the config for its status over its Admin API; a node that does not answer is not running. */
export async function collectStatus(config: LockstepConfig, timeoutMs = 2000): Promise<NodeStatusJson[]> {
  return Promise.all(
    configNodes(config).map(async (entry): Promise<NodeStatusJson> => {
      const base = {
        name: entry.name,
        kind: entry.kind,
        port: entry.port,
        address: nodeEndpoint(entry).address,
        keptDatabases: await keptDatabasesOf(config, entry),
      };
      const processes = await nodeProcesses(config, entry, timeoutMs);
      const s = representative(processes)?.status;
      if (s) {
        return {
          ...base,
          processes: processes.map((p) => p.json),
          running: true,
          role: s.role,
          position: parseJson(s.positionJson),
          incarnation: s.incarnation || null,
          writerEpoch: s.writerEpoch.toString(),
          deduplicationRecovery: parseJson(s.deduplicationRecoveryJson),
          replication: s.replicationFindings.map(parseFinding),
          fencing: parseJson(s.fencingJson),
          lastError: s.lastError?.code
            ? { code: s.lastError.code, message: s.lastError.message, remedy: s.lastError.remedy }
            : null,
          pid: s.pid,
        };
      }
      return {
        ...base,
        processes: processes.map((p) => p.json),
        running: false,
        role: null,
        position: null,
        incarnation: null,
        writerEpoch: null,
        deduplicationRecovery: null,
        replication: [],
        fencing: null,
        lastError: null,
        pid: null,
      };
    }),
  );
}

export function statusTable(nodes: NodeStatusJson[]): string {
  const rows = nodes.map((n) => [
    n.name,
    n.kind,
    n.address,
    n.running ? "yes" : "no",
    n.role ?? "-",
    n.position ? JSON.stringify(n.position) : "-",
    n.incarnation ? n.incarnation.slice(0, 8) : "-",
    n.writerEpoch ?? "-",
    n.deduplicationRecovery ? "recovering" : "-",
    n.replication.length ? `${n.replication.length} finding(s)` : "-",
    n.lastError ? n.lastError.code : "-",
  ]);
  const text = table(
    [
      "NODE",
      "KIND",
      "ADDRESS",
      "RUNNING",
      "ROLE",
      "POSITION",
      "INCARNATION",
      "EPOCH",
      "DEDUP",
      "REPLICATION",
      "LAST ERROR",
    ],
    rows,
  );
  const remedies = nodes
    .filter((n) => n.lastError)
    .map((n) => `${n.name}: ${n.lastError?.code}: ${n.lastError?.message}\n  remedy: ${n.lastError?.remedy}`);
  const replication = nodes.flatMap((n) =>
    n.replication.map((f) => `${n.name}: replication ${f.kind}: ${f.message}\n  remedy: ${f.remedy}`),
  );
  const recovering = nodes
    .filter((n) => n.deduplicationRecovery)
    .map(
      (n) =>
        `${n.name}: deduplication recovery waits for ${String(n.deduplicationRecovery?.waitingFor ?? "-")}`,
    );
  const kept = nodes.flatMap((n) => (n.keptDatabases ?? []).map((k) => ({ node: n.name, ...k })));
  // Nodes with replicas: each process with its role (the table's row is the active one's).
  const replicated = nodes.filter((n) => n.processes.length > 1);
  const processes = replicated.length
    ? [
        table(
          ["NODE", "PROCESS", "ADDRESS", "PID", "ROLE", "EPOCH"],
          replicated.flatMap((n) =>
            n.processes.map((p) => [
              n.name,
              p.replica ?? "(main)",
              p.address,
              p.pid === null ? "-" : String(p.pid),
              p.running ? (p.role ?? "-") : "not running",
              p.writerEpoch ?? "-",
            ]),
          ),
        ),
      ]
    : [];
  return [
    text,
    ...processes,
    ...remedies,
    ...replication,
    ...recovering,
    ...(kept.length ? [keptText(kept)] : []),
  ].join("\n");
}

export function registerStatusCommand(program: Command): void {
  program
    .command("status")
    .description("per node: kind, running, active/passive, position, incarnation, writer epoch, last error")
    .action(async (_opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const nodes = await collectStatus(loaded.config);
      out.result({ nodes }, () => statusTable(nodes));
    });
}
