import type { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import type { ClientTlsIdentity } from "../common/tls-client.ts";
import type { KeyStore } from "../crypto/key-store.ts";
import type { SignedTopologyTransaction, TopologyState } from "../crypto/topology.ts";
import type { Db, Tx } from "../storage/db.ts";

/**
 * The sequencer client: how a mediator or participant talks to its sequencer (docs/design.md §2
 * "Sequenced events"). It registers the member, stores every event it receives (with a local
 * counter) before processing it, validates the event stream (fork detection), hands each event to
 * the node's handler inside the transaction that also records the member's clean timestamp,
 * acknowledges that clean timestamp, and sends signed submissions.
 *
 * Use from a NodeKindRuntime (createSequencerClient in create-sequencer-client.ts wires the gRPC
 * transport; the client itself is sequencer-client-runtime.ts, over any SequencerTransport):
 *
 *   migrations: [...kindMigrations, ...sequencerClientMigrations, ...keyStoreMigrations]
 *   create(ctx) → client = createSequencerClient({ db: ctx.db, logger: ctx.logger, memberName: ctx.entry.name,
 *                   sequencerUrl, identity: ctx.identity, onFatal: (e) => ctx.fail(e.toJSON()) })
 *   activate()  → await client.start(handler)
 *   status()    → ({ position: { ...client.status() } })
 *   stop()      → await client.stop()
 *
 * Every event reaches the handler exactly once across restarts, in timestamp order: deliveries,
 * receipts of the member's own submissions, deliver errors (event.deliverError set), time proofs
 * (empty payload) and topology changes (already applied to `context.topology`). A handler that
 * throws stops the client as a fatal error (onFatal); the event stays stored and is replayed on the
 * next start, so the handler must only have effects through `tx`.
 */
export interface SequencerClient {
  /** `memberName::<namespace fingerprint>`; available once register() (or start()) resolved. */
  readonly member: string;
  /**
   * Bootstrap, idempotent: creates the node's keys on first use, learns the synchronizer's topology,
   * registers the member (once; remembered in the member's DB). start() calls it.
   */
  register(): Promise<Registration>;
  /**
   * Registers if needed, replays stored-but-unprocessed events through `handler`, then subscribes
   * from the last stored event and keeps the subscription alive (reconnecting with backoff on
   * transport errors) until stop() or a fatal error. Resolves once the replay is done and the
   * subscription loop runs (not when it is connected). Call once per client.
   */
  start(handler: EventHandler): Promise<void>;
  /**
   * Signs and sends a submission. Resolves when the sequencer accepted it for sequencing; the
   * outcome arrives as an event (a receipt with the same messageId, or one with deliverError).
   * Rejects with the LockstepError the sequencer returned (e.g. STALE_WRITER_EPOCH), or
   * SEQUENCER_UNAVAILABLE when it cannot be reached.
   */
  send(request: SendRequest): Promise<{ messageId: string }>;
  /**
   * Sequences topology transactions signed by their owners (e.g. this participant's
   * PartyToParticipant); resolves with the timestamp from which they are effective. They reach the
   * handler as topology events like any other.
   */
  submitTopology(transactions: readonly SignedTopologyTransaction[]): Promise<Micros>;
  /**
   * Asks for an empty event addressed to this member only; when it arrives it passes through the
   * handler like any event and advances sequencerTime().
   */
  requestTimeProof(): Promise<{ messageId: string }>;
  /** The topology as of the last processed event (registration state before the first). */
  topology(): TopologyState;
  /** The timestamp of the newest event received from the sequencer (stored or not yet processed). */
  sequencerTime(): Micros | null;
  /**
   * Resolves once the clean timestamp is at or past `timestamp`: every event up to it is processed
   * and its handler's transaction committed (e.g. effects outside the database that must follow a
   * commit). Rejects when the client failed (with its fatal error) or stopped, or `signal` aborts.
   */
  whenClean(timestamp: Micros, signal?: AbortSignal): Promise<void>;
  /**
   * Resolves once the subscription loop has ended: after a fatal error (it never retries) or stop().
   * Tests wait on it to show "no retry" deterministically.
   */
  loopEnded(): Promise<void>;
  status(): SequencerClientStatus;
  /** Stops subscription, acknowledgements and pending backoff; waits for the event in progress. */
  stop(): Promise<void>;
}

/**
 * Processes one event. `tx` is the transaction in which the client also records the clean
 * timestamp (and, for topology events, the topology change): everything the handler writes
 * through it commits atomically with "this event is processed".
 */
export type EventHandler = (event: SequencedEvent, tx: Tx, context: EventContext) => Promise<void>;

export interface EventContext {
  /** The event's local counter in the member's event store (0, 1, 2, … per member DB). */
  readonly counter: bigint;
  /** Topology after this event (its topology change, if any, applied). */
  readonly topology: TopologyState;
  /** True when the event was stored before this start and is being replayed from the local store. */
  readonly replayed: boolean;
}

export interface SendRequest {
  recipients: readonly string[];
  /** A serialized EventPayload (sequencer.proto), e.g. from `encodeMessagePayload`. */
  payload: Uint8Array;
  /** Random (UUID) when absent; echoed in the event so the sender can match its receipt. */
  messageId?: string;
  /** Default: now + the synchronizer's ledgerTimeRecordTimeTolerance (60 s by default). */
  maxSequencingTime?: Micros;
}

export interface Registration {
  readonly member: string;
  /** The sequencing timestamp of the member's registration. */
  readonly registeredAt: Micros;
  readonly sequencerId: string;
  readonly synchronizerId: string;
  readonly synchronizerNamespace: string;
}

/** The member's position and connection, for NodeKindStatus.position and health. */
export interface SequencerClientStatus {
  member: string | null;
  registeredAt: Micros | null;
  /** Timestamp of the last stored event. */
  lastStored: Micros | null;
  /** Timestamp of the last fully processed event (the clean timestamp). */
  clean: Micros | null;
  /** Timestamp of the last acknowledgement the sequencer accepted. */
  acknowledged: Micros | null;
  /**
   * The current subscription is established and has delivered (headers or events). A resubscription
   * gets the stored event back at once, so this turns true quickly unless the sequencer lacks it.
   */
  connected: boolean;
  /** The fatal error, or the latest transport error while reconnecting. */
  lastError: { code: string; message: string; remedy: string } | null;
  /** Set once a fatal error stopped the client, or start() rejected (it does not retry). */
  failed: boolean;
  /** How many Subscribe calls this client made (tests assert "no retry" with it). */
  subscribeAttempts: number;
  /**
   * The resubscription check of the current subscription (subscription-check.ts): "passed" once the
   * sequencer gave back the member's last stored event (or, with nothing stored, once subscribed);
   * "pending" before, and again from every reconnect. A node must not act on the synchronizer
   * (e.g. accept submissions) while it is pending.
   */
  subscriptionCheck: "pending" | "passed";
  /**
   * The member id the sequencer refused to onboard (TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED: not on
   * its allow-list) while the client keeps asking; null otherwise. lastError then names the code.
   */
  notAdmitted: string | null;
}

export interface SequencerClientOptions {
  /** The member's own database, migrated with sequencerClientMigrations and keyStoreMigrations. */
  db: Db;
  /** The node's private key store (default: one on `db` with keys in plain). */
  keys?: KeyStore;
  logger: Logger;
  /** The node's name; the member id is `memberName::<namespace fingerprint>`. */
  memberName: string;
  /** e.g. nodeEndpoint(config.synchronizer.sequencer).url. */
  sequencerUrl: string;
  /** https: the node's own client certificate (nodeClientTls), not its process's. */
  clientTls?: ClientTlsIdentity;
  /** The node's current writer epoch and activation (NodeKindContext.identity), sent with every request. */
  identity: () => { writerEpoch: bigint; writerActivation?: string };
  /**
   * NodeKindContext.settleWriterEpoch, run at registration before any other request: raises the
   * epoch above the sequencer's record when a restore could not check it.
   */
  settleWriterEpoch?: (sequencerRecord: () => Promise<bigint>) => Promise<void>;
  /**
   * Called once when the client stops for good: fork detected, events unavailable, stale writer
   * epoch, a handler failure, … The node should show it in its status (NodeKindContext.fail).
   */
  onFatal: (error: LockstepError) => void;
  /**
   * Called each time the resubscription check passes (after start and after every reconnect), e.g.
   * to record that a restored node has checked its history against the sequencer.
   */
  onSubscriptionCheckPassed?: (info: { subscription: number }) => void;
  /** How often the clean timestamp is acknowledged when it changed; default 1000 ms. */
  ackIntervalMs?: number;
  /** Reconnect backoff, doubling from initial to max, jittered; default 100 ms → 5000 ms. */
  reconnect?: { initialMs?: number; maxMs?: number };
}
