import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { LockstepConfig, NodeEntry, NodeKind } from "../common/config-schema.ts";
import { configNodes } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { NAME_PATTERN } from "../common/ids.ts";
import type { Logger } from "../common/logging.ts";
import type { Db, DbSession } from "../storage/db.ts";
import { createStorageDb } from "../storage/storage-db.ts";
import { holdSet, sequencerRpc } from "./backup-holds.ts";
import { BackupRepository, writeFileAtomic } from "./backup-repository.ts";
import type { MediatorPosition, ParticipantPosition, SequencerPosition } from "./manifest.ts";
import { type NodeSnapshotInfo, readNodeSnapshotInfo } from "./node-position.ts";
import { configuredRepo, type NodeCluster, nodeCluster, requireSetUp } from "./pgbackrest/node-cluster.ts";
import type { PgBackRestBackup } from "./pgbackrest/pgbackrest-info.ts";
import { createRestorePoint, lockWriter } from "./pgbackrest/restore-point.ts";
import { waitWalArchived } from "./pgbackrest/wal-archived.ts";
import { beginPointSet, lookupsOf, type PointNode, writePointSet } from "./point-in-time-set.ts";

// Network-wide checkpoints (issue 14, docs/restore.md "Point-in-time recovery"): a named restore
// point in every node's PostgreSQL cluster, with each node's identity and position as of that exact
// WAL point (read under its writer lock: pgbackrest/restore-point.ts), so that a recovery to the
// name yields what the record says. Nodes that share a cluster are locked together and get ONE
// restore point (recovery stops at the first record of a name); clusters go in the safe order of
// backups: participants' and mediators' first, the sequencer's last, so the sequencer is never
// behind a member (docs/design.md §4.3). The checkpoint is also written as a backup set (mode
// `checkpoint`) naming, per node, the pgBackRest backup to replay from: `restore plan|apply
// --checkpoint NAME` restores that set, with every check and recovery rule of any set.

export interface CheckpointNode {
  name: string;
  kind: NodeKind;
  /** The node's cluster: its pgBackRest stanza. */
  cluster: string;
  database: string;
  position: ParticipantPosition | MediatorPosition | SequencerPosition;
}

export interface CheckpointCluster {
  cluster: string;
  /** The restore point's name, LSN and the server's time when it was written. */
  restorePoint: string;
  lsn: string;
  serverTime: string;
  /** The pgBackRest backup a recovery to it replays from. */
  baseBackup: string;
  nodes: string[];
}

export interface CheckpointRecord {
  version: 2;
  name: string;
  createdAt: string;
  /** The backup set that restores it. */
  set: string;
  clusters: CheckpointCluster[];
  nodes: CheckpointNode[];
}

export function checkpointDir(repository: string): string {
  return join(repository, "checkpoints");
}

export async function listCheckpoints(repository: string): Promise<CheckpointRecord[]> {
  const dir = checkpointDir(repository);
  const names = await readdir(dir).catch(() => [] as string[]);
  const records = await Promise.all(
    names
      .filter((n) => n.endsWith(".json"))
      .map(async (n) => JSON.parse(await readFile(join(dir, n), "utf8")) as CheckpointRecord),
  );
  return records.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** The checkpoint's record; CHECKPOINT_UNKNOWN when there is none of that name. */
export async function findCheckpoint(repository: string, name: string): Promise<CheckpointRecord> {
  const found = (await listCheckpoints(repository)).find((c) => c.name === name);
  if (!found) throw new LockstepError("CHECKPOINT_UNKNOWN", { name, repository });
  if (!found.set) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `checkpoint ${name} was recorded by an older build, without a backup set: it cannot be restored (create a new checkpoint)`,
    });
  }
  return found;
}

/**
 * `lockstep checkpoint delete NAME`: the record and its set go (their retention holds are released
 * by the next `backup expire`, which also expires the pgBackRest backups nothing needs any more).
 */
