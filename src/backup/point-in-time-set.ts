import type { LockstepConfig } from "../common/config-schema.ts";
import { LOCKSTEP_VERSION } from "../common/version.ts";
import { liveSequencerStatus, type SequencerRpc, sequencerRpc } from "./backup-holds.ts";
import type { BackupRepository } from "./backup-repository.ts";
import {
  MANIFEST_VERSION,
  type Manifest,
  type NodeBackup,
  type PgBackRestRecord,
  type RecoveryTarget,
} from "./manifest.ts";
import type { MemberLookup, NodeSnapshotInfo } from "./node-position.ts";
import { checkOrder } from "./order-check.ts";
import { writeDescriptor } from "./pgbackrest/pgbackrest-engine.ts";
import type { PgBackRestBackup } from "./pgbackrest/pgbackrest-info.ts";
import { type PgBackRestRepo, recordEncryption } from "./pgbackrest/pgbackrest-repo.ts";

/**
 * Point-in-time recovery as a backup set (docs/design.md §4.6): a checkpoint, or a time, becomes a
 * set whose nodes name no copy of their own but the pgBackRest backup to replay and where to stop
 * (`engine.target`), with each node's identity and position as of that point. Everything a set
 * gets then holds for it unchanged: `restore plan`'s checks (the order check on chain hashes
 * first), `restore apply` (staging, stamp, new incarnation, recovery record), replay from the
 * sequencer and deduplication recovery, `backup verify --drill`, retention.
 */

/** One node as of the point: read in its cluster under the writer lock (checkpoint) or from a copy recovered to it (time). */
export interface PointNode {
  info: NodeSnapshotInfo;
  database: string;
  stanza: string;
  /** The pgBackRest repository the backup is in (encrypted or plain: its record says which). */
  repo: PgBackRestRepo;
  /** The backup recovery starts from. */
  backup: PgBackRestBackup;
  target: RecoveryTarget;
  cluster: { description: string; systemIdentifier: string };
  /** When the position was read. */
  readAt: Date;
}

/** The members' last stored events, for the sequencer's side of the order check. */
export function lookupsOf(infos: readonly NodeSnapshotInfo[]): MemberLookup[] {
  return infos.flatMap((info) => {
    const stored = "lastStored" in info.position ? info.position.lastStored : null;
    return info.kind !== "sequencer" && info.member !== null && stored
      ? [{ member: info.member, timestamp: stored.timestamp }]
      : [];
  });
}

export interface PointSetInput {
  config: LockstepConfig;
  repository: BackupRepository;
  nodes: readonly PointNode[];
  mode: "checkpoint" | "point-in-time";
  pointInTime: NonNullable<Manifest["pointInTime"]>;
  startedAt: Date;
  /** The live sequencer, to check members against when the set has no sequencer (default from the config). */
  sequencer?: SequencerRpc;
  /**
   * The set, begun (BackupRepository.beginSet) before the pgBackRest backups were chosen: while it
   * is being written, `backup expire` expires none of them.
   */
  setId: string;
}

/** Begins the set a point is written as: see PointSetInput.setId. */
export function beginPointSet(repository: BackupRepository, startedAt: Date): Promise<string> {
  return repository.beginSet(startedAt);
}

/** Writes the set: a descriptor per node (its artifact), the order check, the sealed manifest. */
export async function writePointSet(input: PointSetInput): Promise<Manifest> {
  const { repository, setId } = input;
  try {
    const setDir = repository.setDir(setId);
    const nodes: NodeBackup[] = [];
    for (const node of input.nodes) {
      const { info } = node;
      const record: PgBackRestRecord = {
        name: "pgbackrest",
        stanza: node.stanza,
        label: node.backup.label,
        type: node.backup.type,
        startLsn: node.backup.lsn.start,
        stopLsn: node.backup.lsn.stop,
        database: node.database,
        target: node.target,
        ...recordEncryption(node.repo),
      };
      const { artifact, files } = await writeDescriptor(setDir, info.nodeName, {
        record,
        backup: node.backup,
        cluster: node.cluster,
      });
      const common = {
        name: info.nodeName,
        member: info.member,
        synchronizerId: info.synchronizerId,
        incarnation: info.incarnation,
        writerEpoch: info.writerEpoch,
        engine: record,
        artifact,
        files,
        bytes: "0",
        database: node.database,
        postgres: info.postgres,
        keyFingerprints: info.keyFingerprints,
        ...(info.wrapperFingerprint === null ? {} : { wrapperFingerprint: info.wrapperFingerprint }),
        startedAt: node.readAt.toISOString(),
        finishedAt: node.readAt.toISOString(),
      };
      nodes.push({ ...common, kind: info.kind, position: info.position } as NodeBackup);
    }
    const rpc = input.sequencer ?? sequencerRpc(input.config);
    const hasSequencer = nodes.some((n) => n.kind === "sequencer");
    const live = hasSequencer ? undefined : await liveSequencerStatus(rpc);
    const order = await checkOrder(nodes, setId, live && { rpc, sequencerId: live.sequencerId });
    return await repository.completeSet({
      manifestVersion: MANIFEST_VERSION,
      id: setId,
      lockstepVersion: LOCKSTEP_VERSION,
      synchronizerId: input.config.synchronizer.id,
      mode: input.mode,
      pointInTime: input.pointInTime,
      startedAt: input.startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      appHook: null,
      nodes,
      orderCheck: order.orderCheck,
      checkedAgainst: order.checkedAgainst,
      safe: order.unsafe.length === 0,
      unsafe: order.unsafe,
      bytes: "0",
    });
  } catch (error) {
    await repository.abandonSet(setId).catch(() => {});
    throw error;
  }
}
