import { LockstepError } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";
import type { Db, Queryable } from "../storage/db.ts";

/**
 * Retention holds (docs/design.md §2, §4.6): one per member position of a retained backup set. The
 * sequencer never prunes past the oldest, so every retained participant and mediator backup stays
 * restorable against the live sequencer. `backup create` sets them, `backup expire` releases
 * them; a forced prune releases the ones in its way and records their sets as stranded.
 */
export interface RetentionHold {
  readonly setId: string;
  readonly member: string;
  /** Events of the member from this timestamp on are kept. */
  readonly timestamp: Micros;
  /** Wall-clock micros when it was set (informational only: nothing decides on it). */
  readonly createdAt: Micros;
}

export interface StrandedSet {
  readonly setId: string;
  readonly prunedBefore: Micros;
  readonly strandedAt: Micros;
}

interface HoldRow {
  set_id: string;
  member: string;
  timestamp: bigint;
  created_at: bigint;
}

const toHold = (r: HoldRow): RetentionHold => ({
  setId: r.set_id,
  member: r.member,
  timestamp: r.timestamp,
  createdAt: r.created_at,
});

/** Every hold, oldest position first. */
export async function readHolds(q: Queryable): Promise<RetentionHold[]> {
  const rows = await q.query<HoldRow>(
    "SELECT set_id, member, timestamp, created_at FROM sequencer_retention_holds ORDER BY timestamp, set_id, member",
  );
  return rows.map(toHold);
}

export async function readStranded(q: Queryable): Promise<StrandedSet[]> {
  const rows = await q.query<{ set_id: string; pruned_before: bigint; stranded_at: bigint }>(
    "SELECT set_id, pruned_before, stranded_at FROM sequencer_stranded_sets ORDER BY stranded_at, set_id",
  );
  return rows.map((r) => ({ setId: r.set_id, prunedBefore: r.pruned_before, strandedAt: r.stranded_at }));
}

/**
 * Replaces the holds of one set. Under the state row's lock, as prune takes it, so a hold and a
 * prune never interleave: a hold below the pruning lower bound is refused (those events are gone;
 * the set is already stranded), and a prune after it sees it.
 */
export async function replaceHolds(
  db: Db,
  setId: string,
  holds: readonly { member: string; timestamp: Micros }[],
  now: Micros,
): Promise<void> {
  await db.transaction(
    async (tx) => {
      const state = await tx.one<{ pruning_lower_bound: bigint | null }>(
        "SELECT pruning_lower_bound FROM sequencer_state FOR UPDATE",
      );
      const bound = state.pruning_lower_bound;
      const lost = holds.find((h) => bound !== null && h.timestamp < bound);
      if (lost) {
        throw new LockstepError("EVENTS_UNAVAILABLE_FOR_TIMESTAMP", {
          timestamp: lost.timestamp,
          member: lost.member,
          reason: `the sequencer pruned below ${bound}; backup set ${setId} cannot be held`,
        });
      }
      await tx.execute("DELETE FROM sequencer_retention_holds WHERE set_id = $1", [setId]);
      await tx.execute(
        `INSERT INTO sequencer_retention_holds (set_id, member, timestamp, created_at)
         SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bigint[])`,
        [setId, holds.map((h) => h.member), holds.map((h) => h.timestamp), holds.map(() => now)],
      );
    },
    { synchronousCommit: true },
  );
}

/** Releases every hold of the sets; returns how many were removed. */
export async function releaseHolds(db: Db, setIds: readonly string[]): Promise<number> {
  return db.transaction((tx) =>
    tx.execute("DELETE FROM sequencer_retention_holds WHERE set_id = ANY($1)", [[...setIds]]),
  );
}

/** In a forced prune's transaction: releases the sets' holds and records them as stranded. */
export async function strandSets(
  tx: Queryable,
  setIds: readonly string[],
  prunedBefore: Micros,
  now: Micros,
): Promise<StrandedSet[]> {
  if (setIds.length === 0) return [];
  await tx.execute("DELETE FROM sequencer_retention_holds WHERE set_id = ANY($1)", [[...setIds]]);
  await tx.execute(
    `INSERT INTO sequencer_stranded_sets (set_id, pruned_before, stranded_at)
     SELECT unnest($1::text[]), $2, $3
     ON CONFLICT (set_id) DO UPDATE SET pruned_before = EXCLUDED.pruned_before, stranded_at = EXCLUDED.stranded_at`,
    [[...setIds], prunedBefore, now],
  );
  return setIds.map((setId) => ({ setId, prunedBefore, strandedAt: now }));
}
