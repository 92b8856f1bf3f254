import type { NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { Queryable } from "../storage/db.ts";
import {
  evaluateReplication,
  findingLine,
  type ReplicationFacts,
  type ReplicationFinding,
  type StandbyFact,
} from "../storage/replication-check.ts";
import { readReplicationFacts } from "../storage/replication-facts.ts";

/**
 * Why the embedded cluster is not checked: it is one local development server, which by design
 * has no standby; checking it would only repeat the same findings on every start and in status.
 */
export const EMBEDDED_SKIP_REASON =
  "the embedded cluster (no storage.url) is a local development database without standbys; point storage.url at a replicated server to have it checked";

/** A node's replication check as `lockstep replication check --json` prints it (docs/cli.md). */
export interface NodeReplicationReport {
  node: string;
  /** Where the database is, never with a password. */
  database: string;
  check: "fail" | "warn" | "off";
  minSyncStandbys: number;
  /** Why nothing was checked (the embedded cluster), else null. */
  skipped: string | null;
  ok: boolean;
  findings: ReplicationFinding[];
  synchronousCommit: { value: string; source: string } | null;
  synchronousStandbyNames: string | null;
  managedBy: "patroni" | null;
  /** Per standby, its state and lag (null where PostgreSQL reports none, e.g. caught up and idle). */
  standbys: StandbyFact[];
}

/** The check of one node's database: the embedded cluster is skipped; `query` is not touched then. */
export async function nodeReplicationReport(
  entry: NodeEntry,
  database: string,
  query: () => Queryable,
): Promise<NodeReplicationReport> {
  const { check, "min-sync-standbys": minSyncStandbys } = entry.config.storage.replication;
  const base = { node: entry.name, database, check, minSyncStandbys };
  if (!entry.config.storage.url) {
    return {
      ...base,
      skipped: EMBEDDED_SKIP_REASON,
      ok: true,
      findings: [],
      synchronousCommit: null,
      synchronousStandbyNames: null,
      managedBy: null,
      standbys: [],
    };
  }
  const facts: ReplicationFacts = await readReplicationFacts(query());
  const findings = evaluateReplication(facts, { minSyncStandbys });
  return {
    ...base,
    skipped: null,
    ok: findings.length === 0,
    findings,
    synchronousCommit: facts.synchronousCommit,
    synchronousStandbyNames: facts.synchronousStandbyNames,
    managedBy: facts.patroni ? "patroni" : null,
    standbys: facts.standbys,
  };
}

/** REPLICATION_MISCONFIGURED naming every finding and its remedy. */
export function replicationRefusal(node: string, findings: readonly ReplicationFinding[]): LockstepError {
  return new LockstepError("REPLICATION_MISCONFIGURED", {
    node,
    findings: findings.map(findingLine).join("; "),
    remedies: findings.map((f) => `${f.kind}: ${f.remedy}`).join(" "),
  });
}

export interface ReplicationMonitorOptions {
  entry: NodeEntry;
  db: Queryable;
  description: string;
  logger: Logger;
  /** How often a running node checks again (findings come and go with standbys); default 30 s. */
  intervalMs?: number;
}

/**
 * The node's replication check: once at start (`check: fail` refuses to start with
 * REPLICATION_MISCONFIGURED), then again every `intervalMs` so that `status` shows what holds now,
 * under `fail` too (a standby lost later is reported, not a reason to stop a running node: commits
 * then wait for it rather than go unreplicated). `off` and the embedded cluster skip it.
 */
export class ReplicationMonitor {
  private findings: ReplicationFinding[] = [];
  private logged: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly options: ReplicationMonitorOptions) {}

  async start(): Promise<void> {
    const { entry, logger } = this.options;
    const { check } = entry.config.storage.replication;
    if (check === "off") return;
    if (!entry.config.storage.url) {
      logger.info(`replication check skipped: ${EMBEDDED_SKIP_REASON}`);
      return;
    }
    await this.refresh();
    // Refused: the error names every finding; logging them as warnings too would say it twice.
    if (check === "fail" && this.findings.length > 0) throw replicationRefusal(entry.name, this.findings);
    this.logChange();
    this.schedule();
  }

  /** Each finding as JSON `{kind, message, remedy}`: GetStatus carries them as strings. */
  statusFindings(): string[] {
    return this.findings.map((f) => JSON.stringify(f));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.refresh()
        .then(() => this.logChange())
        .catch((error) => this.options.logger.warn({ err: error }, "replication check could not run"))
        .finally(() => this.schedule());
    }, this.options.intervalMs ?? 30_000);
    this.timer.unref();
  }

  private async refresh(): Promise<void> {
    const { entry, db, description } = this.options;
    const report = await nodeReplicationReport(entry, description, () => db);
    if (!this.stopped) this.findings = report.findings;
  }

  /** Logs the findings when they changed: a re-check every 30 s must not repeat the same warnings. */
  private logChange(): void {
    const { description, logger } = this.options;
    const lines = this.findings.map(findingLine).join("\n");
    if (lines === this.logged || this.stopped) return;
    this.logged = lines;
    if (this.findings.length === 0) {
      logger.info({ database: description }, "replication check passed");
      return;
    }
    for (const finding of this.findings) {
      logger.warn({ finding: finding.kind, remedy: finding.remedy }, `replication check: ${finding.message}`);
    }
  }
}
