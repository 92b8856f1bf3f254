import { setTimeout as sleep } from "node:timers/promises";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import { type Micros, maxMicros, nowMicros } from "../common/time.ts";
import { KeyStore } from "../crypto/key-store.ts";
import {
  type SignedTopologyTransaction,
  signedTopologyToParts,
  type TopologyState,
} from "../crypto/topology.ts";
import { CleanAcknowledger } from "./clean-acknowledger.ts";
import { CleanWaiters } from "./clean-waiters.ts";
import { processRun, replayStored, runFailure } from "./event-pipeline.ts";
import { backoffDelayMs } from "./event-stream-validator.ts";
import { sequencerKeysAt } from "./event-validation.ts";
import { ensureRegistered, reconcileKeysWithSequencer } from "./member-registration.ts";
import { MemberSender } from "./member-sender.ts";
import { MemberStateStore } from "./member-state-store.ts";
import { SequencedEventStore, type StoredEvent } from "./sequenced-event-store.ts";
import type {
  EventHandler,
  Registration,
  SendRequest,
  SequencerClient,
  SequencerClientOptions,
  SequencerClientStatus,
} from "./sequencer-client.ts";
import { acknowledgeRequest, subscribeRequest } from "./sequencer-requests.ts";
import type { SequencerTransport } from "./sequencer-transport.ts";
import { SubscriptionCheck } from "./subscription-check.ts";
import { MAX_RUN, runSubscriptionLoop, type SubscriptionHost } from "./subscription-loop.ts";

export const SEQUENCER_CLIENT_DEFAULTS = {
  ackIntervalMs: 1000,
  reconnectInitialMs: 100,
  reconnectMaxMs: 5000,
  /** How often a member the sequencer has not admitted asks again (an operator may admit it any time). */
  admissionPollMaxMs: 1000,
} as const;

/** How often the refusal is logged again while the member waits to be admitted. */
const NOT_ADMITTED_LOG_EVERY_MS = 60_000;

/**
 * The client's lifecycle: created → registering → replaying → subscribed (connected or
 * reconnecting), ending in failed (fatal error, no retry) or stopped. failed and stopped are final.
 */
export type ClientState =
  | { kind: "created" }
  | { kind: "registering" }
  | { kind: "replaying" }
  | { kind: "subscribed"; connected: boolean }
  | { kind: "failed"; error: LockstepError }
  | { kind: "stopped" };

/** The member's registration, and its topology as of the last processed event. */
interface Registered {
  readonly registration: Registration;
  topology: TopologyState;
}

/** What start() fixes for the rest of the client's life. */
interface Session {
  readonly registered: Registered;
  readonly handler: EventHandler;
}

/**
 * The sequencer client over any SequencerTransport (the runtime half of the split; no RPC here).
 * One subscription loop: receive → validate → store → process (handler + clean timestamp in one
 * transaction), strictly sequential, so the topology used to check an event's signature is always
 * the one after its predecessor.
 */
export class SequencerClientRuntime implements SequencerClient {
  private state: ClientState = { kind: "created" };
  /** Set once register() resolved; the topology moves on with every processed run. */
  private registered: Registered | undefined;
  private registering: Promise<Registration> | undefined;
  private starting: Promise<void> | undefined;
  /** The subscription loop and its acknowledger, once replay is done. */
  private running: { loop: Promise<void>; acknowledger: CleanAcknowledger } | undefined;
  private lastStoredEvent: SequencedEvent | null = null;
  private cleanTimestamp: Micros | null = null;
  private latestTime: Micros | null = null;
  /** The latest transport error while reconnecting (cleared once connected). */
  private lastTransient: LockstepError | null = null;
  private subscribeAttempts = 0;
  /** Set while the sequencer refuses to onboard the member (not on its allow-list). */
  private notAdmitted: { member: string; loggedAt: number } | null = null;
  /** Whether the key store was brought in line with the sequencer's topology in this process. */
  private keysReconciled = false;
  private readonly cleanWaiters = new CleanWaiters();
  private readonly stopController = new AbortController();
  private readonly sender: MemberSender;
  private readonly log: Logger;
  private readonly events: SequencedEventStore;
  private readonly memberState: MemberStateStore;
  private readonly keys: KeyStore;
  /** The resubscription check of the current subscription (probes with time proofs). */
  private readonly check: SubscriptionCheck;

