import { LockstepError } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";
import type { Db, Queryable } from "../storage/db.ts";
import { insertCompletion, nextOffset } from "./participant-store.ts";
import { errorJson } from "./request-processor.ts";
import { allInFlight, removeInFlight } from "./request-store.ts";

// Moving a participant to another synchronizer (docs/restore.md, "The synchronizer is lost or
// restored behind the participants"), as Canton's repair.migrate_synchronizer does, on the
// participant's database with the participant offline (offline-repair.ts). One transaction:
// * refuse while submissions are in flight or requests unfinished, unless forced (Canton:
//   SYNC_SERVICE_SYNCHRONIZER_MUST_NOT_HAVE_IN_FLIGHT_TRANSACTIONS; force "may lead to a ledger fork");
//   forced, each in-flight submission completes with SYNCHRONIZER_MIGRATED_WHILE_IN_FLIGHT (so no
//   application waits forever and its command id is free again) and each unfinished request is
//   rolled back (its contract locks released: nothing of it committed here);
// * assign every active contract to the new synchronizer (participant_contracts.synchronizer_id);
// * forget the old synchronizer's client state (registration, stored events, clean timestamp,
//   topology): its history is what the new synchronizer does not share, and the client would take
//   it for a fork. What it had is summed up in the migration record;
// * the marker: a ledger offset of its own (participant_synchronizer_migrations), which the update
//   and completion streams carry, so offsets continue and an application sees where it happened.
// On its next start the participant registers with the new synchronizer (its keys), and before it
// serves commands it announces its hosted parties there (participant-node.ts, announcePartiesAfterMigration).

export interface MigrationRequest {
  participant: string;
  from: string;
  to: string;
  force: boolean;
  /** The migrating host's clock, for the record and the abandoned completions (no sequencer time exists). */
  now: Micros;
}

export interface MigrationRecord {
  offset: bigint;
  from: string;
  to: string;
  forced: boolean;
  migratedAt: Micros;
  oldCleanTimestamp: Micros | null;
  oldEvents: bigint;
  contractsMoved: bigint;
  abandonedCommandIds: string[];
  abandonedRequests: Micros[];
  partiesAnnounced: boolean;
}

export interface MigrationResult extends MigrationRecord {
  /** A rerun after the migration committed: nothing was changed this time. */
  alreadyMigrated: boolean;
}

interface MigrationRow {
  ledger_offset: bigint;
  from_synchronizer: string;
  to_synchronizer: string;
  forced: boolean;
  migrated_at: bigint;
  old_clean_timestamp: bigint | null;
  old_events: bigint;
  contracts_moved: bigint;
  abandoned_command_ids: string[];
  abandoned_requests: bigint[];
  parties_announced_at: Date | null;
}

function toRecord(r: MigrationRow): MigrationRecord {
  return {
    offset: r.ledger_offset,
    from: r.from_synchronizer,
    to: r.to_synchronizer,
    forced: r.forced,
    migratedAt: r.migrated_at,
    oldCleanTimestamp: r.old_clean_timestamp,
    oldEvents: r.old_events,
    contractsMoved: r.contracts_moved,
    abandonedCommandIds: r.abandoned_command_ids,
    abandonedRequests: r.abandoned_requests,
    partiesAnnounced: r.parties_announced_at !== null,
  };
}

/** The participant's migrations, oldest first. */
export async function synchronizerMigrations(q: Queryable): Promise<MigrationRecord[]> {
  const rows = await q.query<MigrationRow>(
    "SELECT * FROM participant_synchronizer_migrations ORDER BY ledger_offset",
  );
  return rows.map(toRecord);
}

/** For status: each synchronizer the participant has been on, the current one active. */
export function synchronizerHistory(
  current: string,
  migrations: readonly MigrationRecord[],
): { id: string; status: "active" | "inactive"; untilOffset?: string; forced?: boolean }[] {
  const earlier = migrations.map((m) => ({
    id: m.from,
    status: "inactive" as const,
    untilOffset: m.offset.toString(),
    forced: m.forced,
  }));
  return [...earlier, { id: migrations.at(-1)?.to ?? current, status: "active" }];
}

/**
 * The synchronizer the participant is on, by the config's `synchronizer.id` (the registration holds
 * the full identifier `id::namespace`): its registration's, else (migrated, not registered yet) the
 * last migration's target; null before it ever registered.
 */
export async function currentSynchronizer(q: Queryable): Promise<string | null> {
  const row = await q.maybeOne<{ synchronizer_id: string | null }>(
    `SELECT coalesce(
       (SELECT split_part(synchronizer_id, '::', 1) FROM sequencer_client_registration),
       (SELECT to_synchronizer FROM participant_synchronizer_migrations ORDER BY ledger_offset DESC LIMIT 1)
     ) AS synchronizer_id`,
  );
  return row?.synchronizer_id ?? null;
}

/**
 * The migration from → to when it is the one that put the participant where it is now (a rerun after
 * it committed), else undefined.
 */
