import { EventEmitter, on } from "node:events";
import { LockstepError } from "../../src/common/errors.ts";
import type {
  ActiveContractsRequest,
  Completion,
  CompletionsRequest,
  ContractView,
  LedgerApiBackend,
  LedgerEnd,
  PartyDetails,
  SubmitCommands,
  SubmitResult,
  SynchronizerMigrationMarker,
  Update,
  UpdatesRequest,
} from "../../src/participant/ledger-api-backend.ts";

/**
 * An in-memory LedgerApiBackend for testing the Ledger API service's mapping and streaming on its
 * own (the participant core has its own tests). Creates only; deduplicates on (userId, commandId,
 * actAs) forever; every command commits at the next offset.
 */
export class FakeLedgerBackend implements LedgerApiBackend {
  readonly incarnation = "inc-1";
  readonly calls: SubmitCommands[] = [];
  /** Open updates/completions iterators: the service must end them when the client goes. */
  openStreams = 0;
  private offset = 0n;
  private readonly parties: PartyDetails[] = [];
  private readonly contracts = new Map<string, ContractView>();
  private readonly log: { update: Update; completion: Completion }[] = [];
  private readonly accepted = new Map<string, bigint>();
  private readonly committed = new EventEmitter();

  async allocateParty(hint: string, displayName = ""): Promise<{ party: string }> {
    const party = `${hint}::1220fake`;
    this.parties.push({ party, isLocal: true, participant: "PAR::fake", displayName });
    return { party };
  }

  async listParties(): Promise<PartyDetails[]> {
    return this.parties;
  }

  async submit(commands: SubmitCommands): Promise<{ submissionId: string }> {
    const result = await this.submitAndWait(commands);
    return { submissionId: result.completion.submissionId };
  }

  async submitAndWait(commands: SubmitCommands): Promise<SubmitResult> {
    this.calls.push(commands);
    const changeId = JSON.stringify([commands.userId, commands.commandId, [...commands.actAs].sort()]);
    const previous = this.accepted.get(changeId);
    if (previous !== undefined) throw new LockstepError("DUPLICATE_COMMAND", { completionOffset: previous });
    if (commands.command.kind !== "create")
      throw new LockstepError("CONTRACT_NOT_FOUND", { contractId: "x" });
    const offset = ++this.offset;
    this.accepted.set(changeId, offset);
    const contract: ContractView = {
      contractId: `00${offset.toString(16).padStart(64, "0")}`,
      template: commands.command.template,
      arguments: commands.command.arguments as ContractView["arguments"],
      signatories: [...commands.actAs],
      observers: [],
      createdOffset: offset,
      createdAt: 1_700_000_000_000_123n,
    };
    this.contracts.set(contract.contractId, contract);
    const completion: Completion = {
      commandId: commands.commandId,
      submissionId: commands.submissionId ?? `sub-${offset}`,
      userId: commands.userId,
      actAs: commands.actAs,
      status: { kind: "succeeded" },
      updateId: `upd-${offset}`,
      offset,
      deduplicationPeriod: commands.deduplicationPeriod ?? { kind: "duration", durationMs: 604_800_000 },
      recordTime: 1_700_000_000_000_456n,
    };
    const update: Update = {
      kind: "transaction",
      updateId: `upd-${offset}`,
      commandId: commands.commandId,
      offset,
      effectiveAt: contract.createdAt,
      recordTime: completion.recordTime,
      events: [{ kind: "created", contract, witnessParties: [...commands.actAs] }],
    };
    this.log.push({ update, completion });
    this.committed.emit("commit");
    return {
      updateId: update.updateId,
      offset,
      createdContractIds: [contract.contractId],
      archivedContractIds: [],
      completion,
    };
  }

  async ledgerEnd(request: { incarnation?: string } = {}): Promise<LedgerEnd> {
    this.checkIncarnation(request.incarnation);
    return { offset: this.offset, incarnation: this.incarnation };
  }

  async activeContracts(
    request: ActiveContractsRequest,
  ): Promise<{ offset: bigint; contracts: ContractView[] }> {
    this.checkIncarnation(request.incarnation);
    const at = request.activeAtOffset ?? this.offset;
    if (at > this.offset)
      throw new LockstepError("OFFSET_AFTER_LEDGER_END", { offset: at, ledgerEnd: this.offset });
    const contracts = [...this.contracts.values()].filter(
      (c) => c.createdOffset <= at && c.signatories.some((p) => request.parties.includes(p)),
    );
    return { offset: at, contracts };
  }

  // The fake never migrates: its streams carry no markers.
  updateStream(
    request: UpdatesRequest,
    signal: AbortSignal,
  ): AsyncIterable<Update | SynchronizerMigrationMarker> {
    return this.updates(request, signal);
  }

  completionStream(
    request: CompletionsRequest,
    signal: AbortSignal,
  ): AsyncIterable<Completion | SynchronizerMigrationMarker> {
    return this.completions(request, signal);
  }

  updates(request: UpdatesRequest, signal: AbortSignal): AsyncIterable<Update> {
    return this.follow(request.beginExclusive, request.endInclusive, signal, (e) => e.update);
  }

  completions(request: CompletionsRequest, signal: AbortSignal): AsyncIterable<Completion> {
    return this.follow(request.beginExclusive, undefined, signal, (e) => e.completion);
  }

  private async *follow<T>(
    begin: bigint,
    end: bigint | undefined,
    signal: AbortSignal,
    pick: (entry: { update: Update; completion: Completion }) => T,
  ): AsyncGenerator<T> {
    if (begin > this.offset)
      throw new LockstepError("OFFSET_AFTER_LEDGER_END", { offset: begin, ledgerEnd: this.offset });
    // Listen before reading the log, so that no commit falls between the two.
    const commits = on(this.committed, "commit", { signal });
    let next = begin;
    this.openStreams++;
    try {
      for (;;) {
        for (const entry of this.log.filter((e) => e.update.offset > next)) {
          if (end !== undefined && entry.update.offset > end) return;
          next = entry.update.offset;
          yield pick(entry);
        }
        if (end !== undefined && next >= end) return;
        await commits.next();
      }
    } catch (error) {
      if (signal.aborted) return;
      throw error;
    } finally {
      this.openStreams--;
      await commits.return?.();
    }
  }

  private checkIncarnation(incarnation: string | undefined): void {
    if (incarnation && incarnation !== this.incarnation)
      throw new LockstepError("PARTICIPANT_INCARNATION_CHANGED", {
        requested: incarnation,
        current: this.incarnation,
      });
  }
}
