import { setMaxListeners } from "node:events";
import { LockstepError } from "../common/errors.ts";
import { parseUniqueIdentifier, uniqueIdentifier } from "../common/ids.ts";
import type { Logger } from "../common/logging.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import { END_OF_TIME, type Micros, maxMicros, nowMicros } from "../common/time.ts";
import type { OwnTopology } from "../crypto/key-rotation.ts";
import { KeyStore } from "../crypto/key-store.ts";
import { acknowledgementDigest, type KeyPair, signAsync, subscriptionDigest } from "../crypto/keys.ts";
import {
  type SignedTopologyTransactionParts,
  type SynchronizerParametersValues,
  signedTopologyFromParts,
  type TopologyEntry,
  TopologyState,
} from "../crypto/topology.ts";
import type { Db } from "../storage/db.ts";
import { AdmissionControl } from "./admission-control.ts";
import { EventNotifier } from "./event-notifier.ts";
import { readEvents } from "./event-reader.ts";
import { IntakeGate } from "./intake-gate.ts";
import type { OnboardingMode } from "./member-admissions.ts";
import { RecentEvents } from "./recent-events.ts";
import { checkIssuedAt, verifyMemberSignature } from "./request-verification.ts";
import {
  type RetentionHold,
  readHolds,
  readStranded,
  releaseHolds,
  replaceHolds,
  type StrandedSet,
} from "./retention-holds.ts";
import { addMediatorTransaction, bootstrapTransactions } from "./sequencer-bootstrap.ts";
import { checkPruningSafe, safePruningPoint } from "./sequencer-pruning.ts";
import { type MemberPosition, SequencerStore } from "./sequencer-store.ts";
import { SequencerWriter } from "./sequencer-writer.ts";
import {
  checkTime,
  requireMember,
  type SendRequestFields,
  type SignedSubmissionsFields,
  SubmissionIntake,
} from "./submission-intake.ts";
import { WriterEpochs } from "./writer-epochs.ts";

export type { SendRequestFields, SignedSubmissionsFields } from "./submission-intake.ts";

/** The sequencer's keys: the one it signs events with changes when a rotation activates a new one. */
interface SequencerKeys {
  readonly store: KeyStore;
  readonly namespace: KeyPair;
  /** Preferred: the newest active key. */
  signing: KeyPair;
  /** Every stored signing key not revoked, by fingerprint (signerFor falls back to these). */
  candidates: Map<string, KeyPair>;
}

async function signingCandidates(store: KeyStore): Promise<Map<string, KeyPair>> {
  const keys = await store.list();
  return new Map(
    keys.filter((k) => k.purpose === "signing" && k.state !== "revoked").map((k) => [k.fingerprint, k]),
  );
}

/** The key to sign an event with, given the fingerprints topology lists just before it. */
function signerFor(keys: SequencerKeys, listed: readonly string[]): KeyPair {
  if (listed.includes(keys.signing.fingerprint)) return keys.signing;
  for (const fingerprint of listed) {
    const key = keys.candidates.get(fingerprint);
    if (key) return key;
  }
  // Before the sequencer's own MemberKeys exist (its first bootstrap event) nothing is listed.
  return keys.signing;
}

export interface SequencerOptions {
  db: Db;
  /** The node's private key store (default: one on `db` with keys in plain). */
  keys?: KeyStore;
  logger: Logger;
  /** The node's name: the sequencer's member id is `name::<namespace fingerprint>`. */
  name: string;
  /** config.synchronizer.id: the synchronizer id is `id::<namespace fingerprint>`. */
  synchronizerName: string;
  parameters: SynchronizerParametersValues;
  /** synchronizer.onboarding (member-admissions.ts); default open (protocol tests register anyone). */
  onboarding?: OnboardingMode;
  /** The configured mediator's name: registering it also adds it to the MediatorDomainState. */
  mediatorName?: string;
  clock?: () => Micros;
  /** Events per SubscribeResponse. */
  subscriptionBatchSize?: number;
  /** Submissions per writer transaction at most. */
  maxBatchSize?: number;
  /** synchronizer.sequencer.retention: reported in status so backup list can show it per set. */
  retentionMs?: number;
  /** The writer failed; the node should report it (it refuses submissions from then on). */
  onFatal?: (error: LockstepError) => void;
}

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