export async function completedMigration(
  q: Queryable,
  from: string,
  to: string,
): Promise<MigrationRecord | undefined> {
  if ((await currentSynchronizer(q)) !== to) return undefined;
  const last = (await synchronizerMigrations(q)).at(-1);
  return last?.from === from && last.to === to ? last : undefined;
}

/** The participant's migrations whose parties it has not announced on the new synchronizer yet. */
export async function partiesToAnnounce(q: Queryable): Promise<bigint | undefined> {
  const row = await q.maybeOne<{ ledger_offset: bigint }>(
    `SELECT ledger_offset FROM participant_synchronizer_migrations
     WHERE parties_announced_at IS NULL ORDER BY ledger_offset DESC LIMIT 1`,
  );
  return row?.ledger_offset;
}

export async function markPartiesAnnounced(q: Queryable): Promise<void> {
  await q.execute(
    "UPDATE participant_synchronizer_migrations SET parties_announced_at = now() WHERE parties_announced_at IS NULL",
  );
}

/** Migrates the participant's database; see the file comment. Idempotent: a rerun reports the migration. */
export async function migrateParticipantDatabase(
  db: Db,
  request: MigrationRequest,
): Promise<MigrationResult> {
  const { participant, from, to } = request;
  const invalid = (reason: string) =>
    new LockstepError("SYNCHRONIZER_MIGRATION_INVALID", { participant, from, to, reason });
  if (from === to) throw invalid("the source and the target are the same synchronizer");
  return db.transaction(
    async (tx) => {
      // Serializes two migrations of one database (the lock already does; this is cheap insurance).
      await tx.execute("LOCK TABLE participant_synchronizer_migrations IN EXCLUSIVE MODE");
      const done = await completedMigration(tx, from, to);
      if (done) return { ...done, alreadyMigrated: true };
      const current = await currentSynchronizer(tx);
      if (current === to) throw invalid(`it is already on ${to}`);
      if (current === null) throw invalid("it never registered with a synchronizer");
      if (current !== from) throw invalid(`it is on ${current}, not ${from}`);

      const inFlight = await allInFlight(tx);
      const pending = (
        await tx.query<{ request_id: bigint }>(
          "SELECT request_id FROM participant_requests WHERE state = 'pending' ORDER BY request_id",
        )
      ).map((r) => r.request_id);
      if ((inFlight.length > 0 || pending.length > 0) && !request.force) {
        throw new LockstepError("SYNC_SERVICE_SYNCHRONIZER_MUST_NOT_HAVE_IN_FLIGHT_TRANSACTIONS", {
          synchronizer: from,
          participant,
          submissions: String(inFlight.length),
          requests: String(pending.length),
        });
      }
      const message = `The submission was in flight on ${from} when ${participant} was migrated to ${to} with --force; it did not commit here`;
      for (const s of inFlight) {
        await insertCompletion(tx, {
          changeId: s.changeId,
          commandId: s.commandId,
          submissionId: s.submissionId,
          userId: s.userId,
          actAs: s.actAs,
          status: {
            kind: "failed",
            error: errorJson("SYNCHRONIZER_MIGRATED_WHILE_IN_FLIGHT", message, { from, to }),
          },
          offset: await nextOffset(tx),
          deduplicationPeriod: s.deduplicationPeriod,
          recordTime: request.now,
        });
        await removeInFlight(tx, s.changeId);
      }
      if (pending.length > 0) {
        await tx.execute("UPDATE participant_requests SET state = 'rejected' WHERE request_id = ANY($1)", [
          pending,
        ]);
        await tx.execute("DELETE FROM participant_locks WHERE request_id = ANY($1)", [pending]);
      }

      const moved = await tx.one<{ n: bigint }>(
        `WITH moved AS (UPDATE participant_contracts SET synchronizer_id = $1 WHERE archived_offset IS NULL RETURNING 1)
         SELECT count(*)::bigint AS n FROM moved`,
        [to],
      );
      const old = await tx.one<{ events: bigint; clean: bigint | null }>(
        `SELECT (SELECT count(*)::bigint FROM sequencer_client_events) AS events,
                (SELECT clean_timestamp FROM sequencer_client_clean) AS clean`,
      );
      for (const table of [
        "sequencer_client_events",
        "sequencer_client_clean",
        "sequencer_client_topology",
        "sequencer_client_registration",
      ]) {
        await tx.execute(`DELETE FROM ${table}`);
      }
      const offset = await nextOffset(tx);
      const row = await tx.one<MigrationRow>(
        `INSERT INTO participant_synchronizer_migrations (ledger_offset, from_synchronizer, to_synchronizer,
           forced, migrated_at, old_clean_timestamp, old_events, contracts_moved,
           abandoned_change_ids, abandoned_command_ids, abandoned_requests)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *`,
        [
          offset,
          from,
          to,
          request.force,
          request.now,
          old.clean,
          old.events,
          moved.n,
          inFlight.map((s) => s.changeId),
          inFlight.map((s) => s.commandId),
          pending,
        ],
      );
      return { ...toRecord(row), alreadyMigrated: false };
    },
    { synchronousCommit: true },
  );
}
