import type { ConnectRouter } from "@connectrpc/connect";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import type {
  NodeKindContext,
  NodeKindDefinition,
  NodeKindRuntime,
  NodeKindStatus,
} from "../common/node-kind.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import { nodeClientTls } from "../common/tls-client.ts";
import { KeyAdmin, keyAdminRoutes, nodeKeyStore } from "../crypto/key-admin.ts";
import type { KeyStore } from "../crypto/key-store.ts";
import { keyStoreMigrations } from "../crypto/key-store-migrations.ts";
import { admissionStatus, notAdmittedReason } from "../sequencer-client/admission-status.ts";
import { clientOwnTopology } from "../sequencer-client/client-own-topology.ts";
import { createSequencerClient } from "../sequencer-client/create-sequencer-client.ts";
import type { EventContext, SequencerClient } from "../sequencer-client/sequencer-client.ts";
import { sequencerClientMigrations } from "../sequencer-client/sequencer-client-migrations.ts";
import type { Db, Tx } from "../storage/db.ts";
import { recordResubscribed } from "../storage/recovery-records.ts";
import { ConfirmationSender } from "./confirmation-sender.ts";
import { DeduplicationRecovery } from "./deduplication-recovery.ts";
import { ledgerApiAuthenticator, requireAuthConfig } from "./ledger-api-auth.ts";
import type { LedgerApiBackend } from "./ledger-api-backend.ts";
import { LedgerApiGuard } from "./ledger-api-guard.ts";
import { ledgerApiRoutes } from "./ledger-api-service.ts";
import { LedgerNotifier } from "./ledger-notifier.ts";
import { ParticipantBackend } from "./participant-backend.ts";
import { participantMigrations } from "./participant-migrations.ts";
import { readLedgerEnd } from "./participant-store.ts";
import { PartyManagement } from "./party-management.ts";
import { RequestProcessor } from "./request-processor.ts";
import { unsequencedInFlightCount } from "./request-store.ts";
import { SubmissionService } from "./submission-service.ts";
import { SynchronizerConnection } from "./synchronizer-connection.ts";
import {
  currentSynchronizer,
  markPartiesAnnounced,
  partiesToAnnounce,
  synchronizerHistory,
  synchronizerMigrations,
} from "./synchronizer-migration.ts";
import { userManagementRoutes } from "./user-management-service.ts";
import { UserStore } from "./user-store.ts";

/** How often the participant asks for a time proof while submissions wait to be sequenced. */
export const TIME_PROOF_INTERVAL_MS = 1000;

export interface ParticipantNodeOptions {
  /** Serves the Ledger API on the node's port (ledger-api-service.ts provides it). */
  readonly ledgerApiRoutes?: (
    backend: LedgerApiBackend,
    guard: LedgerApiGuard,
  ) => (router: ConnectRouter) => void;
  /** Called with each started node (tests reach the backend through it). */
  readonly onCreate?: (node: ParticipantNode) => void;
  /** SubmitAndWait's deadline when the caller sent none; default 5 minutes, as Canton's. */
  readonly commandTrackingTimeoutMs?: number;
}

/** The participant node kind, for node-kinds.ts; tests may build one with other options. */
export function participantNodeKindWith(options: ParticipantNodeOptions = {}): NodeKindDefinition<Db> {
  return {
    kind: "participant",
    migrations: [...participantMigrations, ...sequencerClientMigrations, ...keyStoreMigrations],
    create: (context) => {
      const node = new ParticipantNode(context, options);
      options.onCreate?.(node);
      return node;
    },
  };
}

/**
 * A participant (docs/design.md §1–2): a sequencer-client member that hosts parties, submits and validates
 * confirmation requests, commits on the mediator's verdicts, and serves the Ledger API through
 * `backend`. Its ledger is written only by the event handler (request-processor.ts), in the
 * transaction that records the clean timestamp: after a crash the client replays from clean and
 * the ledger ends up the same. Confirmation responses go out after commit and again on start.
 */
export class ParticipantNode implements NodeKindRuntime {
  readonly client: SequencerClient;
  readonly backend: LedgerApiBackend;
  private readonly log: NodeKindContext["logger"];
  private readonly notifier = new LedgerNotifier();
  private readonly keys: KeyStore;
  private readonly keyAdmin: KeyAdmin;
  private readonly processor: RequestProcessor;
  private readonly sender: ConfirmationSender;
  private readonly submissions: SubmissionService;
  private readonly parties: PartyManagement;
  private readonly recovery: DeduplicationRecovery;
  /** Ledger API authorization (docs/security.md); built only where the Ledger API is served. */
  private readonly users: UserStore;
  private readonly guard: LedgerApiGuard | undefined;
  private timer: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;
  private recoveryLoaded: Promise<void> | undefined;
  private stopped = false;
  /** The fatal error the node stopped on: submissions are refused with it, waiters end with it. */
  private stoppedWith: LockstepError | undefined;

