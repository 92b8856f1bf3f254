import { createHash } from "node:crypto";
import { mkdirSync, readdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import type { LockstepConfig, NodeEntry } from "../../common/config-schema.ts";
import { configNodes } from "../../common/config-schema.ts";
import { LockstepError, toLockstepError } from "../../common/errors.ts";
import type { Logger } from "../../common/logging.ts";
import type { DbSession, Queryable } from "../../storage/db.ts";
import { createStorageDb } from "../../storage/storage-db.ts";
import type {
  Artifact,
  BackupEngine,
  BackupRequest,
  BackupResult,
  RestoreOptions,
  RestoreTargetOf,
  VerifyTier,
} from "../backup-engine.ts";
import { BackupKeys } from "../backup-keys.ts";
import { fsyncPath, hashFile } from "../file-hash.ts";
import type { PgBackRestRecord, RecoveryTarget } from "../manifest.ts";
import { copyDatabase } from "./database-copy.ts";
import {
  commitPastTarget,
  type NodeCluster,
  nodeCluster,
  requireSetUp,
  stanzaPgBackRest,
} from "./node-cluster.ts";
import type { RestoreTarget as CliRestoreTarget, PgBackRest } from "./pgbackrest-cli.ts";
import type { PgBackRestBackup, PgBackRestBackupType, VerifyReport } from "./pgbackrest-info.ts";
import { type PgBackRestRepo, recordEncryption, recordRepo } from "./pgbackrest-repo.ts";
import { atRestorePoint, RESTORE_POINT_NAME_MAX, walSegmentOf } from "./restore-point.ts";
import { restoreToScratch } from "./scratch-restore.ts";
import { waitWalArchived } from "./wal-archived.ts";

/** The pgbackrest engine's options (config `backup.pgbackrest`, `backup create --type`). */
export interface PgBackRestEngineOptions {
  type: PgBackRestBackupType;
}

/** What the set holds of a node's physical backup: this file, naming the backup in pgBackRest's repository. */
export interface PgBackRestDescriptor {
  record: PgBackRestRecord;
  /** The backup as pgBackRest's `info` described it when the set was made. */
  backup: PgBackRestBackup;
  cluster: { description: string; systemIdentifier: string };
}

export function descriptorName(node: string): string {
  return `${node}.pgbackrest.json`;
}

/** `lockstep-<set>-<node>`, shortened with a hash when PostgreSQL's 63 bytes cannot hold it. */
export function restorePointName(setId: string, node: string): string {
  const name = `lockstep-${setId}-${node}`;
  if (Buffer.byteLength(name) <= RESTORE_POINT_NAME_MAX) return name;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 12);
  return `${name.slice(0, RESTORE_POINT_NAME_MAX - 13)}-${hash}`;
}

/** The restore target pgBackRest's CLI takes for a recorded one. */
export function cliTarget(target: RecoveryTarget): CliRestoreTarget {
  if (target.type === "time") return { type: "time", time: target.time };
  return { type: "name", name: target.name, ...(target.timeline ? { timeline: target.timeline } : {}) };
}

export function describeTarget(target: RecoveryTarget): string {
  return target.type === "name" ? `restore point ${target.name} (${target.lsn})` : `time ${target.time}`;
}

/** Writes a node's descriptor into the set and returns it hashed, as the manifest's `files`. */
export async function writeDescriptor(setDir: string, node: string, descriptor: PgBackRestDescriptor) {
  const artifact = descriptorName(node);
  const path = join(setDir, artifact);
  await writeFile(path, `${JSON.stringify(descriptor, null, 2)}\n`, { flag: "wx" });
  await fsyncPath(path);
  const hash = await hashFile(path);
  return { artifact, files: [{ path: artifact, bytes: hash.bytes.toString(), sha256: hash.sha256 }] };
}

