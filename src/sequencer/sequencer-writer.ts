import { create, toBinary } from "@bufbuild/protobuf";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import {
  type EventPosition,
  membersToDeliver,
  type SequencedEvent,
  type SequencedSubmission,
  submissionHash,
  type UnsignedView,
  unsignedDeliveryFor,
} from "../common/sequenced-event.ts";
import { END_OF_TIME, type Micros, nowMicros } from "../common/time.ts";
import {
  type SignedTopologyTransaction,
  signedTopologyToParts,
  type TopologyEntry,
  type TopologyState,
} from "../crypto/topology.ts";
import { EventPayloadSchema } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import {
  type Admission,
  type AdmissionItem,
  type OnboardingMode,
  registrationRefusal,
  revokedRefusal,
} from "./member-admissions.ts";
import type { SequencedRecord, SequencerStore } from "./sequencer-store.ts";

/** A member's submission, already authenticated and validated by the Send handler. */
export interface SubmissionItem {
  readonly kind: "submission";
  readonly sender: string;
  readonly messageId: string;
  readonly recipients: readonly string[];
  readonly payload: Uint8Array;
  /** null: no limit. */
  readonly maxSequencingTime: Micros | null;
  /** An empty event to the sender only (docs/design.md §2 "Time proofs"). */
  readonly timeProof: boolean;
}

/** Topology transactions the sequencer itself sequences, addressed to all members. */
export interface TopologyItem {
  readonly kind: "topology";
  readonly transactions: readonly SignedTopologyTransaction[];
  /** The member this registers: it becomes a member at the event's timestamp and receives it. */
  readonly registers?: string;
}

export type WriterItem = SubmissionItem | TopologyItem | AdmissionItem;

/** What the writer keeps in memory: the single writer is the only one to change it. */
export interface WriterState {
  readonly head: Micros | null;
  readonly topology: TopologyState;
  /** Registered members → registration timestamp. */
  readonly members: ReadonlyMap<string, Micros>;
  readonly heads: ReadonlyMap<string, EventPosition>;
  /** The allow-list by member (member-admissions.ts). */
  readonly admissions: ReadonlyMap<string, Admission>;
}

export interface SequencerWriterOptions {
  store: SequencerStore;
  sequencerId: string;
  /**
   * Signs a member view (its eventSigningBytes) with a signing key of the sequencer that topology
   * lists just before the event (`listed`: their fingerprints), as every recipient checks it
   * (sequencerKeysAt); a batch's views are signed concurrently (e.g. on the thread pool, keys.ts
   * signAsync).
   */
  sign: (bytes: Buffer, listed: readonly string[]) => Buffer | Promise<Buffer>;
  initial: WriterState;
  /** synchronizer.onboarding: who may register (checked again here, at the sequencing timestamp). */
  onboarding?: OnboardingMode;
  /** The synchronizer id, for the onboarding refusal. */
  synchronizerId?: string;
  clock?: () => Micros;
  /** Upper bound of submissions per transaction (group commit takes all queued, up to this). */
  maxBatchSize?: number;
  /** After each commit, with the new head and what was committed: feeds and wakes the readers. */
  onCommitted?: (head: Micros, records: readonly SequencedRecord[]) => void;
  /** A failed commit: the in-memory chain may no longer match the database, so the writer stops. */
  onFailure?: (error: LockstepError) => void;
}

interface Pending {
  readonly item: WriterItem;
  readonly resolve: (timestamp: Micros) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * The single in-process writer: gives every submission a unique, strictly increasing timestamp
 * (max(now, last + 1)), builds each recipient's view on its chain, and commits durably.
 * Group commit: everything that queued while a transaction was committing goes into the next one,
 * so the cost of a durable commit is shared by more submissions as load grows.
 * submit() resolves with the timestamp once it is committed.
 */
export class SequencerWriter {
  private state: WriterState;
  private readonly queue: Pending[] = [];
  private running: Promise<void> | undefined;
  private draining = false;
  private stopped = false;
  private failure: LockstepError | undefined;
  private readonly clock: () => Micros;
  private readonly maxBatchSize: number;
  /** Committed transactions and the events in them (group commit: events / batches grows with load). */
  readonly stats = { batches: 0, events: 0 };

  constructor(private readonly options: SequencerWriterOptions) {
    this.state = options.initial;
    this.clock = options.clock ?? nowMicros;
    this.maxBatchSize = options.maxBatchSize ?? 2000;
  }

