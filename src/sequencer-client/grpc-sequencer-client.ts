import { setTimeout as sleep } from "node:timers/promises";
import type { Client } from "@connectrpc/connect";
import { LockstepError } from "../common/errors.ts";
import { newId } from "../common/ids.ts";
import type { Logger } from "../common/logging.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { type EventPosition, eventFromProto, type SequencedEvent } from "../common/sequenced-event.ts";
import { type Micros, maxMicros, msToMicros, nowMicros } from "../common/time.ts";
import { KeyStore } from "../crypto/key-store.ts";
import type { KeyPair } from "../crypto/keys.ts";
import {
  type SignedTopologyTransaction,
  signedTopologyToParts,
  type TopologyState,
} from "../crypto/topology.ts";
import { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import type { Db } from "../storage/db.ts";
import { CleanAcknowledger } from "./clean-acknowledger.ts";
import { changesTopology, processRun, RunEventFailure, StreamDrain } from "./event-pipeline.ts";
import { backoffDelayMs, describeRefusal, EventStreamValidator } from "./event-stream-validator.ts";
import { ensureRegistered } from "./member-registration.ts";
import { MemberStateStore } from "./member-state-store.ts";
import { FreshRead, SendCoalescer } from "./send-coalescer.ts";
import { SequencedEventStore, type StoredEvent } from "./sequenced-event-store.ts";
import type {
  EventHandler,
  Registration,
  SendRequest,
  SequencerClient,
  SequencerClientOptions,
  SequencerClientStatus,
} from "./sequencer-client.ts";
import { callSequencer, classifySubscriptionError } from "./sequencer-errors.ts";
import {
  acknowledgeRequest,
  signedSend,
  signedSubmissions,
  submissionBytes,
  subscribeRequest,
} from "./sequencer-requests.ts";
import { SubscriptionCheck } from "./subscription-check.ts";

type ErrorInfo = SequencerClientStatus["lastError"];

export const SEQUENCER_CLIENT_DEFAULTS = {
  ackIntervalMs: 1000,
  reconnectInitialMs: 100,
  reconnectMaxMs: 5000,
} as const;

/** At most this many events are stored in one commit and processed in one transaction. */
const MAX_RUN = 200;
/** Received events waiting to be stored before the subscription stream is no longer read. */
const RECEIVE_HIGH_WATER = 4096;

/**
 * The sequencer client over Connect (gRPC). One subscription loop: receive → validate → store →
 * process (handler + clean timestamp in one transaction), strictly sequential, so the topology used
 * to check an event's signature is always the one after its predecessor.
 */
export class GrpcSequencerClient implements SequencerClient {
  private readonly rpc: Client<typeof SequencerService>;
  /** Concurrent send()s share SendBatch calls. */
  private readonly sends: SendCoalescer;
  /** The active signing key for sends, read once for all the sends that ask meanwhile. */
  private readonly signingKey: FreshRead<KeyPair>;
  private readonly db: Db;
  private readonly log: Logger;
  private readonly events: SequencedEventStore;
  private readonly memberState: MemberStateStore;
  private readonly keys: KeyStore;
  private readonly stopController = new AbortController();
  private registrationInfo: Registration | undefined;
  private registering: Promise<Registration> | undefined;
  private topologyState: TopologyState | undefined;
  private handler: EventHandler | undefined;
  private lastStoredEvent: SequencedEvent | null = null;
  private cleanTimestamp: Micros | null = null;
  private latestTime: Micros | null = null;
  private connected = false;
  private lastError: ErrorInfo = null;
  private failed = false;
  private starting: Promise<void> | undefined;
  private subscribeAttempts = 0;
  private loop: Promise<void> | undefined;
  private acknowledger: CleanAcknowledger | undefined;
  /** The resubscription check of the current subscription (probes with time proofs). */
  private readonly check: SubscriptionCheck;

  constructor(private readonly options: SequencerClientOptions) {
    this.db = options.db;
    this.log = options.logger.child({ component: "sequencer-client" });
    this.check = new SubscriptionCheck({
      requestTimeProof: () => this.requestTimeProof(),
      onPassed: (info) => options.onSubscriptionCheckPassed?.(info),
      log: this.log,
    });
    this.rpc = createNodeClient(SequencerService, options.sequencerUrl);
    this.sends = new SendCoalescer({
      sequencerUrl: options.sequencerUrl,
      // The key is read when the batch goes, so a newly activated key is used from then on.
      sendBatch: async (submissions) =>
        this.rpc.sendBatch({
          signed: signedSubmissions(this.member, submissions, await this.signingKey.get()),
        }),
      send: async (submission) => this.rpc.send(signedSend(submission, await this.signingKey.get())),
    });
    this.events = new SequencedEventStore(options.db);
    this.memberState = new MemberStateStore(options.db);
    this.keys = new KeyStore(options.db);
    this.signingKey = new FreshRead(() => this.keys.activeSigningKey());
  }

  /** The writer epoch and activation every request carries (read per request: settling may raise them). */
  private writer(): { writerEpoch: bigint; writerActivation: string } {
    const { writerEpoch, writerActivation } = this.options.identity();
    return { writerEpoch, writerActivation: writerActivation ?? "" };
  }

  get member(): string {
    if (!this.registrationInfo) {
      throw new LockstepError("INTERNAL_ERROR", {
        details: "sequencer client member read before register()",
      });
    }
    return this.registrationInfo.member;
  }

  register(): Promise<Registration> {
    if (this.registrationInfo) return Promise.resolve(this.registrationInfo);
    this.registering ??= this.doRegister().finally(() => {
      this.registering = undefined;
    });
    return this.registering;
  }

  private async doRegister(): Promise<Registration> {
    const registration = await ensureRegistered({
      rpc: this.rpc,
      sequencerUrl: this.options.sequencerUrl,
      keys: this.keys,
      memberState: this.memberState,
      memberName: this.options.memberName,
      log: this.log,
      settleWriterEpoch: this.options.settleWriterEpoch,
    });
    this.topologyState = await this.memberState.loadTopology(registration.synchronizerNamespace);
    this.registrationInfo = registration;
    return registration;
  }

  start(handler: EventHandler): Promise<void> {
    if (this.starting)
      throw new LockstepError("INTERNAL_ERROR", { details: "sequencer client started twice" });
    this.handler = handler;
    this.starting = this.doStart();
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const signal = this.stopController.signal;
    if (!(await this.registerPatiently())) return;
    this.cleanTimestamp = await this.events.clean();
    this.lastStoredEvent = (await this.events.lastStored())?.event ?? null;
    this.latestTime = this.lastStoredEvent?.timestamp ?? null;
    // Stored before the last stop but not processed: replayed first, in order, exactly once.
    let replayed = 0;
    let run: StoredEvent[] = [];
    for await (const stored of this.events.unprocessed(this.cleanTimestamp)) {
      if (signal.aborted) return;
      run.push(stored);
      if (run.length < MAX_RUN) continue;
      await this.processOrFail(run, true);
      if (this.failed) return;
      replayed += run.length;
      run = [];
    }
    if (run.length > 0 && !signal.aborted) {
      await this.processOrFail(run, true);
      if (this.failed) return;
      replayed += run.length;
    }
    if (replayed > 0) this.log.info({ replayed }, "replayed stored events that were not processed");
    if (signal.aborted) return;
    this.acknowledger = new CleanAcknowledger({
      intervalMs: this.options.ackIntervalMs ?? SEQUENCER_CLIENT_DEFAULTS.ackIntervalMs,
      clean: () => this.cleanTimestamp,
      send: async (timestamp, signal) => {
        const signing = await this.keys.activeSigningKey();
        const fields = { member: this.member, timestamp, ...this.writer() };
        await this.rpc.acknowledge(acknowledgeRequest(fields, signing), { signal });
      },
      onFatal: (error) => {
        this.fatal(error);
        this.stopController.abort();
      },
      signal: this.stopController.signal,
      log: this.log,
    });
    this.acknowledger.start();
    this.loop = this.subscriptionLoop();
  }

  /**
   * A node may start before its sequencer: registration is retried with backoff while the sequencer
   * is unreachable (no network is needed once registered). False when stopped meanwhile.
   */
  private async registerPatiently(): Promise<boolean> {
    const signal = this.stopController.signal;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.register();
        return !signal.aborted;
      } catch (error) {
        if (signal.aborted) return false;
        if (!(error instanceof LockstepError && error.retryable)) throw error;
        this.noteTransient(error);
        try {
          await sleep(this.backoff(attempt), undefined, { signal });
        } catch {
          return false;
        }
      }
    }
  }

  async send(request: SendRequest): Promise<{ messageId: string }> {
    return this.submit({ ...request, timeProof: false });
  }

  async requestTimeProof(): Promise<{ messageId: string }> {
    return this.submit({ recipients: [], payload: new Uint8Array(0), timeProof: true });
  }

  async submitTopology(transactions: readonly SignedTopologyTransaction[]): Promise<Micros> {
    await this.register();
    const request = { transactions: transactions.map((t) => signedTopologyToParts(t)) };
    const response = await callSequencer(this.options.sequencerUrl, () => this.rpc.submitTopology(request));
    return response.effectiveAt;
  }

  private async submit(request: SendRequest & { timeProof: boolean }): Promise<{ messageId: string }> {
    const registration = await this.register();
    const messageId = request.messageId ?? newId();
    const now = nowMicros();
    const tolerance = this.topology().parameters(this.latestTime ?? now).ledgerTimeRecordTimeToleranceMs;
    const fields = {
      sender: registration.member,
      messageId,
      recipients: request.recipients,
      payload: request.payload,
      maxSequencingTime: request.maxSequencingTime ?? now + msToMicros(tolerance),
      ...this.writer(),
      timeProof: request.timeProof,
    };
    await this.sends.send(submissionBytes(fields));
    return { messageId };
  }

  topology(): TopologyState {
    if (!this.topologyState) {
      throw new LockstepError("INTERNAL_ERROR", {
        details: "sequencer client topology read before register()",
      });
    }
    return this.topologyState;
  }

  sequencerTime(): Micros | null {
    return this.latestTime;
  }

  status(): SequencerClientStatus {
    return {
      member: this.registrationInfo?.member ?? null,
      registeredAt: this.registrationInfo?.registeredAt ?? null,
      lastStored: this.lastStoredEvent?.timestamp ?? null,
      clean: this.cleanTimestamp,
      acknowledged: this.acknowledger?.acknowledged ?? null,
      connected: this.connected,
      lastError: this.lastError,
      failed: this.failed,
      subscribeAttempts: this.subscribeAttempts,
      subscriptionCheck: this.check.state,
    };
  }

  async stop(): Promise<void> {
    this.stopController.abort();
    await this.starting?.catch(() => {});
    await this.acknowledger?.stop();
    await this.loop;
    this.connected = false;
    this.check.end();
  }

  // --- subscription ------------------------------------------------------------------------

  private async subscriptionLoop(): Promise<void> {
    const signal = this.stopController.signal;
    let attempt = 0;
    while (!signal.aborted && !this.failed) {
      try {
        await this.subscribeOnce(() => {
          attempt = 0;
        });
        this.log.info("the sequencer closed the subscription; reconnecting");
      } catch (error) {
        if (signal.aborted) break;
        const verdict = classifySubscriptionError(error, this.options.sequencerUrl);
        if (verdict.fatal) {
          this.fatal(verdict.error);
          break;
        }
        this.noteTransient(verdict.error);
      }
      this.connected = false;
      try {
        await sleep(this.backoff(attempt++), undefined, { signal });
      } catch {
        break; // stopped
      }
    }
    this.connected = false;
  }

  /** One Subscribe call, from the last stored event inclusive; returns when the stream ends. */
  private async subscribeOnce(onConnected: () => void): Promise<void> {
    const registration = this.registrationInfo as Registration;
    const signing = await this.keys.activeSigningKey();
    const request = subscribeRequest(
      {
        member: registration.member,
        fromTimestamp: this.lastStoredEvent?.timestamp ?? null,
        ...this.writer(),
        issuedAt: nowMicros(),
      },
      signing,
    );
    const validator = new EventStreamValidator(this.lastStoredEvent, (t) =>
      // Keys in force just before the event: a topology event that rotates them is signed with the old ones.
      this.topology()
        .signingKeysOf(registration.sequencerId, t - 1n)
        .map((k) => k.publicKey),
    );
    this.subscribeAttempts++;
    this.check.begin(this.lastStoredEvent !== null);
    const markConnected = () => {
      if (!this.connected) this.log.info({ from: String(request.fromTimestamp ?? "start") }, "subscribed");
      this.connected = true;
      this.lastError = null;
      onConnected();
      this.check.connected();
    };
    const abort = new AbortController();
    const stream = this.rpc.subscribe(request, {
      signal: AbortSignal.any([this.stopController.signal, abort.signal]),
      onHeader: markConnected,
    });
    // Events keep arriving while a run is stored and processed; the next run takes all of them.
    const received = new StreamDrain(
      (async function* () {
        for await (const response of stream) yield response.events;
      })(),
      abort,
      RECEIVE_HIGH_WATER,
      markConnected,
    );
    try {
      for (;;) {
        const protos = await received.take(MAX_RUN);
        if (protos === null || this.stopController.signal.aborted) return;
        const run: SequencedEvent[] = [];
        for (const proto of protos) {
          const event = eventFromProto(proto);
          this.latestTime =
            this.latestTime === null ? event.timestamp : maxMicros(this.latestTime, event.timestamp);
          const expected = validator.expected;
          let verdict: "echo" | "new";
          try {
            verdict = validator.accept(event);
          } catch (error) {
            this.logValidationFailure(error, expected, event);
            await this.storeAndProcess(run); // the valid events before it
            throw error;
          }
          if (verdict === "echo") {
            this.check.echoed();
            continue;
          }
          run.push(event);
          // Later events are checked against the sequencer keys this one may change: process it first.
          if (changesTopology(event, registration.registeredAt)) {
            await this.storeAndProcess(run.splice(0));
            if (this.failed) return;
          }
        }
        await this.storeAndProcess(run);
        if (this.failed) return;
      }
    } finally {
      this.check.end();
      await received.close();
    }
  }

  /** Stores a run of validated events in one commit, then processes them in one transaction. */
  private async storeAndProcess(events: readonly SequencedEvent[]): Promise<void> {
    if (events.length === 0 || this.failed) return;
    const run = await this.events.storeAll(events);
    this.lastStoredEvent = events[events.length - 1] as SequencedEvent;
    await this.processOrFail(run, false);
  }

  private logValidationFailure(
    error: unknown,
    expected: EventPosition | null,
    received: SequencedEvent,
  ): void {
    const code = error instanceof LockstepError ? error.code : "INTERNAL_ERROR";
    this.log.error(
      { code, ...describeRefusal(expected, received) },
      `sequencer event stream refused (${code}): ${(error as Error).message}; not reconnecting`,
    );
  }

  private backoff(attempt: number): number {
    const initialMs = this.options.reconnect?.initialMs ?? SEQUENCER_CLIENT_DEFAULTS.reconnectInitialMs;
    const maxMs = this.options.reconnect?.maxMs ?? SEQUENCER_CLIENT_DEFAULTS.reconnectMaxMs;
    return backoffDelayMs(attempt, initialMs, maxMs);
  }

  private noteTransient(error: LockstepError): void {
    this.lastError = { code: error.code, message: error.message, remedy: error.remedy };
    this.log.warn({ code: error.code }, `sequencer unavailable: ${error.message}; retrying`);
  }

  private fatal(error: LockstepError): void {
    if (this.failed) return;
    this.failed = true;
    this.connected = false;
    this.check.end();
    this.lastError = { code: error.code, message: error.message, remedy: error.remedy };
    void this.acknowledger?.stop();
    this.log.error({ code: error.code, remedy: error.remedy }, `sequencer client stopped: ${error.message}`);
    try {
      this.options.onFatal(error);
    } catch (callbackError) {
      this.log.error({ err: callbackError }, "onFatal callback failed");
    }
  }

  // --- processing ----------------------------------------------------------------------------

  private async processOrFail(run: readonly StoredEvent[], replayed: boolean): Promise<void> {
    try {
      await this.process(run, replayed);
    } catch (failed) {
      const stored = failed instanceof RunEventFailure ? failed.stored : (run[run.length - 1] as StoredEvent);
      const error = failed instanceof RunEventFailure ? failed.cause : failed;
      const failure =
        error instanceof LockstepError
          ? error
          : new LockstepError(
              "SEQUENCER_CLIENT_HANDLER_FAILED",
              {
                timestamp: stored.event.timestamp,
                counter: stored.counter,
                details: error instanceof Error ? error.message : String(error),
              },
              { cause: error },
            );
      this.fatal(failure);
      this.stopController.abort();
    }
  }

  /**
   * Applies each event's topology change and runs the handler, in order, then records the clean
   * timestamp (the run's last), all in one tx (event-pipeline.ts processRun).
   */
  private async process(run: readonly StoredEvent[], replayed: boolean): Promise<void> {
    const last = run[run.length - 1];
    if (!last) return;
    const deps = {
      db: this.db,
      memberState: this.memberState,
      setClean: (tx: Parameters<EventHandler>[1], t: Micros) => this.events.setClean(tx, t),
      log: this.log,
    };
    const registeredAt = (this.registrationInfo as Registration).registeredAt;
    const handler = this.handler as EventHandler;
    this.topologyState = await processRun(deps, run, this.topology(), registeredAt, handler, replayed);
    this.cleanTimestamp = last.event.timestamp;
  }
}
