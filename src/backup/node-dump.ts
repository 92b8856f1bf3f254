import type { NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { type NodeConnection, nodeConnection } from "../node/node-database.ts";
import type { Queryable } from "../storage/db.ts";
import type { NodeBackup } from "./manifest.ts";
import { type MemberLookup, type NodeSnapshotInfo, readNodeSnapshotInfo } from "./node-position.ts";
import type { RuntimeEngine } from "./runtime-engine.ts";

export interface NodeDumpOptions {
  entry: NodeEntry;
  dataDir: string;
  synchronizerId: string;
  setDir: string;
  /** The node's engine (BackupEngines.forNode). */
  engine: RuntimeEngine;
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
 * Backs up one node's database with its position read at the engine's consistent point
 * (docs/design.md §4.2): the position, identity and keys the manifest records are those of the
 * data in the artifact, whatever the node does meanwhile.
 */
export async function dumpNode(options: NodeDumpOptions): Promise<NodeBackup> {
  const { entry, progress } = options;
  const connect = options.connect ?? ((e: NodeEntry) => nodeConnection(e, options.dataDir, options.logger));
  const connection = await connect(entry);
  const startedAt = new Date();
  const result = await options.engine.backup(
    {
      node: entry.name,
      connectionUrl: connection.url,
      source: connection.description,
      setDir: options.setDir,
      onStep: (line) => progress(`${entry.name}: ${line}`),
      onProgress: (bytes) => progress(`${entry.name}: ${mib(bytes)} written`),
    },
    (q) => readInfo(q, options, connection),
  );
  const info = result.consistent;
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
    engine: result.record,
    artifact: result.artifact,
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
}

/** The node's identity and position at the consistent point; refuses a database of another node. */
async function readInfo(
  q: Queryable,
  options: NodeDumpOptions,
  connection: NodeConnection,
): Promise<NodeSnapshotInfo> {
  const { entry } = options;
  const info = await readNodeSnapshotInfo(q, entry.kind, options.synchronizerId, options.lookups).catch(
    (error) => {
      throw new LockstepError("BACKUP_FAILED", {
        node: entry.name,
        reason: `cannot read its position (has the node ever started on ${connection.description}?): ${(error as Error).message}`,
      });
    },
  );
  if (info.nodeName !== entry.name || info.kind !== entry.kind) {
    throw new LockstepError("BACKUP_FAILED", {
      node: entry.name,
      reason: `${connection.description} belongs to ${info.kind} ${info.nodeName}; check the node's storage.url`,
    });
  }
  return info;
}