  get head(): Micros | null {
    return this.state.head;
  }
  get topology(): TopologyState {
    return this.state.topology;
  }
  registeredAt(member: string): Micros | undefined {
    return this.state.members.get(member);
  }
  members(): string[] {
    return [...this.state.members.keys()].sort();
  }
  lastDelivered(member: string): Micros | undefined {
    return this.state.heads.get(member)?.timestamp;
  }
  admission(member: string): Admission | undefined {
    return this.state.admissions.get(member);
  }
  admissions(): Admission[] {
    return [...this.state.admissions.values()].sort((a, b) => a.member.localeCompare(b.member));
  }

  submit(item: WriterItem): Promise<Micros> {
    return this.submitAll([item])[0] as Promise<Micros>;
  }

  /** Queues the items together (so they go into the same transaction, up to maxBatchSize). */
  submitAll(items: readonly WriterItem[]): Promise<Micros>[] {
    const refusal = this.failure
      ? this.failure
      : this.stopped
        ? new LockstepError("SEQUENCER_SHUTTING_DOWN", { sequencer: this.options.sequencerId })
        : undefined;
    if (refusal) return items.map(() => Promise.reject(refusal));
    const promises = items.map(
      (item) => new Promise<Micros>((resolve, reject) => this.queue.push({ item, resolve, reject })),
    );
    if (items.length > 0 && !this.draining) this.running = this.drain();
    return promises;
  }