/**
 * The sequencer (docs/design.md §2 "Sequenced events"): authenticates member requests, hands accepted
 * submissions to the single writer, serves subscriptions, acknowledgements, registration and
 * pruning. Started on activation, when this process holds the node's single-writer lock.
 */
export class Sequencer {
  private readonly stopping = new AbortController();
  /** Paused by `backup create --quiesce` (PauseIntake); the service admits submissions through it. */
  readonly intake = new IntakeGate();
  /** The allow-list: admit, revoke, and who may register (docs/security.md "Permissioned synchronizer"). */
  readonly admissions: AdmissionControl;

  private constructor(
    private readonly options: SequencerOptions,
    private readonly store: SequencerStore,
    private readonly writer: SequencerWriter,
    private readonly notifier: EventNotifier,
    private readonly recent: RecentEvents,
    private readonly epochs: WriterEpochs,
    private readonly submissions: SubmissionIntake,
    private readonly keys: SequencerKeys,
    readonly sequencerId: string,
    readonly synchronizerId: string,
  ) {
    // Every open subscription listens for the stop: there may be many more than 10.
    setMaxListeners(0, this.stopping.signal);
    this.admissions = new AdmissionControl({
      writer,
      sequencerId,
      synchronizerId,
      onboarding: options.onboarding ?? "open",
      logger: options.logger,
    });
  }

  /** Loads the state, starts the writer and sequences the initial topology if missing. */
  static async start(options: SequencerOptions): Promise<Sequencer> {
    const keyStore = options.keys ?? new KeyStore(options.db);
    const initial = await keyStore.ensureInitialKeys();
    const namespace = initial.namespace.fingerprint;
    const store = new SequencerStore(options.db);
    const loaded = await store.load();
    const notifier = new EventNotifier(loaded.head);
    const recent = new RecentEvents(loaded.head);
    const sequencerId = uniqueIdentifier(options.name, namespace);
    const synchronizerId = uniqueIdentifier(options.synchronizerName, namespace);
    const topology = TopologyState.replay(namespace, loaded.topology);
    // A rotation stopped between its steps, or a restore from a set taken mid-rotation: the store
    // follows topology before the signing key is picked (docs/keys.md).
    await keyStore.reconcile(topology.signingKeysOf(sequencerId, END_OF_TIME).map((k) => k.fingerprint));
    const keys: SequencerKeys = {
      store: keyStore,
      namespace: initial.namespace,
      signing: await keyStore.activeSigningKey(),
      candidates: await signingCandidates(keyStore),
    };
    const writer = new SequencerWriter({
      store,
      sequencerId,
      // The preferred key while topology lists it, else a stored key it lists: recipients check an
      // event with the keys at t - 1, and a rotation's revoke may drop the preferred key before
      // keysChanged runs.
      sign: (bytes, listed) => signAsync(signerFor(keys, listed).privateKey, bytes),
      initial: {
        head: loaded.head,
        topology,
        members: new Map(loaded.members.map((m) => [m.member, m.registeredAt])),
        heads: loaded.heads,
        admissions: new Map(loaded.admissions.map((a) => [a.member, a])),
      },
      onboarding: options.onboarding ?? "open",
      synchronizerId,
      clock: options.clock,
      maxBatchSize: options.maxBatchSize,
      onCommitted: (head, records) => {
        recent.add(records.flatMap((r) => r.deliveries));
        notifier.advance(head);
      },
      onFailure: (error) => options.onFatal?.(error),
    });
    const epochs = new WriterEpochs(
      store,
      loaded.members.map((m) => [m.member, { epoch: m.writerEpoch, activation: m.writerActivation }]),
    );
    const sequencer = new Sequencer(
      options,
      store,
      writer,
      notifier,
      recent,
      epochs,
      new SubmissionIntake(writer, epochs),
      keys,
      sequencerId,
      synchronizerId,
    );
    await sequencer.bootstrap();
    return sequencer;
  }

