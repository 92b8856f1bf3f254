import type { Logger } from "../common/logging.ts";
import type { Micros } from "../common/time.ts";
import {
  type Admission,
  type AdmissionState,
  checkMemberId,
  type OnboardingMode,
  registrationRefusal,
  revokedRefusal,
} from "./member-admissions.ts";
import type { MemberPosition } from "./sequencer-store.ts";
import type { SequencerWriter } from "./sequencer-writer.ts";

export interface AdmissionControlOptions {
  writer: SequencerWriter;
  sequencerId: string;
  synchronizerId: string;
  onboarding: OnboardingMode;
  logger: Logger;
}

/**
 * The sequencer's side of the permissioned synchronizer (member-admissions.ts): admits and revokes
 * through the single writer, so each change has its sequencing timestamp, ends a revoked member's
 * open subscriptions, and answers who may register and whose acknowledgement bounds pruning.
 */
export class AdmissionControl {
  /** Open subscriptions by member: a revocation ends them. */
  private readonly subscriptions = new Map<string, Set<AbortController>>();

  constructor(private readonly options: AdmissionControlOptions) {}

  get onboarding(): OnboardingMode {
    return this.options.onboarding;
  }

  /** The allow-list, with each member's registration (null before it registered). */
  list(): (Admission & { registeredAt: Micros | null })[] {
    const { writer } = this.options;
    return writer.admissions().map((a) => ({ ...a, registeredAt: writer.registeredAt(a.member) ?? null }));
  }

  /** SEQUENCER_MEMBER_REVOKED for a revoked member's own (authenticated) requests. */
  requireNotRevoked(member: string): void {
    const revoked = revokedRefusal(this.options.writer.admission(member));
    if (revoked) throw revoked;
  }

  /** Throws why `member` may not register now (a revoked one never; an unknown one without admission). */
  checkRegistration(member: string): void {
    const refusal = registrationRefusal(
      this.options.onboarding,
      member,
      this.options.writer.admission(member),
      this.options.synchronizerId,
    );
    if (refusal) {
      this.options.logger.warn({ member, code: refusal.code }, "registration refused");
      throw refusal;
    }
  }

  /** Admits a member id (or lets a revoked one back in); a no-op when it is admitted already. */
  admit(member: string): Promise<{ admission: Admission; changed: boolean }> {
    return this.change(member, "admitted");
  }

  /**
   * Revokes a member from the writer's next timestamp on: what it sent before stays sequenced,
   * later sends are refused, and its open subscriptions end (subscription() then throws the code).
   */
  async revoke(member: string): Promise<{ admission: Admission; changed: boolean }> {
    const result = await this.change(member, "revoked");
    for (const subscription of this.subscriptions.get(member) ?? []) subscription.abort();
    return result;
  }

  /**
   * An open subscription of `member`: its signal aborts when the member is revoked; `close` must be
   * called when it ends, and throws SEQUENCER_MEMBER_REVOKED when that is why it ended.
   */
  subscription(member: string): { signal: AbortSignal; close: (endedByCaller: boolean) => void } {
    this.requireNotRevoked(member);
    const revocation = new AbortController();
    const open = this.subscriptions.get(member) ?? new Set();
    this.subscriptions.set(member, open.add(revocation));
    return {
      signal: revocation.signal,
      close: (endedByCaller) => {
        open.delete(revocation);
        if (open.size === 0 && this.subscriptions.get(member) === open) this.subscriptions.delete(member);
        if (revocation.signal.aborted && !endedByCaller) this.requireNotRevoked(member);
      },
    };
  }

  /**
   * The members whose acknowledgement bounds pruning: not the revoked ones (as Canton's disabled
   * members), else one revoked for good would hold the sequencer's pruning forever.
   */
  holdingPruning(positions: readonly MemberPosition[]): MemberPosition[] {
    return positions.filter((p) => this.options.writer.admission(p.member)?.state !== "revoked");
  }

  private async change(
    member: string,
    state: AdmissionState,
  ): Promise<{ admission: Admission; changed: boolean }> {
    const { writer, sequencerId, logger } = this.options;
    checkMemberId(member, sequencerId);
    const current = writer.admission(member);
    if (current?.state === state) return { admission: current, changed: false };
    const at = await writer.submit({ kind: "admission", member, state, by: "operator" });
    logger.info({ member, at: at.toString() }, `member ${state}`);
    return { admission: writer.admission(member) ?? { member, state, at, by: "operator" }, changed: true };
  }
}