/**
 * pgBackRest, the physical engine (docs/design.md §4.6, docs/backup.md): a node's backup is a
 * pgBackRest backup of its whole cluster (full, diff or incr; one per cluster and set, shared by the
 * nodes in it) and a restore point written after it under the node's writer lock, at which the
 * node's position is read: recovery replays the backup and the archived WAL up to that point, so
 * the manifest describes exactly what a restore yields. A restore replays into a scratch cluster
 * (only the node's database, `--db-include`) and copies that database into the target, so one
 * node is restored without touching the other databases of its cluster, or the cluster's timeline.
 * With backup.encryption the backups go to an encrypted repository of the key's own
 * (pgbackrest-repo.ts); the record names the key's fingerprint, and reading the backup again
 * (verify, restore) needs that key configured (BACKUP_KEY_MISSING / _MISMATCH otherwise).
 */
export class PgBackRestEngine implements BackupEngine<PgBackRestRecord, "database"> {
  readonly name = "pgbackrest";
  readonly restoresInto = "database";
  readonly verifyTiers: readonly VerifyTier<PgBackRestRecord>[] = [
    { name: "pgBackRest repository", check: (artifact) => this.checkListed(artifact) },
    { name: "pgBackRest verify", check: (artifact) => this.checkVerified(artifact) },
  ];
  private readonly entries: NodeEntry[];
  /** One pgBackRest backup per cluster and set, shared by the set's nodes in that cluster. */
  private readonly clusterBackups = new Map<string, Promise<PgBackRestBackup>>();
  /** pgBackRest commands on one stanza run one at a time (its own stanza lock would refuse). */
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly verifyReports = new Map<string, Promise<VerifyReport>>();
  /** Made (and its config file written) once per stanza, repository and run. */
  private readonly stanzas = new Map<string, PgBackRest>();
  private readonly keys: BackupKeys;

  constructor(
    private readonly config: LockstepConfig,
    private readonly options: PgBackRestEngineOptions,
    private readonly logger: Logger,
  ) {
    this.entries = configNodes(config);
    this.keys = new BackupKeys(config.backup.encryption);
  }

  async backup<T>(
    request: BackupRequest,
    atConsistentPoint: (q: Queryable) => Promise<T>,
  ): Promise<BackupResult<PgBackRestRecord, T>> {
    const entry = this.entry(request.node);
    const cluster = await nodeCluster(this.config, entry, this.logger);
    const { pgbackrest } = cluster;
    const stanza = pgbackrest.stanza;
    const { backup, shared } = await this.clusterBackup(request, cluster);
    const name = restorePointName(basename(request.setDir), entry.name);
    request.onStep?.(`restore point ${name}: locking the writer, reading the position`);
    const db = createStorageDb({
      connectionString: cluster.url,
      applicationName: `lockstep-backup-${entry.name}`,
      max: 1,
      logger: this.logger,
    });
    let point: { value: T; lsn: string; serverTime: string; timeline: number };
    try {
      const session: DbSession = await db.session();
      try {
        point = await atRestorePoint(session, entry.kind, name, atConsistentPoint);
      } finally {
        session.release(true);
      }
    } finally {
      await db.close();
    }
    // The restore point is only a target once its WAL is in the repository.
    request.onStep?.(`archiving the WAL up to ${point.lsn}`);
    await this.queued(stanza, () => waitWalArchived(cluster, point.lsn));
    const record: PgBackRestRecord = {
      name: this.name,
      stanza,
      label: backup.label,
      type: backup.type,
      startLsn: backup.lsn.start,
      stopLsn: backup.lsn.stop,
      database: cluster.database,
      target: { type: "name", name, lsn: point.lsn, timeline: point.timeline },
      ...recordEncryption(cluster.repo),
    };
    const { artifact, files } = await writeDescriptor(request.setDir, entry.name, {
      record,
      backup,
      cluster: { description: cluster.description, systemIdentifier: cluster.systemIdentifier },
    });
    // What the backup added to the repository, counted once: on the node that took it.
    const bytes = shared ? 0n : BigInt(backup.size.repositoryDelta);
    request.onProgress?.(bytes);
    return { record, artifact, files, bytes, consistent: point.value };
  }

