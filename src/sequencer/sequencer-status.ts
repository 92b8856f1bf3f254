import type { SequencedEvent } from "../common/sequenced-event.ts";
import { type Micros, maxMicros } from "../common/time.ts";
import type { AdmissionControl } from "./admission-control.ts";
import { type RetentionHold, readHolds, readStranded, type StrandedSet } from "./retention-holds.ts";
import { safePruningPoint } from "./sequencer-pruning.ts";
import type { MemberPosition, SequencerStore } from "./sequencer-store.ts";
import type { SequencerWriter } from "./sequencer-writer.ts";
import type { WriterEpochs } from "./writer-epochs.ts";

export interface SequencerStatus {
  sequencerId: string;
  synchronizerId: string;
  head: Micros | null;
  pruningLowerBound: Micros | null;
  safePruningTimestamp: Micros | null;
  /** The set whose retention hold is the safe pruning point, if a hold pins it. */
  pinnedBySet: string | null;
  members: MemberPosition[];
  holds: RetentionHold[];
  stranded: StrandedSet[];
  retentionMs: number;
  /** The sequencer's clock now, never below the head. */
  sequencerTime: Micros;
}

export interface MemberEventInfo {
  registeredAt: Micros | null;
  pruningLowerBound: Micros | null;
  lastDelivered: Micros | null;
  head: Micros | null;
  event: SequencedEvent | null;
  /** The member's writer epoch on record (0 if none): a member restored unverified takes one above. */
  writerEpoch: bigint;
}

/** What the sequencer reports about itself (`lockstep sequencer status`, backup and restore). */
export async function readSequencerStatus(args: {
  store: SequencerStore;
  writer: SequencerWriter;
  admissions: AdmissionControl;
  ids: { sequencerId: string; synchronizerId: string };
  retentionMs: number;
  clock: () => Micros;
}): Promise<SequencerStatus> {
  const { store, writer, admissions } = args;
  const db = store.database;
  const [members, pruningLowerBound, holds, stranded] = await Promise.all([
    store.memberPositions(),
    store.pruningLowerBound(),
    readHolds(db),
    readStranded(db),
  ]);
  const safe = safePruningPoint({ positions: admissions.holdingPruning(members), head: writer.head, holds });
  return {
    ...args.ids,
    head: writer.head,
    pruningLowerBound,
    safePruningTimestamp: safe.timestamp,
    pinnedBySet: safe.pinnedBySet,
    members,
    holds,
    stranded,
    retentionMs: args.retentionMs,
    sequencerTime: maxMicros(args.clock(), (writer.head ?? 0n) + 1n),
  };
}

/**
 * What restore preflight asks about a member (docs/design.md §4.4): can it still subscribe from
 * `timestamp`, and which event did it get there (to compare with a backup's last stored event).
 */
export async function readMemberEvent(
  args: { store: SequencerStore; writer: SequencerWriter; epochs: WriterEpochs },
  member: string,
  timestamp: Micros,
): Promise<MemberEventInfo> {
  const { store, writer, epochs } = args;
  const [event, pruningLowerBound] = await Promise.all([
    store.deliveryAt(member, timestamp),
    store.pruningLowerBound(),
  ]);
  return {
    registeredAt: writer.registeredAt(member) ?? null,
    pruningLowerBound,
    lastDelivered: writer.lastDelivered(member) ?? null,
    head: writer.head,
    event: event ?? null,
    writerEpoch: epochs.get(member).epoch,
  };
}
