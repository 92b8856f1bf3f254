import { formatDuration } from "../common/duration.ts";
import { LockstepError } from "../common/errors.ts";
import { hashFields } from "../common/hash.ts";
import type { Micros } from "../common/time.ts";
import { partySet } from "../ledger/ledger-value.ts";
import type { DeduplicationPeriod } from "./ledger-api-backend.ts";

/**
 * Command deduplication as Canton's (docs/design.md §2 step 2): pure decisions; the store does the I/O.
 */

/** Canton's ChangeId: (user id, command id, sorted act-as set), hashed to one key. */
export function changeId(userId: string, commandId: string, actAs: readonly string[]): string {
  return hashFields("lockstep-change-id-v1", userId, commandId, ...partySet(actAs)).toString("hex");
}

/**
 * The period a submission uses: the requested one, else the maximum (Canton's default). Throws
 * INVALID_DEDUPLICATION_PERIOD for a negative or too long duration, or an offset outside
 * [0, ledger end] (no pruning yet, so no lower bound but 0).
 */
export function resolveDeduplicationPeriod(
  requested: DeduplicationPeriod | undefined,
  maxDeduplicationDurationMs: number,
  ledgerEnd: bigint,
): DeduplicationPeriod {
  const max = formatDuration(maxDeduplicationDurationMs);
  if (!requested) return { kind: "duration", durationMs: maxDeduplicationDurationMs };
  if (requested.kind === "duration") {
    if (!Number.isFinite(requested.durationMs) || requested.durationMs < 0) {
      throw invalid("the duration is negative", max);
    }
    if (requested.durationMs > maxDeduplicationDurationMs) {
      throw invalid(`the duration ${formatDuration(requested.durationMs)} exceeds the maximum ${max}`, max);
    }
    return requested;
  }
  if (requested.offset < 0n) throw invalid(`offset ${requested.offset} is negative`, max);
  if (requested.offset > ledgerEnd) {
    throw invalid(`offset ${requested.offset} is after the ledger end ${ledgerEnd}`, max);
  }
  return requested;
}

/** The last accepted completion of a change id (participant_command_deduplication). */
export interface AcceptedCompletion {
  readonly offset: bigint;
  readonly recordTime: Micros;
  readonly submissionId: string;
}

/**
 * DUPLICATE_COMMAND when the change was accepted within the period: after the period's offset, or
 * at a record time no older than `now - duration`. Rejected completions never deduplicate.
 */
export function duplicateOf(
  accepted: AcceptedCompletion | undefined,
  period: DeduplicationPeriod,
  now: Micros,
): LockstepError | undefined {
  if (!accepted) return undefined;
  const within =
    period.kind === "offset"
      ? accepted.offset > period.offset
      : accepted.recordTime >= now - BigInt(period.durationMs) * 1000n;
  if (!within) return undefined;
  return new LockstepError("DUPLICATE_COMMAND", {
    completionOffset: accepted.offset,
    existingSubmissionId: accepted.submissionId,
  });
}

function invalid(reason: string, maxDeduplicationDuration: string): LockstepError {
  return new LockstepError("INVALID_DEDUPLICATION_PERIOD", { reason, maxDeduplicationDuration });
}

/** The period as stored (JSON text; offsets as strings). */
export function periodToText(period: DeduplicationPeriod): string {
  return period.kind === "duration"
    ? JSON.stringify({ kind: "duration", durationMs: period.durationMs })
    : JSON.stringify({ kind: "offset", offset: period.offset.toString() });
}

export function periodFromText(text: string): DeduplicationPeriod {
  const json = JSON.parse(text) as { kind: string; durationMs?: number; offset?: string };
  return json.kind === "offset"
    ? { kind: "offset", offset: BigInt(json.offset ?? "0") }
    : { kind: "duration", durationMs: json.durationMs ?? 0 };
}