  /** The set's pgBackRest backup of the node's cluster: taken by the first of its nodes, shared by the rest. */
  private async clusterBackup(
    request: BackupRequest,
    cluster: NodeCluster,
  ): Promise<{ backup: PgBackRestBackup; shared: boolean }> {
    const stanza = cluster.pgbackrest.stanza;
    const key = `${request.setDir}\n${stanza}`;
    let backup = this.clusterBackups.get(key);
    const shared = backup !== undefined;
    if (!backup) {
      backup = (async () => {
        await requireSetUp(cluster);
        request.onStep?.(
          `pgBackRest ${this.options.type} backup of ${cluster.description} (stanza ${stanza})`,
        );
        const started = Date.now();
        const taken = await this.queued(stanza, () => cluster.pgbackrest.backup(this.options.type));
        request.onStep?.(
          `pgBackRest backup ${taken.label} (${taken.type}) in ${((Date.now() - started) / 1000).toFixed(1)}s, ${taken.lsn.start} to ${taken.lsn.stop}`,
        );
        return taken;
      })();
      this.clusterBackups.set(key, backup);
    } else {
      request.onStep?.(`sharing the set's pgBackRest backup of ${cluster.description}`);
    }
    return { backup: await backup, shared };
  }

  /** The backup and the WAL to its target are still in pgBackRest's repository (`restore plan`). */
  preflight(artifact: Artifact<PgBackRestRecord>): Promise<string> {
    return this.checkListed(artifact);
  }

