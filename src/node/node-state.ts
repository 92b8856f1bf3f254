import { newId } from "../common/ids.ts";
import type { MigrationDefinition, NodeIdentity } from "../common/node-kind.ts";
import type { Db } from "../storage/db.ts";

/** Tables every node kind has: its identity, incarnation and writer epoch (DESIGN.md §3, §4.4). */
export const nodeStateMigrations: readonly MigrationDefinition[] = [
  {
    version: 1,
    name: "node_state",
    sql: `
      CREATE TABLE node_state (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        node_name text NOT NULL,
        kind text NOT NULL,
        incarnation text NOT NULL,
        writer_epoch bigint NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        activated_at timestamptz
      );`,
  },
];

/** Mismatch between the database and the node that opens it: a wrong storage.url, most likely. */
export class NodeDatabaseMismatchError extends Error {
  override readonly name = "NodeDatabaseMismatchError";
  constructor(
    readonly expected: { name: string; kind: string },
    readonly found: { name: string; kind: string },
  ) {
    super(
      `database belongs to ${found.kind} ${found.name}, not ${expected.kind} ${expected.name}; check the node's storage.url`,
    );
  }
}

/** Creates the node_state row on first start; checks the database belongs to this node after. */
export async function ensureNodeState(db: Db, name: string, kind: string): Promise<NodeIdentity> {
  await db.execute(
    `INSERT INTO node_state (node_name, kind, incarnation) VALUES ($1, $2, $3) ON CONFLICT (singleton) DO NOTHING`,
    [name, kind, newId()],
  );
  const row = await db.one<{ node_name: string; kind: string; incarnation: string; writer_epoch: bigint }>(
    "SELECT node_name, kind, incarnation, writer_epoch FROM node_state",
  );
  if (row.node_name !== name || row.kind !== kind) {
    throw new NodeDatabaseMismatchError({ name, kind }, { name: row.node_name, kind: row.kind });
  }
  return { incarnation: row.incarnation, writerEpoch: row.writer_epoch };
}

/**
 * Every activation bumps the writer epoch, durably, before the node acts: the sequencer refuses
 * a lower epoch, so a forgotten writer at an old site cannot act after fail-over (DESIGN.md §3).
 */
export async function bumpWriterEpoch(db: Db): Promise<NodeIdentity> {
  return db.transaction(
    async (tx) => {
      const row = await tx.one<{ incarnation: string; writer_epoch: bigint }>(
        "UPDATE node_state SET writer_epoch = writer_epoch + 1, activated_at = now() RETURNING incarnation, writer_epoch",
      );
      return { incarnation: row.incarnation, writerEpoch: row.writer_epoch };
    },
    { synchronousCommit: true },
  );
}