  /** The sequencer's own topology for its key rotation (node/key-admin.ts): its writer sequences it at once. */
  ownTopology(): OwnTopology {
    return {
      member: () => this.sequencerId,
      topology: () => this.writer.topology,
      submit: async (transactions) => {
        let state = this.writer.topology;
        // Validated first: the writer skips a rejected transaction, which would pass for done.
        for (const signed of transactions) state = state.apply(signed, this.at() + 1n);
        // The keys it may sign with from then on: every stored one not revoked (a pending key
        // being announced among them); never a listing it holds no private key for.
        this.keys.candidates = await signingCandidates(this.keys.store);
        const listed = state.signingKeysOf(this.sequencerId, END_OF_TIME);
        if (!listed.some((k) => this.keys.candidates.has(k.fingerprint))) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details:
              "the sequencer would be left without a signing key it holds: keep one of its stored keys",
          });
        }
        return this.writer.submit({ kind: "topology", transactions });
      },
      awaitEffective: async () => {},
      keysChanged: async () => {
        this.keys.candidates = await signingCandidates(this.keys.store);
        this.keys.signing = await this.keys.store.activeSigningKey();
        this.options.logger.info({ fingerprint: this.keys.signing.fingerprint }, "signing events with key");
      },
    };
  }

  get synchronizerNamespace(): string {
    return this.keys.namespace.fingerprint;
  }

  get head(): Micros | null {
    return this.writer.head;
  }

  /** Writer transactions and events committed since start (benchmarks, metrics). */
  get writerStats(): { readonly batches: number; readonly events: number } {
    return this.writer.stats;
  }

  private async bootstrap(): Promise<void> {
    const transactions = bootstrapTransactions({
      topology: this.writer.topology,
      sequencerId: this.sequencerId,
      namespaceKey: this.keys.namespace,
      signingKey: this.keys.signing,
      parameters: this.options.parameters,
    });
    if (transactions.length === 0) return;
    const at = await this.writer.submit({ kind: "topology", transactions });
    this.options.logger.info(
      { at: at.toString(), transactions: transactions.map((t) => t.transaction.mapping.type) },
      "sequenced the sequencer's own topology",
    );
  }

  private at(): Micros {
    return checkTime(this.writer);
  }

  private requireMember(member: string): Micros {
    return requireMember(this.writer, member);
  }

  /** Resolves once the submission is sequenced durably (its outcome arrives as an event). */
  send(request: SendRequestFields): Promise<Micros> {
    return this.submissions.send(request);
  }

  /** See SubmissionIntake.sendBatch. */
  sendBatch(requests: readonly SendRequestFields[]): Promise<(Micros | LockstepError)[]> {
    return this.submissions.sendBatch(requests);
  }

  /** See SubmissionIntake.sendSigned. */
  sendSigned(batch: SignedSubmissionsFields): Promise<(Micros | LockstepError)[]> {
    return this.submissions.sendSigned(batch);
  }

  /**
   * The member's events from fromTimestamp inclusive (absent: from its first event), in batches,
   * until `signal` aborts; ends with SEQUENCER_SHUTTING_DOWN when the sequencer stops.
   */
  async *subscribe(request: SubscribeRequestFields, signal: AbortSignal): AsyncGenerator<SequencedEvent[]> {
    const { member } = request;
    const registeredAt = this.requireMember(member);
    const fromTimestamp = request.fromTimestamp ?? null;
    checkIssuedAt(member, request.issuedAt, (this.options.clock ?? nowMicros)());
    verifyMemberSignature(this.writer.topology, this.at(), {
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
    await this.epochs.check(member, request.writerEpoch, request.writerActivation);
    if (fromTimestamp !== null && fromTimestamp < registeredAt) {
      throw new LockstepError("EVENTS_UNAVAILABLE_FOR_TIMESTAMP", {
        timestamp: fromTimestamp,
        member,
        reason: `the member was registered at ${registeredAt}`,
      });
    }
    const subscription = this.admissions.subscription(member);
    const stop = AbortSignal.any([signal, this.stopping.signal, subscription.signal]);
    try {
      yield* readEvents({
        store: this.store,
        notifier: this.notifier,
        recent: this.recent,
        member,
        fromInclusive: fromTimestamp ?? registeredAt,
        signal: stop,
        batchSize: this.options.subscriptionBatchSize,
      });
    } finally {
      // Ended by a revocation: SEQUENCER_MEMBER_REVOKED.
      subscription.close(signal.aborted);
    }
    if (this.stopping.signal.aborted && !signal.aborted) {
      throw new LockstepError("SEQUENCER_SHUTTING_DOWN", { sequencer: this.sequencerId });
    }
  }

  async acknowledge(request: AcknowledgeRequestFields): Promise<void> {
    const { member, timestamp, writerEpoch, writerActivation } = request;
    this.requireMember(member);
    verifyMemberSignature(this.writer.topology, this.at(), {
      request: "acknowledge",
      member,
      fingerprint: request.signingKeyFingerprint,
      digest: acknowledgementDigest({ member, timestamp, writerEpoch, writerActivation }),
      signature: request.signature,
    });
    this.admissions.requireNotRevoked(member);
    const last = this.writer.lastDelivered(member);
    if (last === undefined || timestamp > last) {
      throw new LockstepError("SEQUENCER_SUBMISSION_REQUEST_MALFORMED", {
        member,
        reason: `acknowledged ${timestamp} is after the member's last event ${last ?? "(none)"}`,
      });
    }
    await this.epochs.check(member, writerEpoch, writerActivation);
    await this.store.acknowledge(member, timestamp);
  }

  /**
   * Sequences a self-signed MemberKeys add; the member is registered from its timestamp. A retry
   * of the same transaction returns the first registration. The configured mediator is also added
   * to the MediatorDomainState, in the same event.
   */
  async registerMember(
    parts: SignedTopologyTransactionParts,
  ): Promise<{ member: string; registeredAt: Micros }> {
    const signed = signedTopologyFromParts(parts);
    const { operation, mapping } = signed.transaction;
    if (operation !== "add" || mapping.type !== "MemberKeys") {
      throw new LockstepError("INVALID_TOPOLOGY_MAPPING", {
        reason: `RegisterMember takes a MemberKeys add, not a ${mapping.type} ${operation}`,
      });
    }
    const member = mapping.member;
    // Refused before anything else: a revoked member stays out, an unknown one needs admitting.
    this.admissions.requireNotRevoked(member);
    const registered = this.writer.registeredAt(member);
    if (
      registered !== undefined &&
      this.writer.topology.transactions().some((e) => e.signed.hash === signed.hash)
    ) {
      return { member, registeredAt: registered };
    }
    if (member === this.sequencerId) {
      throw new LockstepError("INVALID_TOPOLOGY_MAPPING", { reason: "the sequencer cannot register itself" });
    }
    this.admissions.checkRegistration(member);
    // Validate now, so that a bad transaction is refused without a writer round trip; the writer
    // validates again at the sequencing timestamp.
    const after = this.writer.topology.apply(signed, this.at() + 1n);
    const transactions = [signed];
    if (
      this.options.mediatorName !== undefined &&
      parseUniqueIdentifier(member).name === this.options.mediatorName
    ) {
      const mediatorState = addMediatorTransaction(after, member, this.keys.namespace);
      if (mediatorState) transactions.push(mediatorState);
    }
    const at = await this.writer.submit({ kind: "topology", transactions, registers: member });
    this.options.logger.info({ member, at: at.toString() }, "registered member");
    return { member, registeredAt: this.writer.registeredAt(member) ?? at };
  }

  /**
   * Sequences owner-signed topology transactions from a member: party allocation, and a registered
   * member's own MemberKeys (signing key rotation, docs/keys.md). Onboarding and mediator changes
   * stay with RegisterMember and the synchronizer, so a member cannot onboard others or change
   * parameters through here; a retry of an already sequenced transaction returns its timestamp.
   */
  async submitTopology(parts: readonly SignedTopologyTransactionParts[]): Promise<Micros> {
    const transactions = parts.map((p) => signedTopologyFromParts(p));
    const known = transactions.map((t) =>
      this.writer.topology.transactions().find((e) => e.signed.hash === t.hash),
    );
    if (known.every((e) => e !== undefined))
      return known.reduce((max, e) => maxMicros(max, e.effectiveAt), 0n);
    let state = this.writer.topology;
    for (const signed of transactions) {
      const { mapping, operation } = signed.transaction;
      const keyRotation =
        mapping.type === "MemberKeys" &&
        operation === "add" &&
        mapping.member !== this.sequencerId &&
        this.writer.registeredAt(mapping.member) !== undefined;
      if (mapping.type !== "PartyToParticipant" && !keyRotation) {
        throw new LockstepError("INVALID_TOPOLOGY_MAPPING", {
          reason: `members submit PartyToParticipant or their own MemberKeys (a registered member's key rotation), not ${operation} ${mapping.type}`,
        });
      }
      // Validate now (signature, owner, serial) so a bad one is refused without a writer round trip.
      state = state.apply(signed, this.at() + 1n);
    }
    const at = await this.writer.submit({ kind: "topology", transactions });
    this.options.logger.info({ at: at.toString(), count: transactions.length }, "sequenced member topology");
    return at;
  }

  /** The member's registration timestamp; undefined before it registered. */
  registeredAt(member: string): Micros | undefined {
    return this.writer.registeredAt(member);
  }

  topology(asOf?: Micros): TopologyEntry[] {
    return this.writer.topology.transactions(asOf);
  }

  /**
   * Removes events below `before` where that is safe; with `force`, past retention holds (never
   * past an acknowledgement): the holds' sets are released and recorded as stranded.
   */
  async prune(
    before: Micros,
    force = false,
  ): Promise<{ pruningLowerBound: Micros; removedEvents: number; stranded: StrandedSet[] }> {
    const result = await this.store.prune(
      before,
      (positions, holds) =>
        checkPruningSafe(
          before,
          { positions: this.admissions.holdingPruning(positions), head: this.writer.head, holds },
          force,
        ),
      nowMicros(),
    );
    this.recent.prune(result.pruningLowerBound);
    this.options.logger.info(
      { before: before.toString(), removedEvents: result.removedEvents },
      "pruned sequencer events",
    );
    if (result.stranded.length > 0) {
      this.options.logger.warn(
        { sets: result.stranded.map((s) => s.setId) },
        "forced prune released retention holds: those backup sets can no longer be restored against this sequencer",
      );
    }
    return result;
  }

  /** Replaces a backup set's retention holds; timestamp 0 stands for the member's registration. */
  async setRetentionHolds(setId: string, holds: readonly { member: string; timestamp: Micros }[]) {
    const resolved = holds.map((h) => ({
      member: h.member,
      timestamp: h.timestamp > 0n ? h.timestamp : (this.writer.registeredAt(h.member) ?? 0n),
    }));
    await replaceHolds(this.store.database, setId, resolved, nowMicros());
  }

  releaseRetentionHolds(setIds: readonly string[]): Promise<number> {
    return releaseHolds(this.store.database, setIds);
  }

  /** A restored member goes back behind its acknowledgement: lower it (never raise it). */
  lowerAcknowledgement(member: string, timestamp: Micros | null): Promise<Micros | null> {
    this.requireMember(member);
    return this.store.lowerAcknowledgement(member, timestamp);
  }

  async status(): Promise<SequencerStatus> {
    const db = this.store.database;
    const [members, pruningLowerBound, holds, stranded] = await Promise.all([
      this.store.memberPositions(),
      this.store.pruningLowerBound(),
      readHolds(db),
      readStranded(db),
    ]);
    const safe = safePruningPoint({
      positions: this.admissions.holdingPruning(members),
      head: this.writer.head,
      holds,
    });
    return {
      sequencerId: this.sequencerId,
      synchronizerId: this.synchronizerId,
      head: this.writer.head,
      pruningLowerBound,
      safePruningTimestamp: safe.timestamp,
      pinnedBySet: safe.pinnedBySet,
      members,
      holds,
      stranded,
      retentionMs: this.options.retentionMs ?? 7 * 86_400_000,
      sequencerTime: maxMicros((this.options.clock ?? nowMicros)(), (this.writer.head ?? 0n) + 1n),
    };
  }

  /**
   * What restore preflight asks about a member (docs/design.md §4.4): can it still subscribe from
   * `timestamp`, and which event did it get there (to compare with a backup's last stored event).
   */
  async memberEvent(member: string, timestamp: Micros): Promise<MemberEventInfo> {
    const [event, pruningLowerBound] = await Promise.all([
      this.store.deliveryAt(member, timestamp),
      this.store.pruningLowerBound(),
    ]);
    return {
      registeredAt: this.writer.registeredAt(member) ?? null,
      pruningLowerBound,
      lastDelivered: this.writer.lastDelivered(member) ?? null,
      head: this.writer.head,
      event: event ?? null,
      writerEpoch: this.epochs.get(member).epoch,
    };
  }

  /** Sequences what is queued, ends every subscription, refuses new submissions. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.writer.stop();
    await this.store.close();
  }
}
