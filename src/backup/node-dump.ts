import type { NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { type NodeConnection, nodeConnection } from "../node/node-database.ts";
import { createStorageDb } from "../storage/storage-db.ts";
import type { BackupEngine } from "./backup-engine.ts";
import { artifactName, type BackupFormat, type NodeBackup } from "./manifest.ts";
import { type MemberLookup, readNodeSnapshotInfo } from "./node-position.ts";

export interface NodeDumpOptions {
  entry: NodeEntry;
  dataDir: string;
  synchronizerId: string;
  setDir: string;
  format: BackupFormat;
  jobs: number;
  engine: BackupEngine;
  logger: Logger;
  progress: (line: string) => void;
  /** Where the node's database is; by default from the config (storage.url or the embedded cluster). */
  connect?: (entry: NodeEntry) => Promise<NodeConnection>;
  /** For the sequencer: members' last stored events to look up in its snapshot (order check). */
  lookups?: readonly MemberLookup[];
}

function mib(bytes: bigint): string {
  return `${(Number(bytes) / 1048576).toFixed(1)} MiB`;
}

/**
 * Dumps one node's database with its position read in the same snapshot (docs/design.md §4.2): a
 * REPEATABLE READ transaction on a dedicated session exports its snapshot, the position is read
 * in it, and pg_dump --snapshot runs while the transaction stays open.
 */
export async function dumpNode(options: NodeDumpOptions): Promise<NodeBackup> {
  const { entry, progress } = options;
  const connect = options.connect ?? ((e: NodeEntry) => nodeConnection(e, options.dataDir, options.logger));
  const connection = await connect(entry);
  const db = createStorageDb({
    connectionString: connection.url,
    applicationName: `lockstep-backup-${entry.name}`,
    max: 1,
    logger: options.logger,
  });
  const startedAt = new Date();
  progress(`${entry.name}: dumping ${connection.description} (${options.format})`);
  const session = await db.session();
  try {
    await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    const { snapshot } = await session.one<{ snapshot: string }>("SELECT pg_export_snapshot() AS snapshot");
    const info = await readNodeSnapshotInfo(
      session,
      entry.kind,
      options.synchronizerId,
      options.lookups,
    ).catch((error) => {
      throw new LockstepError("BACKUP_FAILED", {
        node: entry.name,
        reason: `cannot read its position (has the node ever started on ${connection.description}?): ${(error as Error).message}`,
      });
    });
    if (info.nodeName !== entry.name || info.kind !== entry.kind) {
      throw new LockstepError("BACKUP_FAILED", {
        node: entry.name,
        reason: `${connection.description} belongs to ${info.kind} ${info.nodeName}; check the node's storage.url`,
      });
    }
    const artifact = artifactName(entry.name, options.format);
    const result = await options.engine.dump({
      connectionUrl: connection.url,
      snapshot,
      format: options.format,
      jobs: options.jobs,
      setDir: options.setDir,
      artifact,
      onProgress: (bytes) => progress(`${entry.name}: ${mib(bytes)} written`),
    });
    await session.execute("COMMIT");
    const finishedAt = new Date();
    progress(
      `${entry.name}: done, ${mib(result.bytes)} in ${((finishedAt.getTime() - startedAt.getTime()) / 1000).toFixed(1)}s`,
    );
    const common = {
      name: entry.name,
      member: info.member,
      synchronizerId: info.synchronizerId,
      incarnation: info.incarnation,
      writerEpoch: info.writerEpoch,
      format: options.format,
      artifact,
      files: result.files,
      bytes: result.bytes.toString(),
      database: connection.database,
      postgres: info.postgres,
      keyFingerprints: info.keyFingerprints,
      ...(info.wrapperFingerprint === null ? {} : { wrapperFingerprint: info.wrapperFingerprint }),
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
    };
    // The kind decides the position's shape (readNodeSnapshotInfo read it by kind).
    return { ...common, kind: entry.kind, position: info.position } as NodeBackup;
  } finally {
    session.release(true);
    await db.close();
  }
}
