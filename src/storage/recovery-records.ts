import type { Logger } from "../common/logging.ts";
import type { Queryable } from "./db.ts";

// The recovery_records table (created by the node-state migrations, node/node-state.ts): how a
// restored node recovers. Here, below node/, so the participant and mediator read and stamp it
// without importing the node layer that composes them.

export type RecoveryState = "recovering" | "complete";

/**
 * Where the deduplication window's anchor (sequencer time, docs/design.md §4.5) came from: the live
 * sequencer's head when `restore apply` ran, the head of the sequencer restored in the same apply,
 * or a sequencer timestamp the node observed after it started (time proof it requested).
 */
export type AnchorSource = "live-sequencer-head" | "restored-sequencer-head" | "first-observed";

/** A restore of this node's database, as `restore apply` recorded it. */
export interface RecoveryRecord {
  id: bigint;
  backupSet: string;
  restoredAt: Date;
  /** Wall clock of the host that ran the restore, in micros: informational only, decides nothing. */
  restoredAtMicros: bigint;
  forced: boolean;
  forcedChecks: string[];
  previousIncarnation: string;
  incarnation: string;
  state: RecoveryState;
  /** The first processed event at or after the anchor: the node had replayed to the anchor's head. */
  firstSequencerTime: bigint | null;
  /** anchor + ledgerTimeRecordTimeTolerance at the anchor; the window closes after it. */
  expectedEnd: bigint | null;
  anchor: bigint | null;
  anchorSource: AnchorSource | null;
  /** The database this restore replaced, kept under this name (restore-target.ts). */
  replacedDatabase: string | null;
  /** When the restored node first passed its resubscription check against the sequencer. */
  resubscribedAt: Date | null;
  /** The writer epoch was stamped without the sequencer's record (it did not answer). */
  epochUnverified: boolean;
}

interface RecoveryRow {
  id: bigint;
  backup_set: string;
  restored_at: Date;
  restored_at_micros: bigint;
  forced: boolean;
  forced_checks: string[];
  previous_incarnation: string;
  incarnation: string;
  state: RecoveryState;
  first_sequencer_time: bigint | null;
  expected_end: bigint | null;
  anchor: bigint | null;
  anchor_source: AnchorSource | null;
  replaced_database: string | null;
  resubscribed_at: Date | null;
  epoch_unverified: boolean;
}

function toRecord(row: RecoveryRow): RecoveryRecord {
  return {
    id: row.id,
    backupSet: row.backup_set,
    restoredAt: row.restored_at,
    restoredAtMicros: row.restored_at_micros,
    forced: row.forced,
    forcedChecks: row.forced_checks,
    previousIncarnation: row.previous_incarnation,
    incarnation: row.incarnation,
    state: row.state,
    firstSequencerTime: row.first_sequencer_time,
    expectedEnd: row.expected_end,
    anchor: row.anchor,
    anchorSource: row.anchor_source,
    replacedDatabase: row.replaced_database,
    resubscribedAt: row.resubscribed_at,
    epochUnverified: row.epoch_unverified,
  };
}

/** The newest recovery record, if the node was ever restored. */
export async function latestRecoveryRecord(db: Queryable): Promise<RecoveryRecord | undefined> {
  const row = await db.maybeOne<RecoveryRow>("SELECT * FROM recovery_records ORDER BY id DESC LIMIT 1");
  return row && toRecord(row);
}

/** Fixes the anchor the restore could not take (the sequencer did not answer): 'first-observed'. */
export async function recordRecoveryAnchor(tx: Queryable, id: bigint, anchor: bigint): Promise<void> {
  await tx.execute(
    `UPDATE recovery_records SET anchor = $2, anchor_source = 'first-observed'
     WHERE id = $1 AND anchor IS NULL`,
    [id, anchor],
  );
}

/**
 * Records the first processed event at or after the anchor (the node has replayed to the head the
 * anchor stands for) and the end of the deduplication window.
 */
export async function recordRecoveryWindow(
  tx: Queryable,
  id: bigint,
  firstSequencerTime: bigint,
  expectedEnd: bigint,
): Promise<void> {
  await tx.execute(
    `UPDATE recovery_records SET first_sequencer_time = $2, expected_end = COALESCE(expected_end, $3)
     WHERE id = $1 AND first_sequencer_time IS NULL`,
    [id, firstSequencerTime, expectedEnd],
  );
}

export async function completeRecovery(tx: Queryable, id: bigint): Promise<void> {
  await tx.execute(
    "UPDATE recovery_records SET state = 'complete', completed_at = now() WHERE id = $1 AND state = 'recovering'",
    [id],
  );
}

/**
 * The restored node passed its first resubscription check (its last stored event came back from
 * the sequencer): stamps the newest recovery record once. `restore drop-kept` keeps the replaced
 * database until then (docs/design.md §4.6). Idempotent; true when this call stamped it.
 */
export async function markResubscribed(db: Queryable): Promise<boolean> {
  const stamped = await db.execute(
    `UPDATE recovery_records SET resubscribed_at = now()
     WHERE id = (SELECT max(id) FROM recovery_records) AND resubscribed_at IS NULL`,
  );
  return stamped > 0;
}

/**
 * For a member's onSubscriptionCheckPassed: markResubscribed, logged; a failure is only logged
 * (the next check passing tries again).
 */
export async function recordResubscribed(db: Queryable, log: Logger): Promise<void> {
  try {
    if (await markResubscribed(db))
      log.info("restored node passed its first resubscription check; recovery record stamped");
  } catch (error) {
    log.warn({ err: error }, "could not stamp the recovery record; retried at the next check");
  }
}