export async function deleteCheckpoint(
  repositoryDir: string,
  name: string,
  logger: Logger,
): Promise<CheckpointRecord> {
  const found = (await listCheckpoints(repositoryDir)).find((c) => c.name === name);
  if (!found) throw new LockstepError("CHECKPOINT_UNKNOWN", { name, repository: repositoryDir });
  if (found.set) await new BackupRepository(repositoryDir, logger).deleteSet(found.set);
  await rm(join(checkpointDir(repositoryDir), `${name}.json`), { force: true });
  return found;
}

/** The restore point a checkpoint writes: prefixed so that it never takes a backup set's name. */
export function checkpointRestorePoint(name: string): string {
  return `checkpoint-${name}`;
}

interface OpenNode {
  entry: NodeEntry;
  cluster: NodeCluster;
  db: Db;
  /** One connection, so that the transaction, its locks and the restore point share it. */
  session: DbSession;
}

/** Creates checkpoint `name` on every node of the config (or `nodes`); see the file comment. */
export async function createCheckpoint(options: {
  config: LockstepConfig;
  name: string;
  nodes?: readonly NodeEntry[];
  logger: Logger;
  progress?: (line: string) => void;
}): Promise<CheckpointRecord> {
  const { config, name, logger } = options;
  if (!NAME_PATTERN.test(name)) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `checkpoint name "${name}" must match ${NAME_PATTERN.source} (it names a restore point)`,
    });
  }
  // With backup.encryption, the base backups and WAL are in the key's encrypted repository
  // (pgbackrest/pgbackrest-repo.ts) and the set's records name its fingerprint. A key file that
  // cannot be used is refused here, before anything is written (BACKUP_KEY_FILE_INVALID).
  configuredRepo(config);
  const repositoryDir = config.backup.repository;
  if ((await listCheckpoints(repositoryDir)).some((c) => c.name === name)) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `checkpoint ${name} exists already: use a new name`,
    });
  }
  const entries = options.nodes ?? configNodes(config);
  const startedAt = new Date();
  const restorePoint = checkpointRestorePoint(name);
  const repository = new BackupRepository(repositoryDir, logger);
  // Begun first: while it is being written, `backup expire` leaves the base backups alone.
  const setId = await beginPointSet(repository, startedAt);
  try {
    return await checkpointInto(options, setId, repository, entries, startedAt, restorePoint);
  } catch (error) {
    await repository.abandonSet(setId).catch(() => {});
    throw error;
  }
}