  constructor(
    private readonly transport: SequencerTransport,
    private readonly options: Omit<SequencerClientOptions, "sequencerUrl">,
  ) {
    this.log = options.logger.child({ component: "sequencer-client" });
    this.check = new SubscriptionCheck({
      requestTimeProof: () => this.requestTimeProof(),
      onPassed: (info) => options.onSubscriptionCheckPassed?.(info),
      log: this.log,
    });
    this.events = new SequencedEventStore(options.db);
    this.memberState = new MemberStateStore(options.db);
    this.keys = options.keys ?? new KeyStore(options.db);
    this.sender = new MemberSender({
      transport,
      keys: this.keys,
      register: () => this.register(),
      topology: () => this.topology(),
      sequencerTime: () => this.latestTime,
      writer: () => this.writer(),
    });
  }

  /** The writer epoch and activation every request carries (read per request: settling may raise them). */
  private writer(): { writerEpoch: bigint; writerActivation: string } {
    const { writerEpoch, writerActivation } = this.options.identity();
    return { writerEpoch, writerActivation: writerActivation ?? "" };
  }

  private get final(): boolean {
    return this.state.kind === "failed" || this.state.kind === "stopped";
  }

  get member(): string {
    if (!this.registered) {
      throw new LockstepError("INTERNAL_ERROR", {
        details: "sequencer client member read before register()",
      });
    }
    return this.registered.registration.member;
  }

  register(): Promise<Registration> {
    if (this.registered) return Promise.resolve(this.registered.registration);
    this.registering ??= this.doRegister().finally(() => {
      this.registering = undefined;
    });
    return this.registering;
  }

  private async doRegister(): Promise<Registration> {
    const registration = await ensureRegistered({
      transport: this.transport,
      keys: this.keys,
      memberState: this.memberState,
      memberName: this.options.memberName,
      log: this.log,
      settleWriterEpoch: this.options.settleWriterEpoch,
    });
    const topology = await this.memberState.loadTopology(registration.synchronizerNamespace);
    this.registered = { registration, topology };
    return registration;
  }

  start(handler: EventHandler): Promise<void> {
    if (this.starting)
      throw new LockstepError("INTERNAL_ERROR", { details: "sequencer client started twice" });
    this.starting = this.doStart(handler).catch((error: unknown) => {
      // Registration refused for good (not retryable) or the member's store failed: start()
      // rejects with it (the node reports it) and nothing retries.
      const failure = toLockstepError(error);
      if (!this.final) this.state = { kind: "failed", error: failure };
      this.cleanWaiters.close(failure);
      throw error;
    });
    return this.starting;
  }

  private async doStart(handler: EventHandler): Promise<void> {
    const signal = this.stopController.signal;
    this.enter({ kind: "registering" });
    const registered = await this.registerPatiently();
    if (!registered) return;
    const { registration } = registered;
    const session: Session = { registered, handler };
    this.enter({ kind: "replaying" });
    this.setClean(await this.events.clean());
    this.lastStoredEvent = (await this.events.lastStored())?.event ?? null;
    this.latestTime = this.lastStoredEvent?.timestamp ?? null;
    // Stored before the last stop but not processed: replayed first, in order, exactly once.
    const unprocessed = this.events.unprocessed(this.cleanTimestamp);
    const replayed = await replayStored(unprocessed, MAX_RUN, signal, (run) =>
      this.processOrFail(session, run, true),
    );
    if (replayed === undefined) return;
    if (replayed > 0) this.log.info({ replayed }, "replayed stored events that were not processed");
    if (signal.aborted || !this.enter({ kind: "subscribed", connected: false })) return;
    const acknowledger = new CleanAcknowledger({
      intervalMs: this.options.ackIntervalMs ?? SEQUENCER_CLIENT_DEFAULTS.ackIntervalMs,
      clean: () => this.cleanTimestamp,
      send: async (timestamp, signal) => {
        const signing = await this.keys.activeSigningKey();
        const fields = { member: registration.member, timestamp, ...this.writer() };
        await this.transport.acknowledge(acknowledgeRequest(fields, signing), signal);
      },
      onFatal: (error) => {
        this.fatal(error);
        this.stopController.abort();
      },
      signal,
      log: this.log,
    });
    acknowledger.start();
    this.running = { acknowledger, loop: runSubscriptionLoop(this.subscriptionHost(session)) };
  }

  /** Moves to `next` unless the client already failed or stopped; false then. */
  private enter(next: ClientState): boolean {
    if (this.final) return false;
    this.state = next;
    return true;
  }

