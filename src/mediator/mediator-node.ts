import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { toLockstepError } from "../common/errors.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import type { NodeKindContext, NodeKindDefinition, NodeKindRuntime } from "../common/node-kind.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import { nodeClientTls } from "../common/tls-client.ts";
import { KeyAdmin, keyAdminRoutes, nodeKeyStore } from "../crypto/key-admin.ts";
import { keyStoreMigrations } from "../crypto/key-store-migrations.ts";
import {
  ApproveSchema,
  RejectionSchema,
  TimeoutSchema,
  type Verdict,
  VerdictSchema,
} from "../gen/lockstep/protocol/v1/confirmation_pb.ts";
import { parseProtocolMessage, protocolPayload } from "../protocol/confirmation-messages.ts";
import { admissionStatus } from "../sequencer-client/admission-status.ts";
import { clientOwnTopology } from "../sequencer-client/client-own-topology.ts";
import { createSequencerClient } from "../sequencer-client/create-sequencer-client.ts";
import type { EventContext, SequencerClient } from "../sequencer-client/sequencer-client.ts";
import { sequencerClientMigrations } from "../sequencer-client/sequencer-client-migrations.ts";
import { UnsequencedSender } from "../sequencer-client/unsequenced-sender.ts";
import type { Db, Tx } from "../storage/db.ts";
import { recordResubscribed } from "../storage/recovery-records.ts";
import { type DecidedVerdict, processMediatorEvent } from "./confirmation-aggregator.ts";
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
 * The mediator (docs/design.md §2 "Transactions"): a sequencer-client member that aggregates confirmation
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

export class MediatorNode implements NodeKindRuntime {
  readonly client: SequencerClient;
  private readonly keyAdmin: KeyAdmin;
  private readonly log: NodeKindContext["logger"];
  /** Sends every decided verdict not yet seen sequenced, after the decision committed. */
  private readonly verdicts: UnsequencedSender<DecidedVerdict>;
  private timer: NodeJS.Timeout | undefined;
  /** The newest event whose handler decided a verdict or saw a receipt: flush once it is clean. */
  private pendingClean: Micros | null = null;
  private stopped = false;
  private starting: Promise<void> | undefined;

  constructor(private readonly context: NodeKindContext<Db>) {
    this.log = context.logger.child({ component: "mediator" });
    const keys = nodeKeyStore(context.db, context.entry);
    this.client = createSequencerClient({
      db: context.db,
      keys,
      logger: context.logger,
      memberName: context.config.synchronizer.mediator.name,
      sequencerUrl: nodeEndpoint(context.config.synchronizer.sequencer).url,
      clientTls: nodeClientTls(context.config, context.entry),
      identity: context.identity,
      settleWriterEpoch: context.settleWriterEpoch,
      onFatal: (error) => context.fail(error.toJSON()),
      // A restore is recorded as checked (restore drop-kept needs it).
      onSubscriptionCheckPassed: () => void recordResubscribed(context.db, this.log),
    });
    this.keyAdmin = new KeyAdmin({
      node: context.entry.name,
      synchronizer: context.config.synchronizer.id,
      db: context.db,
      keys,
      topology: clientOwnTopology(this.client),
      logger: context.logger,
    });
    this.verdicts = new UnsequencedSender({
      unsequenced: () => unsequencedVerdicts(context.db),
      keyOf: (verdict) => verdict.requestId,
      messagePrefix: VERDICT_MESSAGE_PREFIX,
      resendAfterMs: RESEND_AFTER_MS,
      prepare: async () => {},
      send: (verdict, submission) => this.sendVerdict(verdict, submission),
      beforeRound: () => this.waitForClean(),
      what: "verdicts",
      log: this.log,
    });
  }

  routes(router: ConnectRouter): void {
    // The mediator serves no API of its own (everything reaches it through the sequencer) but its keys.
    keyAdminRoutes(() => this.keyAdmin)(router);
  }

  /**
   * Starts in the background, so that a mediator started before its sequencer waits for it (the
   * client retries registration while the sequencer is unreachable) instead of failing.
   */
  async activate(): Promise<void> {
    this.starting = this.startClient();
  }

  private async startClient(): Promise<void> {
    try {
      await this.client.start((event, tx, ctx) => this.handle(event, tx, ctx));
    } catch (error) {
      // Registration refused for good (not retryable).
      this.context.fail(toLockstepError(error).toJSON());
      return;
    }
    if (this.stopped) return;
    this.log.info({ member: this.client.member }, "mediator active");
    // Verdicts decided before a crash but never seen sequenced go out again.
    this.requestFlush();
    this.timer = setInterval(() => void this.tick(), TIME_PROOF_INTERVAL_MS);
    this.timer.unref();
  }

  async status(): Promise<{
    position: { clean: Micros | null; openRequests: number; subscriptionCheck: string; notAdmitted?: string };
    warning?: { code: string; message: string; remedy: string };
  }> {
    const client = this.client.status();
    const { clean, subscriptionCheck } = client;
    const admission = admissionStatus(client);
    return {
      warning: admission.warning,
      position: {
        ...admission.position,
        clean,
        openRequests: await openRequestCount(this.context.db),
        subscriptionCheck,
      },
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    // No new rounds; the current one ends once the client stopped (its wait for clean rejects).
    const sending = this.verdicts.stop();
    await this.client.stop();
    await this.starting;
    clearInterval(this.timer);
    await sending;
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
      recipients: event.recipients,
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
    const requestId = this.verdicts.refused(event.deliverError?.messageId ?? event.messageId);
    if (requestId === undefined) return;
    this.log.warn(
      { requestId: String(requestId), code: event.deliverError?.code },
      `verdict submission refused: ${event.deliverError?.reason}; sending it again`,
    );
    this.requestFlush();
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
    if (!this.stopped) this.verdicts.flush();
  }

  /** Verdicts are read from committed state: wait until the handler's transaction has committed. */
  private async waitForClean(): Promise<void> {
    const target = this.pendingClean;
    if (target === null) return;
    // Rejects once the client failed or stopped: no more waiting then (as before, the round goes on).
    await this.client.whenClean(target).catch(() => {});
    if (this.pendingClean === target) this.pendingClean = null;
  }

  /** One verdict submission (UnsequencedSender: false when it has no recipient left). */
  private async sendVerdict(
    verdict: DecidedVerdict,
    { messageId, resend }: { messageId: string; resend: boolean },
  ): Promise<boolean> {
    // A recipient that has left the synchronizer since the request would make the send fail forever.
    const topology = this.client.topology();
    const head = this.client.sequencerTime() ?? verdict.decidedAt;
    const recipients = verdict.recipients.filter((r) => topology.isMember(r, head));
    if (recipients.length === 0) {
      this.log.warn(
        { requestId: String(verdict.requestId) },
        "no recipient of the verdict is a member any more",
      );
      return false;
    }
    await this.client.send({
      recipients,
      payload: protocolPayload({ kind: "verdict", message: toVerdictMessage(verdict) }),
      messageId,
    });
    this.log.info(
      { requestId: String(verdict.requestId), recipients: verdict.recipients, resend },
      "verdict sent",
    );
    return true;
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