  /** Sequences what is queued, then refuses new submissions. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  /**
   * The flag is cleared synchronously with the last look at the queue (not in a later .finally),
   * so a submission queued from a microtask in between still starts a new drain.
   */
  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatchSize);
        if (this.failure) {
          for (const p of batch) p.reject(this.failure);
          continue;
        }
        try {
          await this.writeBatch(batch);
        } catch (error) {
          // A bug while building the batch: nothing was written, but stop rather than guess.
          this.fail(error, batch);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private fail(error: unknown, batch: readonly Pending[]): void {
    this.failure = new LockstepError(
      "INTERNAL_ERROR",
      { details: `sequencer writer stopped: writing a batch failed: ${(error as Error).message}` },
      { cause: error },
    );
    for (const p of batch) p.reject(this.failure);
    this.options.onFailure?.(this.failure);
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    const { sequencerId, sign } = this.options;
    const base = this.state;
    let topology = base.topology;
    let head = base.head;
    const newMembers = new Map<string, Micros>();
    const heads = new Map<string, EventPosition>();
    const built: BuiltEvent[] = [];
    // The sequencer's keys in force before each event: changed only by a topology event, which is
    // itself signed with the keys before it (so a batch may hold a rotation's announce or revoke).
    let listed = topology.signingKeysOf(sequencerId, END_OF_TIME).map((k) => k.fingerprint);
    const topologyEntries: TopologyEntry[] = [];
    const outcomes: [Pending, Micros | LockstepError][] = [];
    // Allow-list changes of this batch; a revocation applies to everything sequenced after it.
    const admissions = new Map<string, Admission>();
    const admissionOf = (member: string) => admissions.get(member) ?? base.admissions.get(member);

    for (const pending of batch) {
      const now = this.clock();
      const timestamp = head === null || now > head ? now : head + 1n;
      let event: SequencedSubmission;
      if (pending.item.kind === "admission") {
        // Takes a timestamp but no event: recorded in order, delivered to nobody.
        const { member, state, by } = pending.item;
        admissions.set(member, { member, state, at: timestamp, by });
        head = timestamp;
        outcomes.push([pending, timestamp]);
        continue;
      }
      if (pending.item.kind === "submission") {
        // Checked at intake too; this catches a revocation sequenced while the send was verified.
        const revoked = revokedRefusal(admissionOf(pending.item.sender));
        if (revoked) {
          outcomes.push([pending, revoked]);
          continue;
        }
        event = submissionEvent(pending.item, timestamp);
      } else {
        const item = pending.item;
        const registering = item.registers !== undefined && !base.members.has(item.registers);
        const admission = item.registers === undefined ? undefined : admissionOf(item.registers);
        if (registering && item.registers !== undefined) {
          const mode = this.options.onboarding ?? "open";
          const refusal = registrationRefusal(
            mode,
            item.registers,
            admission,
            this.options.synchronizerId ?? "",
          );
          if (refusal) {
            outcomes.push([pending, refusal]);
            continue;
          }
        }
        let next = topology;
        try {
          for (const tx of item.transactions) next = next.apply(tx, timestamp);
        } catch (error) {
          // Rejected (e.g. a concurrent registration won the serial): nothing is sequenced for it.
          outcomes.push([pending, toLockstepError(error)]);
          continue;
        }
        topology = next;
        for (const signed of item.transactions) topologyEntries.push({ signed, effectiveAt: timestamp });
        if (registering && item.registers !== undefined) {
          newMembers.set(item.registers, timestamp);
          // Let in by open onboarding: recorded, so that switching to allow-list keeps it in.
          if (admission === undefined) {
            const member = item.registers;
            admissions.set(member, { member, state: "admitted", at: timestamp, by: "open-onboarding" });
          }
        }
        event = topologyEvent(item, timestamp, sequencerId, [...base.members.keys(), ...newMembers.keys()]);
      }
      head = timestamp;
      const views: { member: string; unsigned: UnsignedView }[] = [];
      const shared = submissionHash(event);
      for (const member of membersToDeliver(event)) {
        // The sequencer sends topology events but does not subscribe to itself.
        if (member === sequencerId) continue;
        const unsigned = unsignedDeliveryFor(
          member,
          event,
          heads.get(member) ?? base.heads.get(member) ?? null,
          shared,
        );
        heads.set(member, { timestamp, chainHash: unsigned.view.chainHash });
        views.push({ member, unsigned });
      }
      built.push({ event, views, listed });
      if (pending.item.kind === "topology") {
        listed = topology.signingKeysOf(sequencerId, END_OF_TIME).map((k) => k.fingerprint);
      }
      outcomes.push([pending, timestamp]);
    }
    const records = await signRecords(built, sign);

    if ((records.length > 0 || admissions.size > 0) && head !== null) {
      try {
        await this.options.store.writeBatch(
          {
            records,
            heads,
            newMembers: [...newMembers].map(([member, registeredAt]) => ({ member, registeredAt })),
            topology: topologyEntries,
            admissions: [...admissions.values()],
          },
          head,
        );
      } catch (error) {
        this.fail(error, batch);
        return;
      }
      this.stats.batches++;
      this.stats.events += records.length;
      this.state = {
        head,
        topology,
        members: new Map([...base.members, ...newMembers]),
        heads: new Map([...base.heads, ...heads]),
        admissions: new Map([...base.admissions, ...admissions]),
      };
      this.options.onCommitted?.(head, records);
    }
    for (const [pending, outcome] of outcomes) {
      if (outcome instanceof LockstepError) pending.reject(outcome);
      else pending.resolve(outcome);
    }
  }
}

/** Signs every view of the batch at once (the chains are built; the order of signing is free). */
interface BuiltEvent {
  readonly event: SequencedSubmission;
  readonly views: { member: string; unsigned: UnsignedView }[];
  /** The sequencer's signing keys (fingerprints) in force just before the event. */
  readonly listed: readonly string[];
}

async function signRecords(
  built: readonly BuiltEvent[],
  sign: SequencerWriterOptions["sign"],
): Promise<SequencedRecord[]> {
  const signatures = await Promise.all(
    built.flatMap((b) => b.views.map((v) => sign(v.unsigned.signingBytes, b.listed))),
  );
  let next = 0;
  return built.map(({ event, views }) => ({
    ...event,
    deliveries: views.map(({ member, unsigned }): { member: string; event: SequencedEvent } => ({
      member,
      event: { ...unsigned.view, signature: signatures[next++] as Buffer },
    })),
  }));
}

function submissionEvent(item: SubmissionItem, timestamp: Micros): SequencedSubmission {
  const base = { timestamp, sender: item.sender, messageId: item.messageId };
  if (item.maxSequencingTime !== null && timestamp > item.maxSequencingTime) {
    const error = new LockstepError("SEQUENCER_MAX_SEQUENCING_TIME_EXCEEDED", {
      messageId: item.messageId,
      timestamp,
      maxSequencingTime: item.maxSequencingTime,
    });
    return {
      ...base,
      recipients: [],
      payload: new Uint8Array(0),
      deliverError: { messageId: item.messageId, reason: error.message, code: error.code },
    };
  }
  if (item.timeProof) return { ...base, recipients: [], payload: new Uint8Array(0) };
  // A copy: the request's payload may be a view into the whole request buffer, which the recent
  // events (recent-events.ts) would otherwise keep alive.
  return { ...base, recipients: [...item.recipients], payload: Buffer.from(item.payload) };
}

function topologyEvent(
  item: TopologyItem,
  timestamp: Micros,
  sequencerId: string,
  members: string[],
): SequencedSubmission {
  const payload = toBinary(
    EventPayloadSchema,
    create(EventPayloadSchema, {
      content: {
        case: "topology",
        value: { transactions: item.transactions.map((tx) => signedTopologyToParts(tx)) },
      },
    }),
  );
  return {
    timestamp,
    sender: sequencerId,
    messageId: `topology:${item.transactions[0]?.hash ?? timestamp}`,
    recipients: [...new Set(members)].sort(),
    payload,
  };
}
