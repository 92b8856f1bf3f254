import { LockstepError } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";
import type { RetentionHold } from "./retention-holds.ts";
import type { MemberPosition } from "./sequencer-store.ts";

/**
 * Where pruning is safe (docs/design.md §2): below every member's acknowledged clean timestamp, so that any
 * member can resubscribe from its last acknowledged event, and at or below the oldest retention
 * hold, so that every retained backup can be restored against this sequencer. A member that has
 * never acknowledged blocks pruning above its registration (it may still need everything).
 * Canton prunes the sequencer only below its members' acknowledgements as well; the holds are ours.
 */
export interface PruningInputs {
  readonly positions: readonly MemberPosition[];
  /** The last sequenced timestamp: with no members and no holds, everything below it may go. */
  readonly head: Micros | null;
  /** Every retention hold (retention-holds.ts). */
  readonly holds: readonly RetentionHold[];
}

export interface SafePoint {
  /** The highest `before` for which Prune(before) is safe; null when nothing can be pruned. */
  readonly timestamp: Micros | null;
  /** The set whose hold is that point, when a hold (not an acknowledgement) pins it. */
  readonly pinnedBySet: string | null;
}

function acknowledgementBound(inputs: PruningInputs): Micros | null {
  let safe: Micros | null = inputs.positions.length === 0 ? inputs.head : null;
  for (const p of inputs.positions) {
    const bound = p.acknowledged ?? p.registeredAt;
    if (safe === null || bound < safe) safe = bound;
  }
  return safe;
}

export function safePruningPoint(inputs: PruningInputs): SafePoint {
  const acks = acknowledgementBound(inputs);
  // readHolds returns them oldest first, but do not rely on the caller's order.
  const oldest = inputs.holds.reduce<RetentionHold | null>(
    (min, h) => (min === null || h.timestamp < min.timestamp ? h : min),
    null,
  );
  if (oldest && (acks === null || oldest.timestamp < acks)) {
    // With no acknowledgement bound at all (no members), the hold is still the limit.
    return { timestamp: oldest.timestamp, pinnedBySet: oldest.setId };
  }
  return { timestamp: acks, pinnedBySet: null };
}

/**
 * Decides Prune(before): throws UNSAFE_TO_PRUNE when an acknowledgement (never overridable) or,
 * without `force`, a retention hold is in the way. Returns the sets whose holds a forced prune
 * must release (they become stranded).
 */
export function checkPruningSafe(before: Micros, inputs: PruningInputs, force = false): string[] {
  const acks = acknowledgementBound(inputs);
  const blockingMembers = inputs.positions
    .filter((p) => before > (p.acknowledged ?? p.registeredAt))
    .map((p) =>
      p.acknowledged === null
        ? `${p.member} has not acknowledged (registered at ${p.registeredAt})`
        : `${p.member} acknowledged ${p.acknowledged}`,
    );
  const blockingHolds = inputs.holds.filter((h) => before > h.timestamp);
  const sets = [...new Set(blockingHolds.map((h) => h.setId))];
  const ackUnsafe = blockingMembers.length > 0 || acks === null;
  if (!ackUnsafe && (sets.length === 0 || force)) return force ? sets : [];
  const reasons = [...blockingMembers];
  if (acks === null && inputs.positions.length === 0) reasons.push("nothing has been sequenced yet");
  for (const set of sets) {
    const held = blockingHolds.filter((h) => h.setId === set);
    // inputs.holds come oldest first (readHolds), so the set's first is its oldest.
    const from = held[0]?.timestamp ?? 0n;
    reasons.push(`backup set ${set} holds events from ${from} (${held.map((h) => h.member).join(", ")})`);
  }
  const safe = safePruningPoint(inputs);
  throw new LockstepError("UNSAFE_TO_PRUNE", {
    requested: before,
    safePoint: safe.timestamp ?? "none",
    reason: reasons.join("; "),
    sets: sets.join(","),
  });
}
