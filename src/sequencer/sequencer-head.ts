import type { Micros } from "../common/time.ts";
import type { Queryable } from "../storage/db.ts";

/**
 * The sequencer's head as its database holds it: the last timestamp the writer gave out. Events,
 * the members' chain heads (they outlive pruned events) and allow-list changes (member-admissions.ts:
 * an admit or revoke takes a timestamp but is no event) all count, as in SequencerStore.load(), so
 * that a backup's recorded head, the head a restored sequencer starts from and the head `sequencer
 * status` shows are the same number, and no timestamp is ever given out twice.
 */
export async function readSequencerHead(q: Queryable): Promise<Micros | null> {
  // A database from before the allow-list (migration 103) has no sequencer_admissions yet.
  const admissions = await q.one<{ found: boolean }>(
    "SELECT to_regclass('sequencer_admissions') IS NOT NULL AS found",
  );
  const row = await q.one<{ head: bigint | null }>(
    `SELECT GREATEST(
              (SELECT max(timestamp) FROM sequencer_events),
              (SELECT max(last_timestamp) FROM sequencer_member_heads)
              ${admissions.found ? ", (SELECT max(changed_at) FROM sequencer_admissions)" : ""}
            ) AS head`,
  );
  return row.head;
}
