import type { Command } from "commander";
import type { NodeEntry } from "../common/config-schema.ts";
import { createLogger } from "../common/logging.ts";
import { embeddedDatabaseName, nodeConnection } from "../node/node-database.ts";
import {
  type NodeReplicationReport,
  nodeReplicationReport,
  replicationRefusal,
} from "../node/replication-monitor.ts";
import type { StandbyFact } from "../storage/replication-check.ts";
import { createStorageDb } from "../storage/storage-db.ts";
import { findNode, loadCliConfig, outputFor } from "./cli-context.ts";
import { alreadyReported, table } from "./output.ts";

const ms = (value: number | null) => (value === null ? "-" : `${value.toFixed(1)}ms`);

function standbysTable(standbys: readonly StandbyFact[]): string {
  if (standbys.length === 0) return "no standby connected";
  return table(
    ["STANDBY", "ADDRESS", "STATE", "SYNC", "WRITE LAG", "FLUSH LAG", "REPLAY LAG", "REPLAY BEHIND"],
    standbys.map((s) => [
      s.applicationName || "(unnamed)",
      s.clientAddress ?? "-",
      s.state ?? "?",
      s.syncState ?? "?",
      ms(s.writeLagMs),
      ms(s.flushLagMs),
      ms(s.replayLagMs),
      s.replayLagBytes === null ? "-" : `${s.replayLagBytes} bytes`,
    ]),
  );
}

export function reportText(report: NodeReplicationReport): string {
  const head = `replication check of ${report.node} (${report.database}); configured check: ${report.check}, min-sync-standbys: ${report.minSyncStandbys}`;
  if (report.skipped) return `${head}\nskipped: ${report.skipped}`;
  const settings = `synchronous_commit: ${report.synchronousCommit?.value} (${report.synchronousCommit?.source}); synchronous_standby_names: ${report.synchronousStandbyNames || "(empty)"}${report.managedBy ? `; managed by ${report.managedBy}` : ""}`;
  const verdict = report.ok
    ? "passed"
    : [
        `${report.findings.length} finding(s):`,
        ...report.findings.map((f) => `- ${f.kind}: ${f.message}\n  remedy: ${f.remedy}`),
      ].join("\n");
  return [head, settings, standbysTable(report.standbys), verdict].join("\n");
}

/**
 * `lockstep replication check NODE` (docs/cli.md): the node's replication findings and each standby's
 * lag, read straight from the node's database server, so it works with the node stopped (before a
 * first start, or before a fail-over). Exit 3 when there is any finding, whatever `check` says.
 */
export function registerReplicationCommand(program: Command): void {
  const replication = program.command("replication").description("the replication of the nodes' databases");
  replication
    .command("check")
    .description(
      "synchronous_commit (with per-role and per-database overrides), synchronous_standby_names, synchronous standbys streaming, each standby's lag; exit 3 on any finding",
    )
    .argument("<node>", "node name")
    .action(async (name: string, _opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const entry = findNode(loaded, name);
      const report = await checkNode(entry, loaded.config["data-dir"]);
      out.result(report, () => reportText(report));
      if (!report.ok) throw alreadyReported(replicationRefusal(entry.name, report.findings));
    });
}

async function checkNode(entry: NodeEntry, dataDir: string): Promise<NodeReplicationReport> {
  // The embedded cluster is skipped: do not start it just to say so.
  if (!entry.config.storage.url) {
    return nodeReplicationReport(entry, `embedded ${embeddedDatabaseName(entry.name)}`, () => {
      throw new Error("the embedded cluster is not checked");
    });
  }
  const logger = createLogger({ node: "replication", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
  const connection = await nodeConnection(entry, dataDir, logger);
  const db = createStorageDb({
    connectionString: connection.url,
    applicationName: `lockstep-replication-check-${entry.name}`,
    max: 1,
    logger,
  });
  try {
    return await nodeReplicationReport(entry, connection.description, () => db);
  } finally {
    await db.close();
  }
}