  constructor(
    private readonly context: NodeKindContext<Db>,
    private readonly options: ParticipantNodeOptions = {},
  ) {
    this.log = context.logger.child({ component: "participant" });
    this.users = new UserStore(context.db);
    // A participant serving the Ledger API refuses to start unless its config says which auth.
    if (options.ledgerApiRoutes) {
      const config = context.entry.config;
      const auth = requireAuthConfig(
        context.entry.name,
        "ledger-api" in config ? config["ledger-api"]?.auth : undefined,
      );
      this.guard = new LedgerApiGuard(ledgerApiAuthenticator(auth, this.users), {
        userRightsCheckIntervalMs:
          "ledger-api" in config ? config["ledger-api"]?.["user-rights-check-interval"] : undefined,
      });
    }
    this.keys = nodeKeyStore(context.db, context.entry);
    this.client = createSequencerClient({
      db: context.db,
      keys: this.keys,
      logger: context.logger,
      memberName: context.entry.name,
      sequencerUrl: nodeEndpoint(context.config.synchronizer.sequencer).url,
      clientTls: nodeClientTls(context.config, context.entry),
      identity: context.identity,
      settleWriterEpoch: context.settleWriterEpoch,
      onFatal: (error) => this.stopOn(error),
      // A restore is recorded as checked (restore drop-kept needs it).
      onSubscriptionCheckPassed: () => void recordResubscribed(context.db, this.log),
    });
    this.keyAdmin = new KeyAdmin({
      node: context.entry.name,
      synchronizer: context.config.synchronizer.id,
      db: context.db,
      keys: this.keys,
      topology: clientOwnTopology(this.client),
      logger: context.logger,
    });
    const incarnation = () => context.identity().incarnation;
    this.processor = new RequestProcessor(() => this.client.member, this.log);
    this.sender = new ConfirmationSender(context.db, this.client, this.keys, this.log);
    const config = context.entry.config;
    this.recovery = new DeduplicationRecovery(
      context.db,
      "restore" in config ? config.restore["deduplication-recovery"] : "reject",
      (at) => this.client.topology().parameters(at).ledgerTimeRecordTimeToleranceMs,
      this.log,
      TIME_PROOF_INTERVAL_MS,
    );
    this.submissions = new SubmissionService(context.db, this.client, incarnation, this.log, (commandId) =>
      this.recovery.checkSubmission(commandId),
    );
    this.parties = new PartyManagement(context.db, this.client, this.keys);
    this.backend = new ParticipantBackend(
      context.db,
      () => this.submissions,
      () => this.parties,
      this.notifier,
      incarnation,
      (stage, graceMs) => this.ready(stage, graceMs),
      new SynchronizerConnection(
        context.config.synchronizer.id,
        () => this.client.status(),
        () => this.stoppedWith,
      ),
      options.commandTrackingTimeoutMs,
    );
  }

  routes(router: ConnectRouter): void {
    if (this.options.ledgerApiRoutes && this.guard) {
      this.options.ledgerApiRoutes(this.backend, this.guard)(router);
      userManagementRoutes(this.users, this.guard)(router);
    }
    keyAdminRoutes(() => this.keyAdmin)(router);
  }

  /** Starts in the background: a participant started before its sequencer waits for it. */
  async activate(): Promise<void> {
    this.starting = this.startClient();
  }