  async restore(
    artifact: Artifact<PgBackRestRecord>,
    target: RestoreTargetOf<"database">,
    options: RestoreOptions = {},
  ): Promise<void> {
    const { record } = artifact;
    const repo = this.repoOf(artifact);
    const pgbackrest = this.pgbackrest(record.stanza, repo);
    const parentDir = resolve(this.config["data-dir"], "restore-scratch");
    mkdirSync(parentDir, { recursive: true });
    options.onStep?.(
      `pgBackRest restore of ${record.database} from ${record.label} to ${describeTarget(record.target)} (scratch cluster)`,
    );
    if (record.target.type === "time") await commitPastTarget(this.config, record.stanza, this.logger, repo);
    const scratch = await restoreToScratch({
      pgbackrest,
      set: record.label,
      target: cliTarget(record.target),
      databases: [record.database],
      parentDir,
      logger: this.logger,
      ...(options.signal ? { signal: options.signal } : {}),
    }).catch((error: unknown) => {
      throw recoveryFailure(error, record.database, record.target);
    });
    try {
      options.onStep?.(`copying ${record.database} from the scratch cluster into place`);
      await copyDatabase(scratch.connectionUrl(record.database), target.url, {
        ...(options.clean ? { clean: true } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } finally {
      await scratch.cleanup();
    }
  }

  /**
   * pgBackRest for a stanza in a repository a record names (its config file written on first use:
   * the data dir may be new). Default: the current repository.
   */
  pgbackrest(stanza: string, repo?: PgBackRestRepo): PgBackRest {
    const key = `${stanza}\n${repo?.folder ?? ""}`;
    let pgbackrest = this.stanzas.get(key);
    if (!pgbackrest) {
      pgbackrest = stanzaPgBackRest(this.config, this.entries, stanza, this.logger, repo);
      pgbackrest.prepare();
      this.stanzas.set(key, pgbackrest);
    }
    return pgbackrest;
  }

  /** The repository an artifact's backup is in; its key must be configured (BACKUP_KEY_MISSING / _MISMATCH). */
  private repoOf(artifact: Artifact<PgBackRestRecord>): PgBackRestRepo {
    return recordRepo(this.config, this.keys, artifact.record, {
      set: basename(artifact.setDir),
      artifact: artifact.name,
    });
  }

  private async checkListed(artifact: Artifact<PgBackRestRecord>): Promise<string> {
    const { record } = artifact;
    const repo = this.repoOf(artifact);
    const pgbackrest = this.pgbackrest(record.stanza, repo);
    const info = await pgbackrest.info({ set: record.label });
    const backup = info.backups.find((b) => b.label === record.label);
    if (!backup) throw missing(record, `backup ${record.label} is not in stanza ${record.stanza}`);
    if (record.target.type === "name") {
      if (!walArchived(pgbackrest.repoPath, record.stanza, record.target.lsn, record.target.timeline))
        throw missing(record, `the WAL up to ${describeTarget(record.target)} is not in the archive`);
    }
    const where = repo.cipher ? `, encrypted under backup key ${repo.cipher.keyFingerprint}` : "";
    return `pgBackRest lists backup ${record.label} (${backup.type}${backup.references.length ? `, on ${backup.references.length} earlier` : ""}${where}) and the WAL it replays`;
  }

  private async checkVerified(artifact: Artifact<PgBackRestRecord>): Promise<string> {
    const { record } = artifact;
    const repo = this.repoOf(artifact);
    const reportKey = `${record.stanza}\n${repo.folder}`;
    let report = this.verifyReports.get(reportKey);
    if (!report) {
      const pgbackrest = this.pgbackrest(record.stanza, repo);
      report = this.queued(record.stanza, () => pgbackrest.verify());
      this.verifyReports.set(reportKey, report);
    }
    const result = await report;
    const own = result.backups.find((b) => b.label === record.label);
    if (!result.ok) {
      const problems = result.problems.length > 0 ? result.problems.join("; ") : result.status;
      throw new Error(`pgBackRest verify of stanza ${record.stanza} found damage: ${problems}`);
    }
    return `pgBackRest verify: stanza ${record.stanza} ok${own ? `, ${own.label} ${own.status} (${own.valid}/${own.checked} files)` : ""}`;
  }

  private entry(node: string): NodeEntry {
    const entry = this.entries.find((e) => e.name === node);
    if (!entry)
      throw new LockstepError("NODE_UNKNOWN", { node, known: this.entries.map((e) => e.name).join(", ") });
    return entry;
  }

  private queued<T>(stanza: string, run: () => Promise<T>): Promise<T> {
    const before = this.queues.get(stanza) ?? Promise.resolve();
    const next = before.then(run, run);
    this.queues.set(
      stanza,
      next.catch(() => {}),
    );
    return next;
  }
}

/**
 * Whether the WAL segment holding `lsn` (on `timeline`, or on any when unknown) is in the stanza's
 * archive. Read from the repository's layout (`archive/<stanza>/<archive id>/<first 16 hex digits>/
 * <segment>-<sha1>[.<compression>]`): `info`'s minimum and maximum span every timeline together, so
 * they cannot say whether one timeline's segment is there.
 */
export function walArchived(repoPath: string, stanza: string, lsn: string, timeline?: number): boolean {
  const segment = walSegmentOf(lsn);
  const prefix = timeline ? timeline.toString(16).toUpperCase().padStart(8, "0") : null;
  const root = join(repoPath, "archive", stanza);
  const list = (dir: string) => {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  };
  for (const archiveId of list(root)) {
    for (const dir of list(join(root, archiveId))) {
      if (dir.length !== 16 || dir.slice(8) !== segment.slice(0, 8)) continue;
      if (prefix && dir.slice(0, 8) !== prefix) continue;
      if (list(join(root, archiveId, dir)).some((f) => f.slice(8, 24) === segment)) return true;
    }
  }
  return false;
}

function missing(record: PgBackRestRecord, reason: string): LockstepError {
  return new LockstepError("PGBACKREST_BACKUP_MISSING", {
    what: `the backup of ${record.database} (${record.label})`,
    reason,
  });
}

/** A recovery that stopped short of its target says so, with the target, rather than as a server failure. */
export function recoveryFailure(error: unknown, node: string, target: RecoveryTarget): unknown {
  const failure = toLockstepError(error);
  if (failure.code === "POSTGRES_FAILED" && /recovery target|recovery ended/i.test(failure.message)) {
    return new LockstepError(
      "PITR_TARGET_UNREACHABLE",
      { node, target: describeTarget(target), reason: failure.message },
      { cause: error },
    );
  }
  return error;
}
