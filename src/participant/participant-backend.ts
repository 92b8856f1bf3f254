import { ERRORS, type ErrorCodeName } from "../common/error-codes.ts";
import { type ErrorJson, LockstepError } from "../common/errors.ts";
import { stakeholdersOf } from "../ledger/contract.ts";
import type { Db } from "../storage/db.ts";
import { CompletionLookup } from "./completion-lookup.ts";
import type {
  ActiveContractsRequest,
  Completion,
  CompletionsRequest,
  ContractView,
  LedgerApiBackend,
  LedgerEnd,
  LedgerEvent,
  PartyDetails,
  SubmitCommands,
  SubmitResult,
  Update,
  UpdatesRequest,
} from "./ledger-api-backend.ts";
import type { LedgerNotifier } from "./ledger-notifier.ts";
import {
  contractsActiveAt,
  readCompletions,
  readLedgerEnd,
  readUpdates,
  type StoredContract,
  type StoredUpdate,
} from "./participant-store.ts";
import type { PartyManagement } from "./party-management.ts";
import type { SubmissionService } from "./submission-service.ts";

/** The participant's LedgerApiBackend over its database (reads) and services (writes). */
export class ParticipantBackend implements LedgerApiBackend {
  private readonly completionLookup: CompletionLookup;

  constructor(
    private readonly db: Db,
    private readonly submissions: () => SubmissionService,
    private readonly parties: () => PartyManagement,
    private readonly notifier: LedgerNotifier,
    private readonly incarnation: () => string,
    /** Resolves once the node is registered with its synchronizer (writes need its member id). */
    private readonly ready: () => Promise<void>,
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
    await this.ready();
    const { submissionId } = await this.submissions().submit(commands);
    return { submissionId };
  }

  async submitAndWait(commands: SubmitCommands, signal?: AbortSignal): Promise<SubmitResult> {
    await this.ready();
    const { submissionId, transaction } = await this.submissions().submit(commands);
    for (;;) {
      const completion = await this.completionLookup.get(submissionId);
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
      if (signal?.aborted)
        throw new LockstepError("REQUEST_TIME_OUT", { reason: "the caller gave up waiting" });
      await this.notifier.wait(signal);
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

  async *updates(request: UpdatesRequest, signal: AbortSignal): AsyncIterable<Update> {
    this.checkIncarnation(request.incarnation);
    let end = await readLedgerEnd(this.db);
    checkOffset(request.beginExclusive, end);
    if (request.endInclusive !== undefined) checkOffset(request.endInclusive, end);
    const parties = new Set(request.parties);
    let cursor = request.beginExclusive;
    while (!signal.aborted) {
      const upTo =
        request.endInclusive !== undefined && request.endInclusive < end ? request.endInclusive : end;
      const batch = await readUpdates(this.db, cursor, upTo, [...parties]);
      for (const stored of batch) {
        if (signal.aborted) return;
        yield toUpdate(stored, parties);
        cursor = stored.offset;
      }
      if (batch.length > 0) continue;
      cursor = upTo;
      if (request.endInclusive !== undefined && cursor >= request.endInclusive) return;
      await this.notifier.wait(signal);
      end = await readLedgerEnd(this.db);
    }
  }

  async *completions(request: CompletionsRequest, signal: AbortSignal): AsyncIterable<Completion> {
    this.checkIncarnation(request.incarnation);
    let end = await readLedgerEnd(this.db);
    checkOffset(request.beginExclusive, end);
    let cursor = request.beginExclusive;
    while (!signal.aborted) {
      const batch = await readCompletions(this.db, request.userId, request.parties, cursor, end);
      for (const { changeId: _changeId, ...completion } of batch) {
        if (signal.aborted) return;
        yield completion;
        cursor = completion.offset;
      }
      if (batch.length > 0) continue;
      cursor = end;
      await this.notifier.wait(signal);
      end = await readLedgerEnd(this.db);
    }
  }

  /** DESIGN §4.5: an application that names an older incarnation must reset its state. */
  private checkIncarnation(requested: string | undefined): void {
    const current = this.incarnation();
    if (requested && requested !== current) {
      throw new LockstepError("PARTICIPANT_INCARNATION_CHANGED", { requested, current });
    }
  }
}

function checkOffset(offset: bigint, ledgerEnd: bigint): void {
  if (offset < 0n) throw new LockstepError("INVALID_ARGUMENT", { details: `offset ${offset} is negative` });
  if (offset > ledgerEnd) throw new LockstepError("OFFSET_AFTER_LEDGER_END", { offset, ledgerEnd });
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
