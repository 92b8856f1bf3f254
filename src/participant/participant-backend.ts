import { ERRORS, type ErrorCodeName } from "../common/error-codes.ts";
import { type ErrorJson, LockstepError } from "../common/errors.ts";
import { stakeholdersOf } from "../ledger/contract.ts";
import type { Db } from "../storage/db.ts";
import { CompletionLookup } from "./completion-lookup.ts";
import {
  type ActiveContractsRequest,
  type Completion,
  type CompletionsRequest,
  type ContractView,
  isMigrationMarker,
  type LedgerApiBackend,
  type LedgerEnd,
  type LedgerEvent,
  type PartyDetails,
  type SubmitCommands,
  type SubmitResult,
  type SynchronizerMigrationMarker,
  type Update,
  type UpdatesRequest,
} from "./ledger-api-backend.ts";
import type { LedgerNotifier } from "./ledger-notifier.ts";
import { checkOffset, followLedger } from "./ledger-stream.ts";
import {
  contractsActiveAt,
  readCompletions,
  readLedgerEnd,
  readMigrationMarkers,
  readUpdates,
  type StoredContract,
  type StoredUpdate,
} from "./participant-store.ts";
import type { PartyManagement } from "./party-management.ts";
import type { SubmissionService } from "./submission-service.ts";
import { SUBMISSION_CHECK_GRACE_MS, type SynchronizerConnection } from "./synchronizer-connection.ts";

/**
 * How long SubmitAndWait tracks a command when the caller sent no deadline: Canton's command
 * service default (`ledger-api.command-service.default-tracking-timeout`,
 * CommandServiceConfig.DefaultDefaultTrackingTimeout = 5 minutes; ApiCommandService takes the gRPC
 * deadline when the call has one, else this).
 */
export const DEFAULT_COMMAND_TRACKING_TIMEOUT_MS = 5 * 60_000;

/**
 * Answer this much before the caller's own deadline (at most 200 ms, a tenth of it for short ones),
 * so that REQUEST_TIME_OUT with its metadata reaches the caller before its own timer fires.
 */
function deadlineMargin(timeoutMs: number): number {
  return Math.min(200, Math.floor(timeoutMs / 10));
}

/** The participant's LedgerApiBackend over its database (reads) and services (writes). */
export class ParticipantBackend implements LedgerApiBackend {
  private readonly completionLookup: CompletionLookup;
  /** Every stream carries every migration marker, whatever its parties or user. */
  private readonly markers = (after: bigint, upTo: bigint, limit: number) =>
    readMigrationMarkers(this.db, after, upTo, limit);

  constructor(
    private readonly db: Db,
    private readonly submissions: () => SubmissionService,
    private readonly parties: () => PartyManagement,
    private readonly notifier: LedgerNotifier,
    private readonly incarnation: () => string,
    /** Resolves once the node is registered with its synchronizer (writes need its member id). */
    private readonly ready: (stage?: "registered" | "recovery" | "submit", graceMs?: number) => Promise<void>,
    /** Submissions only once the resubscription check passed; waiters end when it stops for good. */
    private readonly connection?: SynchronizerConnection,
    private readonly trackingTimeoutMs = DEFAULT_COMMAND_TRACKING_TIMEOUT_MS,
  ) {
    this.completionLookup = new CompletionLookup(db);
  }

  async allocateParty(partyIdHint: string, displayName?: string): Promise<{ party: string }> {
    await this.ready();
    return this.parties().allocate(partyIdHint, displayName);
  }

  async listParties(): Promise<PartyDetails[]> {
    await this.ready();
    return this.parties().list();
  }

  async submit(commands: SubmitCommands): Promise<{ submissionId: string }> {
    // The refusals that say more than "not connected" first (a restored node's recovery).
    await this.ready("recovery");
    this.submissions().precheck(commands);
    await this.ready("submit");
    await this.connection?.awaitSubmittable();
    const { submissionId } = await this.submissions().submit(commands);
    return { submissionId };
  }

  /**
   * Ends with the outcome, or with the connection's fatal error as soon as it stops for good (e.g.
   * SEQUENCER_FORK_DETECTED), or with REQUEST_TIME_OUT at the deadline (the caller's, else the
   * tracking timeout). Giving up leaves the submission in flight: it completes (or times out by
   * its max sequencing time) when the node learns the outcome, and a resubmission of the same
   * change id meanwhile is SUBMISSION_ALREADY_IN_FLIGHT.
   */
  async submitAndWait(
    commands: SubmitCommands,
    signal?: AbortSignal,
    deadline: { timeoutMs?: number } = {},
  ): Promise<SubmitResult> {
    const started = Date.now();
    const timeoutMs = deadline.timeoutMs ?? this.trackingTimeoutMs;
    const until =
      started + timeoutMs - (deadline.timeoutMs === undefined ? 0 : deadlineMargin(deadline.timeoutMs));
    await this.ready("recovery");
    this.submissions().precheck(commands);
    await this.ready("submit", Math.max(0, Math.min(SUBMISSION_CHECK_GRACE_MS, until - Date.now())));
    // Within the caller's deadline, so that the refusal (not a timeout) reaches it.
    await this.connection?.awaitSubmittable(signal, Math.min(SUBMISSION_CHECK_GRACE_MS, until - Date.now()));
    const { submissionId, changeId, completedBefore, transaction } =
      await this.submissions().submit(commands);
    const expired = AbortSignal.timeout(Math.max(0, until - Date.now()));
    const wake = signal ? AbortSignal.any([signal, expired]) : expired;
    for (;;) {
      const completion = await this.completionLookup.get({
        submissionId,
        changeId,
        afterOffset: completedBefore,
      });
      if (completion) {
        const { changeId: _changeId, ...plain } = completion;
        if (plain.status.kind === "failed") throw errorFromJson(plain.status.error);
        return {
          updateId: plain.updateId ?? "",
          offset: plain.offset,
          createdContractIds: transaction.createdContracts.map((c) => c.contractId),
          archivedContractIds: [...transaction.archivedContracts],
          completion: plain,
        };
      }
      const fatal = this.connection?.fatal();
      if (fatal) throw fatal;
      if (signal?.aborted)
        throw new LockstepError("REQUEST_TIME_OUT", { reason: "the caller gave up waiting", submissionId });
      if (expired.aborted || Date.now() >= until) {
        throw new LockstepError("REQUEST_TIME_OUT", {
          reason: `no outcome of submission ${submissionId} within ${timeoutMs} ms; it stays in flight until the participant learns its outcome`,
          submissionId,
          timeoutMs,
        });
      }
      await this.notifier.wait(wake);
    }
  }

