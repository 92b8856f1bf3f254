import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { type Micros, microsToIso, msToMicros } from "../common/time.ts";
import type { Db, Queryable } from "../storage/db.ts";
import {
  type AnchorSource,
  completeRecovery,
  latestRecoveryRecord,
  type RecoveryRecord,
  recordRecoveryAnchor,
  recordRecoveryWindow,
} from "../storage/recovery-records.ts";

export type DeduplicationRecoveryMode = "reject" | "warn";

/** What `status` shows while a restored participant recovers (null once complete). */
export interface DeduplicationRecoveryStatus {
  /** replaying: the anchor is unknown or not yet processed; waiting: for a timestamp after expectedEnd. */
  state: "replaying" | "waiting";
  mode: DeduplicationRecoveryMode;
  backupSet: string;
  restoredAt: string;
  /** The window's anchor in sequencer time (micros) and as ISO time; null until known. */
  anchor: string | null;
  anchorTime: string | null;
  anchorSource: AnchorSource | null;
  /** The first processed event at or after the anchor. */
  firstSequencerTime: string | null;
  /** anchor + ledgerTimeRecordTimeTolerance (micros), once known; and as ISO time. */
  expectedEnd: string | null;
  expectedEndTime: string | null;
  replayedToHead: boolean;
  /** What has to happen for the window to close, in words. */
  waitingFor: string;
}

/** The participant's event, as far as recovery looks at it. */
export interface ObservedEvent {
  readonly timestamp: Micros;
  readonly messageId: string;
}

/**
 * Deduplication recovery (docs/design.md §4.5). A restored participant lost the in-flight and deduplication
 * state of everything after its backup, so a command submitted then and resubmitted now could commit
 * twice. Any such lost submission had maxSequencingTime ≤ (its ledger time + tolerance), with its
 * ledger time before the restore. So once the participant has processed every event up to a
 * sequencer time later than (anchor + tolerance), where the anchor is a sequencer time at or after
 * the restore, each was either replayed into the deduplication table or can never be sequenced.
 * Until then submissions are refused (or, per config, only warned about). Canton's rule is the same
 * (a restored participant waits out the ledger-time/record-time tolerance before accepting
 * submissions again); its time source is the sequencer's, so is ours.
 *
 * The anchor is sequencer time only, never a host's wall clock (a lagging clock would close the
 * window early): the live sequencer's head when `restore apply` ran, the restored sequencer's head,
 * or, when neither was known, the timestamp of the first time proof this node requested after it
 * started (sequenced after everything the sequencer had then). Events are processed in order, so
 * processing an event later than anchor + tolerance also means the node replayed past the head.
 */
export class DeduplicationRecovery {
  private record: RecoveryRecord | undefined;
  /** Time proofs requested since this start while the anchor is unknown: the first back fixes it. */
  private readonly proofs = new Set<string>();

  constructor(
    private readonly db: Db,
    private readonly mode: DeduplicationRecoveryMode,
    private readonly toleranceMs: (at: Micros) => number,
    private readonly log: Logger,
    private readonly timeProofIntervalMs = 1000,
  ) {}

  /** Reads the unfinished recovery record, if any; call once before the sequencer client starts. */
  async load(): Promise<void> {
    const record = await latestRecoveryRecord(this.db);
    this.record = record?.state === "recovering" ? record : undefined;
    if (this.record) {
      this.log.warn(
        {
          backupSet: this.record.backupSet,
          mode: this.mode,
          anchor: this.record.anchor?.toString() ?? null,
          anchorSource: this.record.anchorSource,
        },
        "restored from a backup: deduplication recovery until the window closes",
      );
    }
  }

  get active(): boolean {
    return this.record !== undefined;
  }

  /** The node asked for a time proof (after it started): while the anchor is unknown, it may fix it. */
  timeProofRequested(messageId: string): void {
    if (this.record && this.record.anchor === null) this.proofs.add(messageId);
  }

  /**
   * Called in the event handler's transaction for every processed event, so the anchor, the
   * window's start and the completion are durable exactly when the event is.
   */
  async observe(event: ObservedEvent, tx: Queryable): Promise<void> {
    let record = this.record;
    if (!record) return;
    if (record.anchor === null) {
      if (!this.proofs.has(event.messageId)) return;
      await recordRecoveryAnchor(tx, record.id, event.timestamp);
      record = { ...record, anchor: event.timestamp, anchorSource: "first-observed" };
      this.proofs.clear();
      this.log.info({ anchor: event.timestamp.toString() }, "deduplication window anchored on a time proof");
    }
    const anchor = record.anchor as Micros;
    if (event.timestamp >= anchor && record.firstSequencerTime === null) {
      const expectedEnd = record.expectedEnd ?? anchor + msToMicros(this.toleranceMs(anchor));
      await recordRecoveryWindow(tx, record.id, event.timestamp, expectedEnd);
      record = { ...record, firstSequencerTime: event.timestamp, expectedEnd };
      this.log.info(
        { anchor: anchor.toString(), expectedEnd: microsToIso(expectedEnd) },
        "replayed to the sequencer's head at the anchor; deduplication window closes after the expected end",
      );
    }
    if (
      record.expectedEnd !== null &&
      record.firstSequencerTime !== null &&
      event.timestamp > record.expectedEnd
    ) {
      await completeRecovery(tx, record.id);
      this.record = undefined;
      this.log.info({ backupSet: record.backupSet }, "deduplication recovery complete: submissions accepted");
      return;
    }
    this.record = record;
  }

  /** Refuses (or warns about) a submission while recovering. */
  checkSubmission(commandId: string): void {
    const record = this.record;
    if (!record) return;
    const expectedEnd =
      record.expectedEnd === null
        ? "the participant has observed the sequencer's head and the tolerance has passed in sequencer time"
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
    const proofs = `time proofs requested every ${this.timeProofIntervalMs / 1000}s`;
    let waitingFor: string;
    if (record.anchor === null) {
      waitingFor = `the sequencer's head (anchor unknown: the first time proof back anchors it); ${proofs}`;
    } else if (!replayed) {
      waitingFor = `replay to the anchor ${record.anchor} (${microsToIso(record.anchor)}), the sequencer's head; ${proofs}`;
    } else {
      const end = record.expectedEnd as Micros;
      waitingFor = `a sequencer timestamp after ${end} (${microsToIso(end)}); ${proofs}`;
    }
    return {
      state: replayed ? "waiting" : "replaying",
      mode: this.mode,
      backupSet: record.backupSet,
      restoredAt: record.restoredAt.toISOString(),
      anchor: record.anchor?.toString() ?? null,
      anchorTime: record.anchor === null ? null : microsToIso(record.anchor),
      anchorSource: record.anchorSource,
      firstSequencerTime: record.firstSequencerTime?.toString() ?? null,
      expectedEnd: record.expectedEnd?.toString() ?? null,
      expectedEndTime: record.expectedEnd === null ? null : microsToIso(record.expectedEnd),
      replayedToHead: replayed,
      waitingFor,
    };
  }
}
