import { setMaxListeners } from "node:events";
import type { LockstepError } from "../common/errors.ts";
import { uniqueIdentifier } from "../common/ids.ts";
import type { Logger } from "../common/logging.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import { END_OF_TIME, type Micros, nowMicros } from "../common/time.ts";
import type { OwnTopology } from "../crypto/key-rotation.ts";
import { KeyStore } from "../crypto/key-store.ts";
import {
  type SignedTopologyTransactionParts,
  type SynchronizerParametersValues,
  type TopologyEntry,
  TopologyState,
} from "../crypto/topology.ts";
import type { Db } from "../storage/db.ts";
import { AdmissionControl } from "./admission-control.ts";
import { EventNotifier } from "./event-notifier.ts";
import { IntakeGate } from "./intake-gate.ts";
import type { OnboardingMode } from "./member-admissions.ts";
import {
  type AcknowledgeRequestFields,
  MemberSubscriptions,
  type SubscribeRequestFields,
} from "./member-subscriptions.ts";
import { RecentEvents } from "./recent-events.ts";
import { releaseHolds, replaceHolds, type StrandedSet } from "./retention-holds.ts";
import { bootstrapTransactions } from "./sequencer-bootstrap.ts";
import { SequencerKeys } from "./sequencer-keys.ts";
import { checkPruningSafe } from "./sequencer-pruning.ts";
import {
  type MemberEventInfo,
  readMemberEvent,
  readSequencerStatus,
  type SequencerStatus,
} from "./sequencer-status.ts";
import { SequencerStore } from "./sequencer-store.ts";
import { SequencerWriter } from "./sequencer-writer.ts";
import {
  requireMember,
  type SendRequestFields,
  type SignedSubmissionsFields,
  SubmissionIntake,
} from "./submission-intake.ts";
import { TopologyIntake } from "./topology-intake.ts";
import { WriterEpochs } from "./writer-epochs.ts";

export type { SendRequestFields, SignedSubmissionsFields } from "./submission-intake.ts";

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
  private readonly topologyIntake: TopologyIntake;
  private readonly subscriptions: MemberSubscriptions;

  private constructor(
    private readonly options: SequencerOptions,
    private readonly store: SequencerStore,
    private readonly writer: SequencerWriter,
    notifier: EventNotifier,
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
    this.topologyIntake = new TopologyIntake({
      writer,
      admissions: this.admissions,
      sequencerId,
      namespaceKey: keys.namespace,
      mediatorName: options.mediatorName,
      logger: options.logger,
    });
    this.subscriptions = new MemberSubscriptions({
      store,
      writer,
      notifier,
      recent,
      epochs,
      admissions: this.admissions,
      sequencerId,
      stopping: this.stopping.signal,
      clock: options.clock ?? nowMicros,
      batchSize: options.subscriptionBatchSize,
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
    const keys = await SequencerKeys.load(keyStore, initial.namespace);
    const writer = new SequencerWriter({
      store,
      sequencerId,
      sign: (bytes, listed) => keys.sign(bytes, listed),
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
    return this.keys.ownTopology({
      writer: this.writer,
      sequencerId: this.sequencerId,
      logger: this.options.logger,
    });
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
      signingKey: this.keys.signingKey,
      parameters: this.options.parameters,
    });
    if (transactions.length === 0) return;
    const at = await this.writer.submit({ kind: "topology", transactions });
    this.options.logger.info(
      { at: at.toString(), transactions: transactions.map((t) => t.transaction.mapping.type) },
      "sequenced the sequencer's own topology",
    );
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

  /** See MemberSubscriptions.subscribe. */
  subscribe(request: SubscribeRequestFields, signal: AbortSignal): AsyncGenerator<SequencedEvent[]> {
    return this.subscriptions.subscribe(request, signal);
  }

  /** See MemberSubscriptions.acknowledge. */
  acknowledge(request: AcknowledgeRequestFields): Promise<void> {
    return this.subscriptions.acknowledge(request);
  }

  /** See TopologyIntake.registerMember. */
  registerMember(parts: SignedTopologyTransactionParts): Promise<{ member: string; registeredAt: Micros }> {
    return this.topologyIntake.registerMember(parts);
  }

  /** See TopologyIntake.submitTopology. */
  submitTopology(parts: readonly SignedTopologyTransactionParts[]): Promise<Micros> {
    return this.topologyIntake.submitTopology(parts);
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
    requireMember(this.writer, member);
    return this.store.lowerAcknowledgement(member, timestamp);
  }

  status(): Promise<SequencerStatus> {
    return readSequencerStatus({
      store: this.store,
      writer: this.writer,
      admissions: this.admissions,
      ids: { sequencerId: this.sequencerId, synchronizerId: this.synchronizerId },
      retentionMs: this.options.retentionMs ?? 7 * 86_400_000,
      clock: this.options.clock ?? nowMicros,
    });
  }

  /** See readMemberEvent (restore preflight). */
  memberEvent(member: string, timestamp: Micros): Promise<MemberEventInfo> {
    return readMemberEvent(
      { store: this.store, writer: this.writer, epochs: this.epochs },
      member,
      timestamp,
    );
  }

  /** Sequences what is queued, ends every subscription, refuses new submissions. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.writer.stop();
    await this.store.close();
  }
}