async function checkpointInto(
  options: { config: LockstepConfig; name: string; logger: Logger; progress?: (line: string) => void },
  setId: string,
  repository: BackupRepository,
  entries: readonly NodeEntry[],
  startedAt: Date,
  restorePoint: string,
): Promise<CheckpointRecord> {
  const { config, name, logger } = options;
  const repositoryDir = config.backup.repository;
  const progress = options.progress ?? (() => {});
  // Every cluster archives and has a backup to replay from, before anything is locked.
  const clusters = new Map<string, NodeCluster>();
  const bases = new Map<string, PgBackRestBackup>();
  for (const entry of entries) {
    const cluster = await nodeCluster(config, entry, logger);
    clusters.set(entry.name, cluster);
    const stanza = cluster.pgbackrest.stanza;
    if (bases.has(stanza)) continue;
    await requireSetUp(cluster);
    const base = (await cluster.pgbackrest.info()).backups.at(-1);
    if (!base) {
      throw new LockstepError("PITR_NO_BASE_BACKUP", {
        node: entry.name,
        stanza,
        target: `checkpoint ${name}`,
      });
    }
    bases.set(stanza, base);
  }
  const stanzaOf = (e: NodeEntry) => (clusters.get(e.name) as NodeCluster).pgbackrest.stanza;
  // The safe order: clusters without the sequencer first, the sequencer's last.
  const stanzas = [...bases.keys()].sort((a, b) => {
    const hasSequencer = (s: string) => entries.some((e) => stanzaOf(e) === s && e.kind === "sequencer");
    return Number(hasSequencer(a)) - Number(hasSequencer(b));
  });
  const read: PointNode[] = [];
  const points: CheckpointCluster[] = [];
  for (const stanza of stanzas) {
    // Members before the sequencer within a cluster too: its side of the order check looks their events up.
    const members = entries
      .filter((e) => stanzaOf(e) === stanza)
      .sort((a, b) => Number(a.kind === "sequencer") - Number(b.kind === "sequencer"));
    progress(`${members.map((m) => m.name).join(", ")}: locking writers, reading positions`);
    const opened: OpenNode[] = [];
    try {
      for (const entry of members) {
        const cluster = clusters.get(entry.name) as NodeCluster;
        const db = createStorageDb({
          connectionString: cluster.url,
          applicationName: "lockstep-checkpoint",
          max: 1,
        });
        opened.push({ entry, cluster, db, session: await db.session() });
      }
      const infos: { node: OpenNode; info: NodeSnapshotInfo }[] = [];
      for (const node of opened) {
        await lockWriter(node.session, node.entry.kind);
        const lookups =
          node.entry.kind === "sequencer"
            ? lookupsOf(read.map((r) => r.info).concat(infos.map((i) => i.info)))
            : [];
        const info = await readNodeSnapshotInfo(
          node.session,
          node.entry.kind,
          config.synchronizer.id,
          lookups,
        );
        infos.push({ node, info });
      }
      const first = opened[0] as OpenNode;
      const point = await createRestorePoint(first.session, restorePoint);
      for (const node of opened) await node.session.execute("COMMIT");
      const readAt = new Date();
      for (const { node, info } of infos) {
        read.push({
          info,
          database: node.cluster.database,
          stanza,
          repo: node.cluster.repo,
          backup: bases.get(stanza) as PgBackRestBackup,
          target: { type: "name", name: restorePoint, lsn: point.lsn, timeline: point.timeline },
          cluster: { description: node.cluster.description, systemIdentifier: node.cluster.systemIdentifier },
          readAt,
        });
      }
      points.push({
        cluster: stanza,
        restorePoint,
        lsn: point.lsn,
        serverTime: point.serverTime,
        baseBackup: (bases.get(stanza) as PgBackRestBackup).label,
        nodes: members.map((m) => m.name),
      });
      progress(`${stanza}: restore point ${restorePoint} at ${point.lsn}`);
    } finally {
      for (const node of opened) {
        await node.session.execute("ROLLBACK").catch(() => {});
        node.session.release(true);
        await node.db.close().catch(() => {});
      }
    }
  }
  // A restore point is a target only once its WAL is in the repository.
  for (const point of points) {
    const entry = entries.find((e) => stanzaOf(e) === point.cluster) as NodeEntry;
    progress(`${point.cluster}: archiving the WAL up to the restore point`);
    await waitWalArchived(clusters.get(entry.name) as NodeCluster, point.lsn);
  }
  const manifest = await writePointSet({
    config,
    repository,
    setId,
    nodes: read,
    mode: "checkpoint",
    pointInTime: { checkpoint: name },
    startedAt,
  });
  progress(`checkpoint ${name}: backup set ${manifest.id} restores it`);
  await holdSet(sequencerRpc(config), manifest).catch((error: Error) =>
    progress(
      `WARNING: no retention hold for checkpoint ${name} (${error.message}); \`lockstep backup expire\` sets missing holds`,
    ),
  );
  const record: CheckpointRecord = {
    version: 2,
    name,
    createdAt: startedAt.toISOString(),
    set: manifest.id,
    clusters: points,
    nodes: read.map((r) => ({
      name: r.info.nodeName,
      kind: r.info.kind,
      cluster: r.stanza,
      database: r.database,
      position: r.info.position,
    })),
  };
  await mkdir(checkpointDir(repositoryDir), { recursive: true });
  await writeFileAtomic(
    join(checkpointDir(repositoryDir), `${name}.json`),
    `${JSON.stringify(record, null, 2)}\n`,
  );
  return record;
}