  /**
   * A node may start before its sequencer: registration is retried with backoff while the sequencer
   * is unreachable (no network is needed once registered). Undefined when stopped meanwhile.
   */
  private async registerPatiently(): Promise<Registered | undefined> {
    const signal = this.stopController.signal;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.register();
        if (this.notAdmitted) {
          this.log.info({ member: this.notAdmitted.member }, "admitted by the synchronizer: registered");
          this.notAdmitted = null;
          this.lastTransient = null;
        }
        return signal.aborted ? undefined : this.registered;
      } catch (error) {
        if (signal.aborted) return undefined;
        const waitingForAdmission =
          error instanceof LockstepError && error.code === "TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED";
        if (waitingForAdmission) this.noteNotAdmitted(error);
        else if (!(error instanceof LockstepError && error.retryable)) throw error;
        else this.noteTransient(error);
        const delay = waitingForAdmission
          ? Math.min(this.backoff(attempt), SEQUENCER_CLIENT_DEFAULTS.admissionPollMaxMs)
          : this.backoff(attempt);
        try {
          await sleep(delay, undefined, { signal });
        } catch {
          return undefined;
        }
      }
    }
  }

  async send(request: SendRequest): Promise<{ messageId: string }> {
    return this.sender.submit({ ...request, timeProof: false });
  }

  async requestTimeProof(): Promise<{ messageId: string }> {
    return this.sender.submit({ recipients: [], payload: new Uint8Array(0), timeProof: true });
  }

  async submitTopology(transactions: readonly SignedTopologyTransaction[]): Promise<Micros> {
    await this.register();
    const request = { transactions: transactions.map((t) => signedTopologyToParts(t)) };
    return (await this.transport.submitTopology(request)).effectiveAt;
  }

  topology(): TopologyState {
    if (!this.registered) {
      throw new LockstepError("INTERNAL_ERROR", {
        details: "sequencer client topology read before register()",
      });
    }
    return this.registered.topology;
  }

  sequencerTime(): Micros | null {
    return this.latestTime;
  }

  whenClean(timestamp: Micros, signal?: AbortSignal): Promise<void> {
    return this.cleanWaiters.wait(timestamp, signal);
  }

  status(): SequencerClientStatus {
    const registration = this.registered?.registration;
    const error = this.state.kind === "failed" ? this.state.error : this.lastTransient;
    return {
      member: registration?.member ?? null,
      registeredAt: registration?.registeredAt ?? null,
      lastStored: this.lastStoredEvent?.timestamp ?? null,
      clean: this.cleanTimestamp,
      acknowledged: this.running?.acknowledger.acknowledged ?? null,
      connected: this.state.kind === "subscribed" && this.state.connected,
      lastError: error && { code: error.code, message: error.message, remedy: error.remedy },
      failed: this.state.kind === "failed",
      subscribeAttempts: this.subscribeAttempts,
      subscriptionCheck: this.check.state,
      notAdmitted: this.notAdmitted?.member ?? null,
    };
  }

  async loopEnded(): Promise<void> {
    await this.starting?.catch(() => {});
    await this.running?.loop;
  }

  async stop(): Promise<void> {
    this.stopController.abort();
    await this.starting?.catch(() => {});
    await this.running?.acknowledger.stop();
    await this.running?.loop;
    this.enter({ kind: "stopped" });
    this.check.end();
    this.cleanWaiters.close(
      new LockstepError("NODE_NOT_RUNNING", { node: this.options.memberName, address: "its sequencer" }),
    );
  }

  // --- subscription ------------------------------------------------------------------------

  private setConnected(connected: boolean): void {
    if (connected) this.lastTransient = null;
    if (this.state.kind === "subscribed") this.state = { kind: "subscribed", connected };
  }

  private subscriptionHost(session: Session): SubscriptionHost {
    const { registration } = session.registered;
    return {
      transport: this.transport,
      check: this.check,
      log: this.log,
      signal: this.stopController.signal,
      registeredAt: registration.registeredAt,
      ended: () => this.final,
      lastStored: () => this.lastStoredEvent,
      subscribeRequest: async () => {
        if (!this.keysReconciled) {
          await reconcileKeysWithSequencer(
            { transport: this.transport, keys: this.keys, log: this.log },
            registration.member,
          );
          this.keysReconciled = true;
        }
        const signing = await this.keys.activeSigningKey();
        const fromTimestamp = this.lastStoredEvent?.timestamp ?? null;
        const fields = {
          member: registration.member,
          fromTimestamp,
          ...this.writer(),
          issuedAt: nowMicros(),
        };
        this.subscribeAttempts++;
        return subscribeRequest(fields, signing);
      },
      sequencerKeysAt: (t) => sequencerKeysAt(this.topology(), registration.sequencerId, t),
      arrived: (event) => {
        this.latestTime =
          this.latestTime === null ? event.timestamp : maxMicros(this.latestTime, event.timestamp);
      },
      setConnected: (connected) => this.setConnected(connected),
      storeAndProcess: (run) => this.storeAndProcess(session, run),
      transient: (error) => this.noteTransient(error),
      fatal: (error) => this.fatal(error),
      backoffMs: (attempt) => this.backoff(attempt),
    };
  }

  /** Stores a run of validated events in one commit, then processes them in one transaction. */
  private async storeAndProcess(session: Session, events: readonly SequencedEvent[]): Promise<boolean> {
    if (this.state.kind === "failed") return false;
    if (events.length === 0) return true;
    const run = await this.events.storeAll(events);
    this.lastStoredEvent = events[events.length - 1] ?? null;
    return this.processOrFail(session, run, false);
  }

  private backoff(attempt: number): number {
    const initialMs = this.options.reconnect?.initialMs ?? SEQUENCER_CLIENT_DEFAULTS.reconnectInitialMs;
    const maxMs = this.options.reconnect?.maxMs ?? SEQUENCER_CLIENT_DEFAULTS.reconnectMaxMs;
    return backoffDelayMs(attempt, initialMs, maxMs);
  }

  /**
   * Not on the sequencer's allow-list: the node waits to be admitted (`lockstep synchronizer admit`)
   * and asks again, with the refusal in its status (lastError, notAdmitted) and logged as an error
   * at once and every minute after, so it is never silent (docs/security.md "Permissioned synchronizer").
   */
  private noteNotAdmitted(error: LockstepError): void {
    this.lastTransient = error;
    const member = error.metadata.member ?? this.options.memberName;
    const now = Date.now();
    if (this.notAdmitted && now - this.notAdmitted.loggedAt < NOT_ADMITTED_LOG_EVERY_MS) return;
    this.notAdmitted = { member, loggedAt: now };
    this.log.error(
      { code: error.code, member, remedy: error.remedy },
      `not admitted by the synchronizer: ${error.message}; waiting to be admitted`,
    );
  }

  private noteTransient(error: LockstepError): void {
    this.lastTransient = error;
    this.log.warn({ code: error.code }, `sequencer unavailable: ${error.message}; retrying`);
  }

  private fatal(error: LockstepError): void {
    if (this.state.kind === "failed") return;
    this.state = { kind: "failed", error };
    this.check.end();
    this.cleanWaiters.close(error);
    void this.running?.acknowledger.stop();
    this.log.error({ code: error.code, remedy: error.remedy }, `sequencer client stopped: ${error.message}`);
    try {
      this.options.onFatal(error);
    } catch (callbackError) {
      this.log.error({ err: callbackError }, "onFatal callback failed");
    }
  }

  // --- processing ----------------------------------------------------------------------------

  private setClean(clean: Micros | null): void {
    this.cleanTimestamp = clean;
    if (clean !== null) this.cleanWaiters.advanced(clean);
  }

  /**
   * Applies each event's topology change and runs the handler, in order, then records the clean
   * timestamp (the run's last), all in one tx (event-pipeline.ts processRun). False when it failed:
   * the client then stopped for good.
   */
  private async processOrFail(
    session: Session,
    run: readonly StoredEvent[],
    replayed: boolean,
  ): Promise<boolean> {
    const last = run[run.length - 1];
    if (!last) return true;
    const deps = {
      db: this.options.db,
      memberState: this.memberState,
      setClean: (tx: Parameters<EventHandler>[1], t: Micros) => this.events.setClean(tx, t),
      log: this.log,
    };
    const { registered, handler } = session;
    const { registeredAt } = registered.registration;
    try {
      registered.topology = await processRun(deps, run, registered.topology, registeredAt, handler, replayed);
    } catch (failed) {
      this.fatal(runFailure(failed, last));
      this.stopController.abort();
      return false;
    }
    this.setClean(last.event.timestamp);
    return true;
  }
}
