import { mkdir, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { LockstepConfig, NodeEntry, NodeKind } from "../common/config-schema.ts";
import { configNodes } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { NAME_PATTERN } from "../common/ids.ts";
import type { Logger } from "../common/logging.ts";
import { nowMicros } from "../common/time.ts";
import { nodeConnection } from "../node/node-database.ts";
import type { Db, DbSession, Queryable } from "../storage/db.ts";
import { createStorageDb } from "../storage/storage-db.ts";
import { writeFileAtomic } from "./backup-repository.ts";
import type { MediatorPosition, ParticipantPosition, SequencerPosition } from "./manifest.ts";
import { mediatorPosition, participantPosition, sequencerPosition } from "./node-position.ts";

// Network-wide checkpoints (issue 14, docs/restore.md "Point-in-time recovery"): a named restore
// point (pg_create_restore_point) in every node's PostgreSQL cluster, with each node's position as
// of that exact WAL point, so that a point-in-time recovery to the name yields what the record says.
//
// Closing the gap between "position read" and "restore point written": in each node's database the
// checkpoint takes, in one transaction, a SHARE lock on the table every state-changing commit of
// that node writes (a member's clean timestamp, the sequencer's events and member heads). Commits
// that got there first finish before the lock is granted (their WAL precedes the restore point);
// later ones wait until the checkpoint committed (their WAL follows it). The position is read under
// the lock, then the restore point is written, then the locks go. Nodes that share a cluster are
// locked together and get ONE restore point (recovery stops at the first record of a name); clusters
// go in the safe order of backups: participants' and mediators' first, the sequencer's last, so the
// sequencer is never behind a member (docs/design.md §4.3).

/** The tables a node's writer commits to with every change of its position. */
const WRITER_TABLES: Record<NodeKind, readonly string[]> = {
  participant: ["sequencer_client_clean"],
  mediator: ["sequencer_client_clean"],
  sequencer: ["sequencer_events", "sequencer_member_heads"],
};

export interface CheckpointNode {
  name: string;
  kind: NodeKind;
  /** `system_identifier@host:port` of the node's cluster. */
  cluster: string;
  database: string;
  position: ParticipantPosition | MediatorPosition | SequencerPosition;
}

export interface CheckpointCluster {
  cluster: string;
  /** The restore point's LSN (pg_create_restore_point) and the server's time when it was written. */
  lsn: string;
  serverTime: string;
  nodes: string[];
}

export interface CheckpointRecord {
  version: 1;
  name: string;
  createdAt: string;
  createdAtMicros: string;
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

interface OpenNode {
  entry: NodeEntry;
  db: Db;
  /** One connection, so that the transaction, its locks and the restore point share it. */
  client: DbSession;
  database: string;
  cluster: string;
}

async function readPosition(q: Queryable, kind: NodeKind) {
  if (kind === "participant") return participantPosition(q);
  if (kind === "mediator") return mediatorPosition(q);
  return sequencerPosition(q);
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
  const repository = config.backup.repository;
  const path = join(checkpointDir(repository), `${name}.json`);
  if ((await listCheckpoints(repository)).some((c) => c.name === name)) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `checkpoint ${name} exists already: use a new name`,
    });
  }
  const entries = options.nodes ?? configNodes(config);
  const opened: OpenNode[] = [];
  try {
    for (const entry of entries) {
      const connection = await nodeConnection(entry, config["data-dir"], logger);
      const db = createStorageDb({
        connectionString: connection.url,
        applicationName: "lockstep-checkpoint",
      });
      const client = await db.session();
      opened.push({ entry, db, client, database: connection.database, cluster: "" });
      const row = await client.maybeOne<{ id: string; host: string | null; port: number | null }>(
        "SELECT system_identifier::text AS id, inet_server_addr()::text AS host, inet_server_port() AS port FROM pg_control_system()",
      );
      Object.assign(opened.at(-1) as OpenNode, {
        cluster: `${row?.id}@${row?.host ?? "local"}:${row?.port ?? ""}`,
      });
    }
    // The safe order: clusters without the sequencer first, the sequencer's last.
    const clusters = [...new Set(opened.map((o) => o.cluster))].sort((a, b) => {
      const hasSequencer = (c: string) => opened.some((o) => o.cluster === c && o.entry.kind === "sequencer");
      return Number(hasSequencer(a)) - Number(hasSequencer(b));
    });
    const nodes: CheckpointNode[] = [];
    const points: CheckpointCluster[] = [];
    for (const cluster of clusters) {
      const members = opened.filter((o) => o.cluster === cluster);
      options.progress?.(
        `${members.map((m) => m.entry.name).join(", ")}: locking writers, reading positions`,
      );
      try {
        for (const node of members) {
          await node.client.execute("BEGIN");
          await node.client.execute("SET LOCAL lock_timeout = '10s'");
          for (const table of WRITER_TABLES[node.entry.kind]) {
            await node.client.execute(`LOCK TABLE ${table} IN SHARE MODE`);
          }
          nodes.push({
            name: node.entry.name,
            kind: node.entry.kind,
            cluster,
            database: node.database,
            position: await readPosition(node.client, node.entry.kind),
          });
        }
        const first = members[0] as OpenNode;
        const point = await first.client.one<{ lsn: string; at: string }>(
          "SELECT pg_create_restore_point($1)::text AS lsn, now()::text AS at",
          [name],
        );
        points.push({
          cluster,
          lsn: point.lsn,
          serverTime: point.at,
          nodes: members.map((m) => m.entry.name),
        });
        options.progress?.(`${cluster}: restore point ${name} at ${point.lsn}`);
      } finally {
        for (const node of members) await node.client.execute("COMMIT").catch(() => {});
      }
    }
    const record: CheckpointRecord = {
      version: 1,
      name,
      createdAt: new Date().toISOString(),
      createdAtMicros: nowMicros().toString(),
      clusters: points,
      nodes,
    };
    await mkdir(checkpointDir(repository), { recursive: true });
    await writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`);
    return record;
  } finally {
    for (const node of opened) {
      node.client.release(true);
      await node.db.close().catch(() => {});
    }
  }
}
