import type { Command } from "commander";
import { type KeptDatabase, listKeptDatabases, runningTargetFor } from "../backup/restore-target.ts";
import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { configNodes } from "../common/config-schema.ts";
import { silentLogger } from "../common/logging.ts";
import { adminClient } from "../node/clients.ts";
import { loadCliConfig, outputFor } from "./cli-context.ts";
import { table } from "./output.ts";
import { keptText } from "./restore-commands.ts";

/** One node's status in docs/cli.md's `status --json` shape. */
export interface NodeStatusJson {
  name: string;
  kind: string;
  port: number;
  running: boolean;
  role: string | null;
  position: Record<string, unknown> | null;
  incarnation: string | null;
  writerEpoch: string | null;
  deduplicationRecovery: Record<string, unknown> | null;
  replication: string[];
  lastError: { code: string; message: string; remedy: string } | null;
  pid: number | null;
  /** Databases earlier restores replaced and kept (the way back); null when the database server is not reachable. */
  keptDatabases: KeptDatabase[] | null;
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
        keptDatabases: await keptDatabasesOf(config, entry),
      };
      try {
        const s = await adminClient(entry.port).getStatus({}, { timeoutMs });
        return {
          ...base,
          running: true,
          role: s.role,
          position: parseJson(s.positionJson),
          incarnation: s.incarnation || null,
          writerEpoch: s.writerEpoch.toString(),
          deduplicationRecovery: parseJson(s.deduplicationRecoveryJson),
          replication: s.replicationFindings,
          lastError: s.lastError?.code
            ? { code: s.lastError.code, message: s.lastError.message, remedy: s.lastError.remedy }
            : null,
          pid: s.pid,
        };
      } catch {
        return {
          ...base,
          running: false,
          role: null,
          position: null,
          incarnation: null,
          writerEpoch: null,
          deduplicationRecovery: null,
          replication: [],
          lastError: null,
          pid: null,
        };
      }
    }),
  );
}

export function statusTable(nodes: NodeStatusJson[]): string {
  const rows = nodes.map((n) => [
    n.name,
    n.kind,
    String(n.port),
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
      "PORT",
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
  const recovering = nodes
    .filter((n) => n.deduplicationRecovery)
    .map(
      (n) =>
        `${n.name}: deduplication recovery waits for ${String(n.deduplicationRecovery?.waitingFor ?? "-")}`,
    );
  const kept = nodes.flatMap((n) => (n.keptDatabases ?? []).map((k) => ({ node: n.name, ...k })));
  return [text, ...remedies, ...recovering, ...(kept.length ? [keptText(kept)] : [])].join("\n");
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
