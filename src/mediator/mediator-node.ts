import { create } from "@bufbuild/protobuf";
import { toLockstepError } from "../common/errors.ts";
import type { NodeKindContext, NodeKindDefinition, NodeKindRuntime } from "../common/node-kind.ts";
import { nodeBaseUrl } from "../common/rpc-client.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import { keyStoreMigrations } from "../crypto/key-store-migrations.ts";
import {
  ApproveSchema,
  RejectionSchema,
  TimeoutSchema,
  type Verdict,
  VerdictSchema,
} from "../gen/lockstep/protocol/v1/confirmation_pb.ts";
import { recordResubscribed } from "../node/node-state.ts";
import {
  createSequencerClient,
  type EventContext,
  type SequencerClient,
} from "../sequencer-client/sequencer-client.ts";
import { sequencerClientMigrations } from "../sequencer-client/sequencer-client-migrations.ts";
import type { Db, Tx } from "../storage/db.ts";
import { type DecidedVerdict, processMediatorEvent } from "./confirmation-aggregator.ts";
import { parseProtocolMessage, protocolPayload } from "./confirmation-messages.ts";
import {
  DbRequestStore,
  markVerdictSequenced,
  mediatorMigrations,
  openRequestCount,
  unsequencedVerdicts,
} from "./mediator-store.ts";

/** How often the mediator asks for a time proof while requests are open, so timeouts fire by themselves. */
export const TIME_PROOF_INTERVAL_MS = 1000;
/** A verdict submission without receipt or deliver error after this long is sent again. */
const RESEND_AFTER_MS = 120_000;
const VERDICT_MESSAGE_PREFIX = "verdict-";

/**
 * The mediator (DESIGN §2 "Transactions"): a sequencer-client member that aggregates confirmation
 * requests and responses into verdicts (confirmation-aggregator.ts) and sends each verdict through
 * the sequencer to the request's informee participants.
 *
 * Crash safety: the aggregation state is written by the event handler in the transaction that
 * records the clean timestamp, so after a crash the sequencer client's replay from clean rebuilds
 * exactly the same state and verdicts. Sending happens after commit and is at-least-once: a verdict
 * stays "unsequenced" until the mediator processes the receipt of its own submission, and every
 * unsequenced verdict is sent again on start (and when its submission failed). A participant may
 * therefore receive a second, identical verdict for a request and must treat it as a no-op.
 */
export const mediatorNodeKind: NodeKindDefinition<Db> = {
  kind: "mediator",
  migrations: [...mediatorMigrations, ...sequencerClientMigrations, ...keyStoreMigrations],
  create: (context) => new MediatorNode(context),
};

interface InFlight {
  readonly messageId: string;
  readonly sentAt: number;
}

export class MediatorNode implements NodeKindRuntime {
  readonly client: SequencerClient;
  private readonly log: NodeKindContext["logger"];
  /** Verdict submissions sent and not yet seen sequenced or refused, by request id. */
  private readonly inFlight = new Map<Micros, InFlight>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private flushAgain = false;
  /** The newest event whose handler decided a verdict or saw a receipt: flush once it is clean. */
  private pendingClean: Micros | null = null;
  private stopped = false;
  private starting: Promise<void> | undefined;

  constructor(private readonly context: NodeKindContext<Db>) {
    this.log = context.logger.child({ component: "mediator" });
    this.client = createSequencerClient({
      db: context.db,
      logger: context.logger,
      memberName: context.config.synchronizer.mediator.name,
      sequencerUrl: nodeBaseUrl(context.config.synchronizer.sequencer.port),
      identity: context.identity,
      settleWriterEpoch: context.settleWriterEpoch,
      onFatal: (error) => context.fail(error.toJSON()),
      // A restore is recorded as checked (restore drop-kept needs it).
      onSubscriptionCheckPassed: () => void recordResubscribed(context.db, this.log),
    });
  }

  routes(): void {
    // The mediator serves no API of its own: everything reaches it through the sequencer.
  }

  /**
   * Starts in the background, so that a mediator started before its sequencer waits for it
   * (retrying registration while the sequencer is unreachable) instead of failing.
   */
  async activate(): Promise<void> {
    this.starting = this.startClient();
  }

