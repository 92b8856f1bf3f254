import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { type Micros, microsToIso, msToMicros } from "../common/time.ts";
import {
  completeRecovery,
  latestRecoveryRecord,
  type RecoveryRecord,
  recordRecoveryWindow,
} from "../node/node-state.ts";
import type { Db, Queryable } from "../storage/db.ts";

export type DeduplicationRecoveryMode = "reject" | "warn";

/** What `status` shows while a restored participant recovers (null once complete). */
export interface DeduplicationRecoveryStatus {
  state: "replaying" | "waiting";
  mode: DeduplicationRecoveryMode;
  backupSet: string;
  restoredAt: string;
  /** The first sequencer timestamp after the restore, once observed. */
  firstSequencerTime: string | null;
  /** firstSequencerTime + ledgerTimeRecordTimeTolerance (micros), once known; and as ISO time. */
  expectedEnd: string | null;
  expectedEndTime: string | null;
  replayedToHead: boolean;
}

/**
 * Deduplication recovery (DESIGN §4.5). A restored participant lost the in-flight and deduplication
 * state of everything after its backup, so a command submitted then and resubmitted now could commit
 * twice. Any such lost submission had maxSequencingTime ≤ (its ledger time + tolerance), so once the
 * participant has processed every event up to a sequencer time later than (first post-restore
 * sequencer time + tolerance), each was either replayed into the deduplication table or can never be
 * sequenced. Until then submissions are refused (or, per config, only warned about).
 *
 * "Post-restore" is an event with a timestamp at or after the restore's wall clock; events are
 * processed in order, so processing it also means the participant replayed to the head it saw then.
 */
export class DeduplicationRecovery {
  private record: RecoveryRecord | undefined;

  constructor(
    private readonly db: Db,
    private readonly mode: DeduplicationRecoveryMode,
    private readonly toleranceMs: (at: Micros) => number,
    private readonly log: Logger,
  ) {}

  /** Reads the unfinished recovery record, if any; call once before the sequencer client starts. */
  async load(): Promise<void> {
    const record = await latestRecoveryRecord(this.db);
    this.record = record?.state === "recovering" ? record : undefined;
    if (this.record) {
      this.log.warn(
        { backupSet: this.record.backupSet, mode: this.mode },
        "restored from a backup: deduplication recovery until the window closes",
      );
    }
  }

  get active(): boolean {
    return this.record !== undefined;
  }

  /**
   * Called in the event handler's transaction for every processed event, so the window's start and
   * the completion are durable exactly when the event is.
   */
  async observe(timestamp: Micros, tx: Queryable): Promise<void> {
    const record = this.record;
    if (!record || timestamp < record.restoredAtMicros) return;
    if (record.firstSequencerTime === null) {
      const expectedEnd = timestamp + msToMicros(this.toleranceMs(timestamp));
      await recordRecoveryWindow(tx, record.id, timestamp, expectedEnd);
      this.record = { ...record, firstSequencerTime: timestamp, expectedEnd };
      this.log.info(
        { firstSequencerTime: timestamp.toString(), expectedEnd: microsToIso(expectedEnd) },
        "replayed to the sequencer's head; deduplication window closes at the expected end",
      );
      return;
    }
    if (record.expectedEnd !== null && timestamp > record.expectedEnd) {
      await completeRecovery(tx, record.id);
      this.record = undefined;
      this.log.info({ backupSet: record.backupSet }, "deduplication recovery complete: submissions accepted");
    }
  }

  /** Refuses (or warns about) a submission while recovering. */
  checkSubmission(commandId: string): void {
    const record = this.record;
    if (!record) return;
    const expectedEnd =
      record.expectedEnd === null
        ? "the participant has replayed to the sequencer's head and the tolerance has passed"
        : microsToIso(record.expectedEnd);
    if (this.mode === "warn") {
      this.log.warn(
        { commandId, expectedEnd },
        "accepting a submission during deduplication recovery (restore.deduplication-recovery: warn): it may be a duplicate",
      );
      return;
    }
    throw new LockstepError("DEDUPLICATION_STATE_RECOVERING", {
      expectedEnd,
      expectedEndMicros: record.expectedEnd ?? undefined,
      backupSet: record.backupSet,
    });
  }

  status(): DeduplicationRecoveryStatus | null {
    const record = this.record;
    if (!record) return null;
    const replayed = record.firstSequencerTime !== null;
    return {
      state: replayed ? "waiting" : "replaying",
      mode: this.mode,
      backupSet: record.backupSet,
      restoredAt: record.restoredAt.toISOString(),
      firstSequencerTime: record.firstSequencerTime?.toString() ?? null,
      expectedEnd: record.expectedEnd?.toString() ?? null,
      expectedEndTime: record.expectedEnd === null ? null : microsToIso(record.expectedEnd),
      replayedToHead: replayed,
    };
  }
}
