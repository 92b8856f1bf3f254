import { randomBytes } from "node:crypto";
import { newId } from "../common/ids.ts";
import type { Migration, NodeIdentity } from "../common/node-kind.ts";
import type { Db, Queryable } from "../storage/db.ts";
import type { AnchorSource } from "../storage/recovery-records.ts";

// The recovery records live in storage/recovery-records.ts (the participant and mediator use them);
// re-exported for the node layer's callers.
export type { AnchorSource, RecoveryRecord, RecoveryState } from "../storage/recovery-records.ts";
export { latestRecoveryRecord } from "../storage/recovery-records.ts";

/** Tables every node kind has: its identity, incarnation and writer epoch (docs/design.md §3, §4.4). */
export const nodeStateMigrations: readonly Migration[] = [
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
  {
    version: 2,
    name: "recovery_records",
    // One row per restore (docs/design.md §4.4–4.5). `state`: complete for nodes without a recovery phase;
    // a restored participant keeps `recovering` until its deduplication window closed.
    sql: `
      CREATE TABLE recovery_records (
        id bigserial PRIMARY KEY,
        backup_set text NOT NULL,
        restored_at timestamptz NOT NULL DEFAULT now(),
        restored_at_micros bigint NOT NULL,
        forced boolean NOT NULL DEFAULT false,
        forced_checks text[] NOT NULL DEFAULT '{}',
        previous_incarnation text NOT NULL,
        incarnation text NOT NULL,
        state text NOT NULL CHECK (state IN ('recovering', 'complete')),
        first_sequencer_time bigint,
        expected_end bigint,
        completed_at timestamptz
      );`,
  },
  {
    version: 3,
    name: "backups_taken",
    // Completed backup sets that hold this node's database (written by `backup create` after the
    // manifest): key rotation revokes an old key only once a backup holding the new one exists (docs/design.md §4.5).
    sql: `
      CREATE TABLE backups_taken (
        set_id text PRIMARY KEY,
        repository text NOT NULL,
        taken_at timestamptz NOT NULL,
        completed_at timestamptz NOT NULL DEFAULT now(),
        key_fingerprints text[] NOT NULL,
        position jsonb NOT NULL,
        safe boolean NOT NULL
      );`,
  },
  {
    version: 4,
    name: "activations_and_recovery_anchor",
    // writer_activation: random per activation, sent beside the writer epoch (an equal epoch from
    // another activation is refused). Recovery records gain: the deduplication window's anchor in
    // sequencer time and where it came from; the replaced database kept until the restored node
    // passed its first resubscription check; whether the writer epoch still has to be raised above
    // the sequencer's record (the sequencer was unreachable during the restore).
    sql: `
      ALTER TABLE node_state ADD COLUMN writer_activation text NOT NULL DEFAULT '';
      ALTER TABLE recovery_records
        ADD COLUMN anchor bigint,
        ADD COLUMN anchor_source text,
        ADD COLUMN replaced_database text,
        ADD COLUMN resubscribed_at timestamptz,
        ADD COLUMN epoch_unverified boolean NOT NULL DEFAULT false;`,
  },
  {
    version: 5,
    name: "backups_taken_wrapper_key",
    // The wrapper key the set's copy of the private keys is encrypted under (NULL: plain): the old
    // wrapper key retires only once a backup holds the store under the new one (docs/keys.md).
    sql: "ALTER TABLE backups_taken ADD COLUMN wrapper_fingerprint text;",
  },
  {
    version: 6,
    name: "writer_fencing",
    // Where each activation runs, so that the next one (e.g. at the other site after a fail-over) can
    // fence it, and the secret that authenticates that notice: only copies of this database hold it
    // (writer-fencing.ts, docs/operations.md "What the fencing guarantees").
    sql: `
      ALTER TABLE node_state
        ADD COLUMN writer_endpoint text NOT NULL DEFAULT '',
        ADD COLUMN fence_secret bytea;`,
  },
];

/** What `restore apply` stamps into a restored database (stampRestoredDatabase). */
export interface RestoreStamp {
  backupSet: string;
  forcedChecks: string[];
  /** The sequencer's record of the member's writer epoch, or the backup's own when unknown. */
  minWriterEpoch: bigint;
  /** True when the sequencer did not answer: the node raises its epoch above its record on start. */
  epochUnverified: boolean;
  /** Participants recover their deduplication state after a restore; other kinds do not. */
  recovering: boolean;
  /** Informational wall clock of the restoring host (decides nothing). */
  restoredAtMicros: bigint;
  /** Sequencer time; null: the node fixes it after it starts ('first-observed'). */
  anchor: bigint | null;
  anchorSource: AnchorSource | null;
  /** anchor + tolerance when known at restore time; else the node computes it. */
  expectedEnd: bigint | null;
  /** The kept name of the database this restore replaces, if one exists. */
  replacedDatabase: string | null;
}

/**
 * Stamps a restored database (restore apply, before the node may start on it): a new incarnation,
 * a writer epoch at least the sequencer's record (so the restored node is not refused as stale),
 * and the recovery record. One transaction: a database either is stamped or not.
 */
