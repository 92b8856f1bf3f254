import { LockstepError } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";
import type { MemberPosition } from "./sequencer-store.ts";

/**
 * Where pruning is safe (DESIGN §2): below every member's clean timestamp, so that any member can
 * resubscribe from its last acknowledged event. A member that has never acknowledged blocks pruning
 * above its registration (it may still need everything from its first event on).
 */
export interface PruningInputs {
  readonly positions: readonly MemberPosition[];
  /** The last sequenced timestamp: with no members at all, everything below it may go. */
  readonly head: Micros | null;
  /**
   * Hook for backups (DESIGN §4.6, not built yet): the oldest sequencer position that a retained
   * participant/mediator backup still needs. Pruning must stay at or below it too.
   */
  readonly retainedBackupBound?: Micros | null;
}

/** The highest `before` for which Prune(before) is safe; null when nothing can be pruned. */
export function safePruningPoint(inputs: PruningInputs): Micros | null {
  let safe: Micros | null = inputs.positions.length === 0 ? inputs.head : null;
  for (const p of inputs.positions) {
    const bound = p.acknowledged ?? p.registeredAt;
    if (safe === null || bound < safe) safe = bound;
  }
  const backup = inputs.retainedBackupBound;
  if (backup !== undefined && backup !== null && safe !== null && backup < safe) safe = backup;
  return safe;
}

/** Throws UNSAFE_TO_PRUNE unless Prune(before) keeps everything a member (or backup) still needs. */
export function checkPruningSafe(before: Micros, inputs: PruningInputs): void {
  const safe = safePruningPoint(inputs);
  if (safe !== null && before <= safe) return;
  const blocking = inputs.positions
    .filter((p) => before > (p.acknowledged ?? p.registeredAt))
    .map((p) =>
      p.acknowledged === null
        ? `${p.member} has not acknowledged (registered at ${p.registeredAt})`
        : `${p.member} acknowledged ${p.acknowledged}`,
    );
  const backup = inputs.retainedBackupBound;
  if (backup !== undefined && backup !== null && before > backup) {
    blocking.push(`a retained backup needs events from ${backup}`);
  }
  throw new LockstepError("UNSAFE_TO_PRUNE", {
    requested: before,
    safePoint: safe ?? "none",
    reason: blocking.length > 0 ? blocking.join("; ") : "nothing has been sequenced yet",
  });
}
