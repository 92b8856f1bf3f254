import { LockstepError } from "../common/errors.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import { acknowledgementDigest, subscriptionDigest } from "../crypto/keys.ts";
import type { AdmissionControl } from "./admission-control.ts";
import type { EventNotifier } from "./event-notifier.ts";
import { readEvents } from "./event-reader.ts";
import type { RecentEvents } from "./recent-events.ts";
import { checkIssuedAt, verifyMemberSignature } from "./request-verification.ts";
import type { SequencerStore } from "./sequencer-store.ts";
import type { SequencerWriter } from "./sequencer-writer.ts";
import { checkTime, requireMember } from "./submission-intake.ts";
import type { WriterEpochs } from "./writer-epochs.ts";

export interface SubscribeRequestFields {
  member: string;
  fromTimestamp?: bigint;
  writerEpoch: bigint;
  writerActivation: string;
  issuedAt: bigint;
  nonce: Uint8Array;
  signature: Uint8Array;
  signingKeyFingerprint: string;
}

export interface AcknowledgeRequestFields {
  member: string;
  timestamp: bigint;
  writerEpoch: bigint;
  writerActivation: string;
  signature: Uint8Array;
  signingKeyFingerprint: string;
}

export interface MemberSubscriptionsOptions {
  store: SequencerStore;
  writer: SequencerWriter;
  notifier: EventNotifier;
  recent: RecentEvents;
  epochs: WriterEpochs;
  admissions: AdmissionControl;
  sequencerId: string;
  /** Aborted when the sequencer stops: every open subscription ends with SEQUENCER_SHUTTING_DOWN. */
  stopping: AbortSignal;
  clock: () => Micros;
  /** Events per SubscribeResponse. */
  batchSize?: number;
}

/**
 * Subscribe and Acknowledge (docs/design.md §2 "Sequenced events"): each request authenticated by
 * the member's signature at the sequencer's head and fenced by its writer epoch; a revoked member's
 * are refused, and its open subscriptions end at the revocation.
 */
export class MemberSubscriptions {
  constructor(private readonly options: MemberSubscriptionsOptions) {}

  /**
   * The member's events from fromTimestamp inclusive (absent: from its first event), in batches,
   * until `signal` aborts; ends with SEQUENCER_SHUTTING_DOWN when the sequencer stops.
   */
  async *subscribe(request: SubscribeRequestFields, signal: AbortSignal): AsyncGenerator<SequencedEvent[]> {
    const { writer, epochs, admissions, stopping } = this.options;
    const { member } = request;
    const registeredAt = requireMember(writer, member);
    const fromTimestamp = request.fromTimestamp ?? null;
    checkIssuedAt(member, request.issuedAt, this.options.clock());
    verifyMemberSignature(writer.topology, checkTime(writer), {
      request: "subscribe",
      member,
      fingerprint: request.signingKeyFingerprint,
      digest: subscriptionDigest({
        member,
        fromTimestamp,
        writerEpoch: request.writerEpoch,
        issuedAt: request.issuedAt,
        nonce: request.nonce,
        writerActivation: request.writerActivation,
      }),
      signature: request.signature,
    });
    await epochs.check(member, request.writerEpoch, request.writerActivation);
    if (fromTimestamp !== null && fromTimestamp < registeredAt) {
      throw new LockstepError("EVENTS_UNAVAILABLE_FOR_TIMESTAMP", {
        timestamp: fromTimestamp,
        member,
        reason: `the member was registered at ${registeredAt}`,
      });
    }
    const subscription = admissions.subscription(member);
    const stop = AbortSignal.any([signal, stopping, subscription.signal]);
    try {
      yield* readEvents({
        store: this.options.store,
        notifier: this.options.notifier,
        recent: this.options.recent,
        member,
        fromInclusive: fromTimestamp ?? registeredAt,
        signal: stop,
        batchSize: this.options.batchSize,
      });
    } finally {
      // Ended by a revocation: SEQUENCER_MEMBER_REVOKED.
      subscription.close(signal.aborted);
    }
    if (stopping.aborted && !signal.aborted) {
      throw new LockstepError("SEQUENCER_SHUTTING_DOWN", { sequencer: this.options.sequencerId });
    }
  }

  async acknowledge(request: AcknowledgeRequestFields): Promise<void> {
    const { writer, epochs, admissions, store } = this.options;
    const { member, timestamp, writerEpoch, writerActivation } = request;
    requireMember(writer, member);
    verifyMemberSignature(writer.topology, checkTime(writer), {
      request: "acknowledge",
      member,
      fingerprint: request.signingKeyFingerprint,
      digest: acknowledgementDigest({ member, timestamp, writerEpoch, writerActivation }),
      signature: request.signature,
    });
    admissions.requireNotRevoked(member);
    const last = writer.lastDelivered(member);
    if (last === undefined || timestamp > last) {
      throw new LockstepError("SEQUENCER_SUBMISSION_REQUEST_MALFORMED", {
        member,
        reason: `acknowledged ${timestamp} is after the member's last event ${last ?? "(none)"}`,
      });
    }
    await epochs.check(member, writerEpoch, writerActivation);
    await store.acknowledge(member, timestamp);
  }
}