  async ledgerEnd(request: { incarnation?: string } = {}): Promise<LedgerEnd> {
    this.checkIncarnation(request.incarnation);
    return { offset: await readLedgerEnd(this.db), incarnation: this.incarnation() };
  }

  async activeContracts(
    request: ActiveContractsRequest,
  ): Promise<{ offset: bigint; contracts: ContractView[] }> {
    this.checkIncarnation(request.incarnation);
    const end = await readLedgerEnd(this.db);
    const offset = request.activeAtOffset ?? end;
    checkOffset(offset, end);
    const contracts = await contractsActiveAt(
      this.db,
      request.parties,
      offset,
      request.template || undefined,
    );
    return { offset, contracts: contracts.map(toContractView) };
  }

  async *updateStream(
    request: UpdatesRequest,
    signal: AbortSignal,
  ): AsyncIterable<Update | SynchronizerMigrationMarker> {
    this.checkIncarnation(request.incarnation);
    const parties = new Set(request.parties);
    yield* followLedger<Update | SynchronizerMigrationMarker>({
      db: this.db,
      notifier: this.notifier,
      signal,
      beginExclusive: request.beginExclusive,
      endInclusive: request.endInclusive,
      sources: [
        async (after, upTo, limit) =>
          (await readUpdates(this.db, after, upTo, [...parties], limit)).map((u) => toUpdate(u, parties)),
        this.markers,
      ],
    });
  }

  async *updates(request: UpdatesRequest, signal: AbortSignal): AsyncIterable<Update> {
    for await (const item of this.updateStream(request, signal)) if (!isMigrationMarker(item)) yield item;
  }

  async *completionStream(
    request: CompletionsRequest,
    signal: AbortSignal,
  ): AsyncIterable<Completion | SynchronizerMigrationMarker> {
    this.checkIncarnation(request.incarnation);
    yield* followLedger<Completion | SynchronizerMigrationMarker>({
      db: this.db,
      notifier: this.notifier,
      signal,
      beginExclusive: request.beginExclusive,
      sources: [
        async (after, upTo, limit) =>
          (await readCompletions(this.db, request.userId, request.parties, after, upTo, limit)).map(
            ({ changeId: _changeId, ...completion }) => completion,
          ),
        this.markers,
      ],
    });
  }

  async *completions(request: CompletionsRequest, signal: AbortSignal): AsyncIterable<Completion> {
    for await (const item of this.completionStream(request, signal)) if (!isMigrationMarker(item)) yield item;
  }

  /** docs/design.md §4.5: an application that names an older incarnation must reset its state. */
  private checkIncarnation(requested: string | undefined): void {
    const current = this.incarnation();
    if (requested && requested !== current) {
      throw new LockstepError("PARTICIPANT_INCARNATION_CHANGED", { requested, current });
    }
  }
}

function toContractView(c: StoredContract): ContractView {
  return {
    contractId: c.contractId,
    template: c.template,
    arguments: c.arguments,
    signatories: c.signatories,
    observers: c.observers,
    createdOffset: c.createdOffset,
    createdAt: c.createdAt,
  };
}

/** Canton's flat transaction for the requesting parties: archives and creates they are stakeholders of. */
export function toUpdate(u: StoredUpdate, parties: ReadonlySet<string>): Update {
  const witnesses = (stakeholders: readonly string[]) => stakeholders.filter((p) => parties.has(p));
  const events: LedgerEvent[] = [];
  const inputs = new Map(u.view.inputContracts.map((c) => [c.contractId, c]));
  for (const id of u.view.archivedContracts) {
    const contract = inputs.get(id);
    const witnessParties = contract ? witnesses(stakeholdersOf(contract)) : [];
    if (contract && witnessParties.length > 0)
      events.push({ kind: "archived", contractId: id, template: contract.template, witnessParties });
  }
  for (const contract of u.view.createdContracts) {
    const witnessParties = witnesses(stakeholdersOf(contract));
    if (witnessParties.length > 0) {
      events.push({
        kind: "created",
        contract: toContractView({ ...contract, createdOffset: u.offset }),
        witnessParties,
      });
    }
  }
  return {
    kind: "transaction",
    updateId: u.updateId,
    commandId: u.actAs.some((p) => parties.has(p)) ? u.commandId : "",
    offset: u.offset,
    effectiveAt: u.ledgerTime,
    recordTime: u.recordTime,
    events,
  };
}

/** A stored rejection back as the LockstepError that submitAndWait throws. */
export function errorFromJson(json: ErrorJson): LockstepError {
  const known = ERRORS.has(json.code as ErrorCodeName);
  const error = new LockstepError(
    known ? (json.code as ErrorCodeName) : "INTERNAL_ERROR",
    known ? (json.metadata ?? {}) : { details: `${json.code}: ${json.message}` },
  );
  if (known) error.message = json.message;
  return error;
}