export async function stampRestoredDatabase(
  db: Db,
  stamp: RestoreStamp,
): Promise<{ incarnation: string; previousIncarnation: string; writerEpoch: bigint }> {
  return db.transaction(
    async (tx) => {
      const previous = await tx.one<{ incarnation: string }>("SELECT incarnation FROM node_state");
      const incarnation = newId();
      const updated = await tx.one<{ writer_epoch: bigint }>(
        `UPDATE node_state SET incarnation = $1, writer_epoch = GREATEST(writer_epoch, $2), activated_at = NULL
         RETURNING writer_epoch`,
        [incarnation, stamp.minWriterEpoch],
      );
      await tx.execute(
        `INSERT INTO recovery_records
           (backup_set, restored_at_micros, forced, forced_checks, previous_incarnation, incarnation, state,
            completed_at, anchor, anchor_source, expected_end, replaced_database, epoch_unverified)
         VALUES ($1, $2, $3, $4, $5, $6, $7::text, CASE WHEN $7::text = 'complete' THEN now() END,
                 $8, $9, $10, $11, $12)`,
        [
          stamp.backupSet,
          stamp.restoredAtMicros,
          stamp.forcedChecks.length > 0,
          stamp.forcedChecks,
          previous.incarnation,
          incarnation,
          stamp.recovering ? "recovering" : "complete",
          stamp.anchor,
          stamp.anchor === null ? null : stamp.anchorSource,
          stamp.anchor === null ? null : stamp.expectedEnd,
          stamp.replacedDatabase,
          stamp.epochUnverified,
        ],
      );
      return { incarnation, previousIncarnation: previous.incarnation, writerEpoch: updated.writer_epoch };
    },
    { synchronousCommit: true },
  );
}

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
  const row = await db.one<IdentityRow & { node_name: string; kind: string }>(
    "SELECT node_name, kind, incarnation, writer_epoch, writer_activation FROM node_state",
  );
  if (row.node_name !== name || row.kind !== kind) {
    throw new NodeDatabaseMismatchError({ name, kind }, { name: row.node_name, kind: row.kind });
  }
  // Once per database (a no-op after: it writes nothing, so it never waits for a standby).
  await db.execute("UPDATE node_state SET fence_secret = $1 WHERE fence_secret IS NULL", [randomBytes(32)]);
  return toIdentity(row);
}

/** The secret that authenticates writer-fencing notices between copies of this database. */
export async function fenceSecret(db: Queryable): Promise<Buffer> {
  const row = await db.one<{ fence_secret: Buffer | null }>("SELECT fence_secret FROM node_state");
  if (!row.fence_secret) throw new Error("node_state.fence_secret is not set (ensureNodeState runs first)");
  return row.fence_secret;
}

/** The writer epoch the database carries now (a copy at another site may be ahead of this process). */
export async function databaseWriterEpoch(db: Queryable): Promise<bigint> {
  return (await db.one<{ writer_epoch: bigint }>("SELECT writer_epoch FROM node_state")).writer_epoch;
}

/** The activation a new one replaced: its id and where its process ran ('' when unknown). */
export interface PreviousActivation {
  activation: string;
  endpoint: string;
}

interface IdentityRow {
  incarnation: string;
  writer_epoch: bigint;
  writer_activation: string;
}

function toIdentity(row: IdentityRow): NodeIdentity {
  return {
    incarnation: row.incarnation,
    writerEpoch: row.writer_epoch,
    writerActivation: row.writer_activation,
  };
}

/**
 * Every activation bumps the writer epoch, durably, before the node acts: the sequencer refuses
 * a lower epoch, so a forgotten writer at an old site cannot act after fail-over (docs/design.md §3).
 */
export async function bumpWriterEpoch(
  db: Db,
  endpoint = "",
): Promise<NodeIdentity & { previous: PreviousActivation }> {
  return db.transaction(
    async (tx) => {
      // A fresh activation id too: two copies of one database (restored twice from the same set)
      // reach the same epoch, and the sequencer tells them apart by it. The CTE reads the row as it
      // was: the activation this one replaces, which writer fencing notifies.
      const row = await tx.one<IdentityRow & { previous_activation: string; previous_endpoint: string }>(
        `WITH previous AS (SELECT writer_activation, writer_endpoint FROM node_state FOR UPDATE)
         UPDATE node_state SET writer_epoch = writer_epoch + 1, writer_activation = $1,
           writer_endpoint = $2, activated_at = now()
         FROM previous
         RETURNING incarnation, writer_epoch, node_state.writer_activation,
           previous.writer_activation AS previous_activation, previous.writer_endpoint AS previous_endpoint`,
        [newId(), endpoint],
      );
      return {
        ...toIdentity(row),
        previous: { activation: row.previous_activation, endpoint: row.previous_endpoint },
      };
    },
    { synchronousCommit: true },
  );
}

/**
 * The newest recovery record, when it says the writer epoch was not checked against the
 * sequencer's record (the sequencer was unreachable during the restore): its id, else undefined.
 */
export async function unverifiedWriterEpoch(db: Queryable): Promise<bigint | undefined> {
  const row = await db.maybeOne<{ id: bigint; epoch_unverified: boolean }>(
    "SELECT id, epoch_unverified FROM recovery_records ORDER BY id DESC LIMIT 1",
  );
  return row?.epoch_unverified ? row.id : undefined;
}

/**
 * Raises the writer epoch to `sequencerRecord + 1` unless it is already above (with a new
 * activation id), and clears the recovery record's epoch_unverified, in one durable transaction:
 * a crash in between leaves the flag set and the next activation asks again.
 */
export async function raiseWriterEpochAbove(
  db: Db,
  recoveryId: bigint,
  sequencerRecord: bigint,
): Promise<NodeIdentity> {
  return db.transaction(
    async (tx) => {
      const row = await tx.one<IdentityRow>(
        `UPDATE node_state SET
           writer_activation = CASE WHEN writer_epoch > $1 THEN writer_activation ELSE $2 END,
           writer_epoch = GREATEST(writer_epoch, $1 + 1)
         RETURNING incarnation, writer_epoch, writer_activation`,
        [sequencerRecord, newId()],
      );
      await tx.execute("UPDATE recovery_records SET epoch_unverified = false WHERE id = $1", [recoveryId]);
      return toIdentity(row);
    },
    { synchronousCommit: true },
  );
}