  /**
   * Resolves once registered, replayed and subscribed (tests and the Ledger API wait for it).
   * `stage`: "recovery" resolves once the restore's recovery state is loaded (the Ledger API's
   * precheck needs it); "submit" waits for registration at most `graceMs`, then refuses with
   * NOT_CONNECTED_TO_SYNCHRONIZER (retryable) rather than hold a submission while the sequencer is
   * down (a restored node may need it before it can register: writer epoch settling).
   */
  async ready(stage: "registered" | "recovery" | "submit" = "registered", graceMs = 2000): Promise<void> {
    if (!this.starting) throw new LockstepError("NODE_PASSIVE", { node: this.context.entry.name });
    if (stage === "recovery") {
      await this.recoveryLoaded;
      return;
    }
    if (stage === "submit") {
      let timer: NodeJS.Timeout | undefined;
      const started = await Promise.race([
        this.starting.then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), graceMs);
        }),
      ]).finally(() => clearTimeout(timer));
      if (!started) {
        throw new LockstepError("NOT_CONNECTED_TO_SYNCHRONIZER", {
          synchronizer: this.context.config.synchronizer.id,
          reason:
            notAdmittedReason(this.client.status()) ??
            "it is still registering with its sequencer (is the sequencer running?)",
        });
      }
    }
    await this.starting;
    if (this.client.status().member === null) {
      throw new LockstepError("NODE_NOT_RUNNING", {
        node: this.context.entry.name,
        address: "its sequencer",
      });
    }
  }

  private async startClient(): Promise<void> {
    try {
      await this.checkSynchronizer();
      this.recoveryLoaded = this.recovery.load();
      await this.recoveryLoaded;
      await this.client.start((event, tx, ctx) => this.handle(event, tx, ctx));
      await this.announcePartiesAfterMigration();
    } catch (error) {
      if (!this.stopped) this.stopOn(toLockstepError(error));
      return;
    }
    if (this.stopped) return;
    this.log.info({ member: this.client.member }, "participant active");
    // Responses decided before a crash but never seen sequenced go out again.
    this.sender.flush();
    this.timer = setInterval(() => void this.tick(), TIME_PROOF_INTERVAL_MS);
    this.timer.unref();
  }

  /** A participant migrated elsewhere, or not yet migrated here, must not connect (synchronizer-migration.ts). */
  private async checkSynchronizer(): Promise<void> {
    const current = await currentSynchronizer(this.context.db);
    const configured = this.context.config.synchronizer.id;
    if (current !== null && current !== configured) {
      throw new LockstepError("PARTICIPANT_SYNCHRONIZER_MISMATCH", {
        participant: this.context.entry.name,
        current,
        configured,
      });
    }
  }

  /**
   * The first start after a migration: the participant registered with the new synchronizer (its
   * keys, in client.start); its hosted parties are announced there before it serves commands.
   */
  private async announcePartiesAfterMigration(): Promise<void> {
    if ((await partiesToAnnounce(this.context.db)) === undefined) return;
    const announced = await this.parties.announceHosted();
    await markPartiesAnnounced(this.context.db);
    this.log.info({ parties: announced }, "hosted parties announced on the synchronizer after the migration");
  }

  async status(): Promise<NodeKindStatus> {
    const client = this.client.status();
    const { clean, subscriptionCheck } = client;
    const admission = admissionStatus(client);
    return {
      warning: admission.warning,
      position: {
        ...admission.position,
        clean: clean === null ? null : String(clean),
        ledgerEnd: String(await readLedgerEnd(this.context.db)),
        subscriptionCheck,
        // The synchronizers it has been on: the earlier ones inactive since the migration's offset.
        synchronizers: synchronizerHistory(
          this.context.config.synchronizer.id,
          await synchronizerMigrations(this.context.db),
        ),
      },
      deduplicationRecovery: this.recovery.status() as Record<string, unknown> | null,
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.client.stop();
    await this.starting;
    await this.sender.stop();
    this.notifier.notify();
  }

  /** A fatal error: status shows it, and every SubmitAndWait still waiting ends with it at once. */
  private stopOn(error: LockstepError): void {
    this.stoppedWith ??= error;
    this.context.fail(error.toJSON());
    this.notifier.notify();
  }

  private async handle(event: SequencedEvent, tx: Tx, context: EventContext): Promise<void> {
    const outcome = await this.processor.handle(event, tx, context);
    await this.recovery.observe(event, tx);
    if (outcome.refusedMessageId) this.sender.refused(outcome.refusedMessageId);
    if (outcome.responsesToSend || outcome.ledgerChanged || outcome.refusedMessageId)
      void this.afterClean(
        event.timestamp,
        outcome.responsesToSend || outcome.refusedMessageId !== undefined,
      );
  }

  /** Effects outside the database wait until the handler's transaction committed. */
  private async afterClean(timestamp: Micros, flush: boolean): Promise<void> {
    // Rejects once the client failed or stopped: waiters (e.g. SubmitAndWait) are woken all the same.
    await this.client.whenClean(timestamp).catch(() => {});
    this.notifier.notify();
    if (flush) this.sender.flush();
  }

  /**
   * Resends responses without receipt, and asks for time proofs so timely rejections happen and a
   * restored participant's deduplication window closes by itself.
   */
  private async tick(): Promise<void> {
    if (this.stopped || this.client.status().failed) return;
    this.sender.flush();
    try {
      if (this.recovery.active || (await unsequencedInFlightCount(this.context.db)) > 0) {
        const proof = await this.client.requestTimeProof();
        // Requested after start: when it comes back it may anchor the deduplication window.
        this.recovery.timeProofRequested(proof.messageId);
      }
    } catch (error) {
      this.log.warn({ err: error }, "time proof request failed; retrying on the next tick");
    }
  }
}

/** The participant node kind (node-kinds.ts), serving the Ledger API on the node's port. */
export const participantNodeKind: NodeKindDefinition<Db> = participantNodeKindWith({ ledgerApiRoutes });