  private async startClient(): Promise<void> {
    for (let attempt = 0; !(await this.tryRegister(attempt)); attempt++) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(100 * 2 ** attempt, 5000)));
      if (this.stopped) return;
    }
    if (this.stopped) return;
    try {
      await this.client.start((event, tx, ctx) => this.handle(event, tx, ctx));
    } catch (error) {
      this.context.fail(toLockstepError(error).toJSON());
      return;
    }
    this.log.info({ member: this.client.member }, "mediator active");
    // Verdicts decided before a crash but never seen sequenced go out again.
    this.requestFlush();
    this.timer = setInterval(() => void this.tick(), TIME_PROOF_INTERVAL_MS);
    this.timer.unref();
  }

  /** True once registered (or stopped); false to retry; a non-retryable error fails the node. */
  private async tryRegister(attempt: number): Promise<boolean> {
    if (this.stopped) return true;
    try {
      await this.client.register();
      return true;
    } catch (error) {
      const failure = toLockstepError(error);
      if (!failure.retryable) {
        this.context.fail(failure.toJSON());
        this.stopped = true;
        return true;
      }
      if (attempt % 10 === 0)
        this.log.warn({ code: failure.code }, `waiting for the sequencer: ${failure.message}`);
      return false;
    }
  }

  async status(): Promise<{
    position: { clean: Micros | null; openRequests: number; subscriptionCheck: string };
  }> {
    const { clean, subscriptionCheck } = this.client.status();
    return {
      position: { clean, openRequests: await openRequestCount(this.context.db), subscriptionCheck },
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.starting;
    clearInterval(this.timer);
    await this.client.stop();
    await this.flushing;
  }

  /** The event handler: runs inside the client's transaction, so it writes only through `tx`. */
  private async handle(event: SequencedEvent, tx: Tx, context: EventContext): Promise<void> {
    const own = event.sender === this.client.member;
    if (event.deliverError) {
      if (own) this.onOwnDeliverError(event);
      await processMediatorEvent(new DbRequestStore(tx), context.topology, event);
      return;
    }
    const message = parseProtocolMessage(event.payload);
    if (own && message?.kind === "verdict") {
      await markVerdictSequenced(tx, message.message.requestId, event.timestamp);
      this.pendingClean = event.timestamp;
    }
    const result = await processMediatorEvent(new DbRequestStore(tx), context.topology, {
      timestamp: event.timestamp,
      sender: event.sender,
      message,
    });
    if (result.ignored) this.log.warn({ at: String(event.timestamp) }, `ignored: ${result.ignored}`);
    for (const verdict of result.verdicts) {
      this.log.info(
        { requestId: String(verdict.requestId), outcome: verdict.outcome.kind, replayed: context.replayed },
        "verdict decided",
      );
      this.pendingClean = event.timestamp;
    }
    if (this.pendingClean === event.timestamp) this.requestFlush();
  }

  /** The sequencer refused a verdict submission (e.g. its max sequencing time passed): send it again. */
  private onOwnDeliverError(event: SequencedEvent): void {
    const messageId = event.deliverError?.messageId ?? event.messageId;
    for (const [requestId, sent] of this.inFlight) {
      if (sent.messageId !== messageId) continue;
      this.log.warn(
        { requestId: String(requestId), code: event.deliverError?.code },
        `verdict submission refused: ${event.deliverError?.reason}; sending it again`,
      );
      this.inFlight.delete(requestId);
      this.requestFlush();
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped || this.client.status().failed) return;
    this.requestFlush();
    try {
      if ((await openRequestCount(this.context.db)) > 0) await this.client.requestTimeProof();
    } catch (error) {
      this.log.warn({ err: error }, "time proof request failed; retrying on the next tick");
    }
  }

  /** Coalesces flushes: one runs at a time, and one more after it if asked meanwhile. */
  private requestFlush(): void {
    if (this.stopped) return;
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = undefined;
    });
  }

  private async flushLoop(): Promise<void> {
    do {
      this.flushAgain = false;
      await this.waitForClean();
      try {
        await this.sendUnsequenced();
      } catch (error) {
        this.log.warn({ err: error }, "sending verdicts failed; retrying on the next tick");
      }
    } while (this.flushAgain && !this.stopped);
  }

  /** Verdicts are read from committed state: wait until the handler's transaction has committed. */
  private async waitForClean(): Promise<void> {
    const target = this.pendingClean;
    if (target === null) return;
    while (!this.stopped && !this.client.status().failed) {
      const clean = this.client.status().clean;
      if (clean !== null && clean >= target) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    if (this.pendingClean === target) this.pendingClean = null;
  }

  private async sendUnsequenced(): Promise<void> {
    const verdicts = await unsequencedVerdicts(this.context.db);
    const unsequenced = new Set(verdicts.map((v) => v.requestId));
    // Sequenced since (its receipt committed): no longer in flight.
    for (const requestId of this.inFlight.keys())
      if (!unsequenced.has(requestId)) this.inFlight.delete(requestId);
    // All at once: the sequencer client coalesces concurrent sends into one SendBatch call.
    const results = await Promise.allSettled(verdicts.map((verdict) => this.sendVerdict(verdict)));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  private async sendVerdict(verdict: DecidedVerdict): Promise<void> {
    if (this.stopped) return;
    const sent = this.inFlight.get(verdict.requestId);
    if (sent && Date.now() - sent.sentAt < RESEND_AFTER_MS) return;
    // A recipient that has left the synchronizer since the request would make the send fail forever.
    const topology = this.client.topology();
    const head = this.client.sequencerTime() ?? verdict.decidedAt;
    const recipients = verdict.recipients.filter((r) => topology.isMember(r, head));
    if (recipients.length === 0) {
      this.log.warn(
        { requestId: String(verdict.requestId) },
        "no recipient of the verdict is a member any more",
      );
      return;
    }
    const messageId = `${VERDICT_MESSAGE_PREFIX}${verdict.requestId}-${Date.now().toString(36)}`;
    this.inFlight.set(verdict.requestId, { messageId, sentAt: Date.now() });
    try {
      await this.client.send({
        recipients,
        payload: protocolPayload({ kind: "verdict", message: toVerdictMessage(verdict) }),
        messageId,
      });
      this.log.info(
        {
          requestId: String(verdict.requestId),
          recipients: verdict.recipients,
          resend: sent !== undefined,
        },
        "verdict sent",
      );
    } catch (error) {
      this.inFlight.delete(verdict.requestId);
      throw error;
    }
  }
}

/** The wire form of a decided verdict; the same decision always gives the same message. */
export function toVerdictMessage(verdict: DecidedVerdict): Verdict {
  const message = create(VerdictSchema, { requestId: verdict.requestId, rootHash: verdict.rootHash });
  const o = verdict.outcome;
  if (o.kind === "approve") message.outcome = { case: "approve", value: create(ApproveSchema) };
  else if (o.kind === "reject") {
    const value = create(RejectionSchema, { code: o.code, reason: o.reason, participant: o.participant });
    message.outcome = { case: "reject", value };
  } else {
    const value = create(TimeoutSchema, {
      code: o.code,
      reason: o.reason,
      unresponsiveParties: [...o.unresponsiveParties],
    });
    message.outcome = { case: "timeout", value };
  }
  return message;
}
