import { LockstepError } from "../common/errors.ts";
import { uniqueIdentifierProblem } from "../common/ids.ts";
import type { Micros } from "../common/time.ts";
import { FINGERPRINT_PATTERN } from "../crypto/keys.ts";
import type { Queryable } from "../storage/db.ts";

/**
 * The permissioned synchronizer (docs/security.md "Permissioned synchronizer"): the sequencer's
 * allow-list of member ids. Canton restricts onboarding with the dynamic synchronizer parameter
 * `onboardingRestriction` (UnrestrictedOpen: anyone; RestrictedOpen: only participants the
 * synchronizer owners put on the allow-list with a ParticipantSynchronizerPermission) and disables
 * members at the sequencer (`disable_member`). Lockstep keeps one list in the sequencer's database:
 * each change is recorded by the single writer at a sequencing timestamp (sequencer-writer.ts), so
 * it is ordered with the events, survives restarts and travels with the sequencer's backups.
 */

/** synchronizer.onboarding: allow-list is Canton's RestrictedOpen, open its UnrestrictedOpen. */
export type OnboardingMode = "open" | "allow-list";

export type AdmissionState = "admitted" | "revoked";

/** Who changed an admission last (MemberAdmission.changed_by). */
export type AdmissionSource = "operator" | "open-onboarding" | "registered-before-allow-list";

export interface Admission {
  readonly member: string;
  readonly state: AdmissionState;
  /** The sequencing timestamp of the change. */
  readonly at: Micros;
  readonly by: AdmissionSource;
}

/** A change for the writer: it gives it a timestamp and stores it with the batch. */
export interface AdmissionItem {
  readonly kind: "admission";
  readonly member: string;
  readonly state: AdmissionState;
  readonly by: AdmissionSource;
}

/**
 * Why `member` may not register now, or undefined. A revoked member stays out in either mode (a
 * revocation is an operator's decision, opening onboarding does not undo it).
 */
export function registrationRefusal(
  mode: OnboardingMode,
  member: string,
  admission: Admission | undefined,
  synchronizer: string,
): LockstepError | undefined {
  if (admission?.state === "revoked") return revokedError(admission);
  if (mode === "open" || admission?.state === "admitted") return undefined;
  return new LockstepError("TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED", { member, synchronizer });
}

/** Sends, subscriptions and acknowledgements of a revoked member are refused. */
export function revokedRefusal(admission: Admission | undefined): LockstepError | undefined {
  return admission?.state === "revoked" ? revokedError(admission) : undefined;
}

function revokedError(admission: Admission): LockstepError {
  return new LockstepError("SEQUENCER_MEMBER_REVOKED", {
    member: admission.member,
    revokedAt: admission.at,
  });
}

/**
 * A member id as admit and revoke take it: name::namespace by Canton's rules (ids.ts), so that an
 * id no member could ever register under (a 1 MiB name, a NUL byte PostgreSQL cannot store, another
 * alphabet) is refused before it reaches the writer.
 */
export function checkMemberId(member: string, sequencerId: string): void {
  const problem = uniqueIdentifierProblem(member, FINGERPRINT_PATTERN);
  if (problem) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `"${member.slice(0, 200)}" is not a member id (${problem}; NAME::FINGERPRINT, as \`lockstep status\` shows it)`,
    });
  }
  if (member === sequencerId) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: "the sequencer is not a member of its own allow-list",
    });
  }
}

export async function readAdmissions(db: Queryable): Promise<Admission[]> {
  const rows = await db.query<{
    member: string;
    state: AdmissionState;
    changed_at: bigint;
    changed_by: string;
  }>("SELECT member, state, changed_at, changed_by FROM sequencer_admissions ORDER BY member");
  return rows.map((r) => ({
    member: r.member,
    state: r.state,
    at: r.changed_at,
    by: r.changed_by as AdmissionSource,
  }));
}
