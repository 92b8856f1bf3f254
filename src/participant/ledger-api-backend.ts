import type { ErrorJson } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";
import type { LedgerRecord, LedgerValue } from "../ledger/ledger-value.ts";

/**
 * The participant's Ledger API as plain TypeScript (docs/cli.md "Ledger API"): what the gRPC/JSON
 * service (ledger-api-service.ts) maps proto messages onto. Offsets are bigint (int64 on the wire),
 * timestamps are microseconds since the epoch, durations milliseconds. Every failure is thrown as a
 * LockstepError whose code is one of the registry (docs/design.md §2), e.g. DUPLICATE_COMMAND,
 * SUBMISSION_ALREADY_IN_FLIGHT, INVALID_DEDUPLICATION_PERIOD, OFFSET_AFTER_LEDGER_END,
 * PARTICIPANT_INCARNATION_CHANGED, CONTRACT_NOT_ACTIVE.
 *
 * Offsets (as Canton's): one sequence from 1 shared by committed transactions (visible to a hosted
 * party), repairs (`lockstep repair add/purge`), rejection completions of this participant's
 * submissions and synchronizer migration markers; the ledger end is the last one, 0 when there is
 * none. Offsets are never reused, and a party's updates therefore may skip offsets.
 */
export interface LedgerApiBackend {
  /** A party `hint::<participant namespace>`, resolved once it is effective in this participant's topology. */
  allocateParty(partyIdHint: string, displayName?: string): Promise<{ party: string }>;
  /** The parties of the synchronizer's topology, local ones marked. */
  listParties(): Promise<PartyDetails[]>;
  /**
   * Interprets, registers the submission in flight (deduplication checked), and sends the
   * confirmation request; resolves then. The outcome arrives on completions().
   */
  submit(commands: SubmitCommands): Promise<{ submissionId: string }>;
  /**
   * submit, then waits for the completion; a rejection is thrown as its LockstepError. Ends at the
   * latest by the deadline (`timeoutMs`, the caller's gRPC deadline, else the tracking timeout)
   * with REQUEST_TIME_OUT, and at once with the error the sequencer connection stopped on.
   */
  submitAndWait(
    commands: SubmitCommands,
    signal?: AbortSignal,
    deadline?: { timeoutMs?: number },
  ): Promise<SubmitResult>;
  ledgerEnd(request?: { incarnation?: string }): Promise<LedgerEnd>;
  /** Contracts of which one of the parties is a stakeholder, at `activeAtOffset` (default: the ledger end). */
  activeContracts(request: ActiveContractsRequest): Promise<{ offset: bigint; contracts: ContractView[] }>;
  /**
   * What GetUpdates streams: transactions after beginExclusive in which one of the parties is an
   * informee, projected to them, and every synchronizer migration marker (whatever the parties),
   * in offset order; ends after endInclusive, else stays open until `signal` aborts. Validation
   * errors (OFFSET_AFTER_LEDGER_END, PARTICIPANT_INCARNATION_CHANGED) are thrown by the first next().
   */
  updateStream(
    request: UpdatesRequest,
    signal: AbortSignal,
  ): AsyncIterable<Update | SynchronizerMigrationMarker>;
  /** updateStream without the markers, for callers that follow transactions only. */
  updates(request: UpdatesRequest, signal: AbortSignal): AsyncIterable<Update>;
  /**
   * What CompletionStream streams: completions of the user's commands acting as one of the
   * parties, and every synchronizer migration marker (whatever the user), after beginExclusive, in
   * offset order; stays open.
   */
  completionStream(
    request: CompletionsRequest,
    signal: AbortSignal,
  ): AsyncIterable<Completion | SynchronizerMigrationMarker>;
  /** completionStream without the markers. */
  completions(request: CompletionsRequest, signal: AbortSignal): AsyncIterable<Completion>;
}

export interface LedgerEnd {
  readonly offset: bigint;
  /** Changes whenever the participant is restored from a backup (node_state). */
  readonly incarnation: string;
}

export interface PartyDetails {
  readonly party: string;
  readonly isLocal: boolean;
  /** The hosting participant's member id. */
  readonly participant: string;
  readonly displayName: string;
}

/** Canton's deduplication period: a duration back from now, or "after this offset". */
export type DeduplicationPeriod =
  | { readonly kind: "duration"; readonly durationMs: number }
  | { readonly kind: "offset"; readonly offset: bigint };

export type CommandSpec =
  | { readonly kind: "create"; readonly template: string; readonly arguments: LedgerValue }
  | {
      readonly kind: "exercise";
      readonly contractId: string;
      readonly choice: string;
      /** Undefined means the empty record (as for Archive). */
      readonly argument?: LedgerValue;
    };

export interface SubmitCommands {
  readonly userId: string;
  readonly commandId: string;
  /** Generated when absent or empty. */
  readonly submissionId?: string;
  /** Must be hosted here; the change id is (userId, commandId, sorted actAs). */
  readonly actAs: readonly string[];
  readonly readAs?: readonly string[];
  /** Default: the synchronizer's maxDeduplicationDuration (7 days). */
  readonly deduplicationPeriod?: DeduplicationPeriod;
  readonly minLedgerTimeAbs?: Micros;
  readonly minLedgerTimeRelMs?: number;
  /** Exactly this ledger time instead of the participant's clock (tests of the tolerance). */
  readonly ledgerTime?: Micros;
  /** When it names an older incarnation: PARTICIPANT_INCARNATION_CHANGED. */
  readonly incarnation?: string;
  readonly command: CommandSpec;
}

export type CompletionStatus =
  | { readonly kind: "succeeded" }
  | { readonly kind: "failed"; readonly error: ErrorJson };

export interface Completion {
  readonly commandId: string;
  readonly submissionId: string;
  readonly userId: string;
  readonly actAs: readonly string[];
  readonly status: CompletionStatus;
  /** Set when it succeeded. */
  readonly updateId?: string;
  /** Of the completion (and of the update, when it succeeded). */
  readonly offset: bigint;
  /** The period the participant actually used. */
  readonly deduplicationPeriod: DeduplicationPeriod;
  /** The sequencer timestamp at which the outcome was decided. */
  readonly recordTime: Micros;
}

export interface SubmitResult {
  readonly updateId: string;
  readonly offset: bigint;
  readonly createdContractIds: readonly string[];
  readonly archivedContractIds: readonly string[];
  readonly completion: Completion;
}

export interface ContractView {
  readonly contractId: string;
  readonly template: string;
  readonly arguments: LedgerRecord;
  readonly signatories: readonly string[];
  readonly observers: readonly string[];
  /** The offset of the update that created it (here). */
  readonly createdOffset: bigint;
  /** The ledger time of the creating transaction. */
  readonly createdAt: Micros;
}

export interface ActiveContractsRequest {
  readonly parties: readonly string[];
  /** Undefined: the ledger end; 0n: the empty ledger; after the ledger end: OFFSET_AFTER_LEDGER_END. */
  readonly activeAtOffset?: bigint;
  readonly incarnation?: string;
  readonly template?: string;
}

export type LedgerEvent =
  | {
      readonly kind: "created";
      readonly contract: ContractView;
      /** The requesting parties that are stakeholders. */
      readonly witnessParties: readonly string[];
    }
  | {
      readonly kind: "archived";
      readonly contractId: string;
      readonly template: string;
      readonly witnessParties: readonly string[];
    };

/**
 * A committed transaction projected to the requesting parties (Canton's flat transaction). A repair
 * (`lockstep repair add/purge`) streams as one too, without a command (commandId "").
 */
export interface Update {
  readonly kind: "transaction";
  readonly updateId: string;
  /** Set only when one of the requesting parties submitted it (act-as); else "". */
  readonly commandId: string;
  readonly offset: bigint;
  /** The ledger time. */
  readonly effectiveAt: Micros;
  /** The sequencing timestamp of the confirmation request. */
  readonly recordTime: Micros;
  readonly events: readonly LedgerEvent[];
}

/**
 * The participant moved to another synchronizer (`lockstep repair migrate-synchronizer`), at an
 * offset of its own: updates before it committed on `fromSynchronizerId`, after it on
 * `toSynchronizerId`. Not party-filtered: every subscriber must learn where the history changed.
 */
export interface SynchronizerMigrationMarker {
  readonly kind: "synchronizer-migration";
  readonly offset: bigint;
  readonly fromSynchronizerId: string;
  readonly toSynchronizerId: string;
  /** The migrating host's clock (no sequencer orders a migration). */
  readonly migratedAt: Micros;
  /** Forced past in-flight submissions or unfinished requests. */
  readonly forced: boolean;
  readonly contractsMoved: bigint;
  /** The submissions a forced migration completed as abandoned (each has its own failed completion). */
  readonly abandonedCommandIds: readonly string[];
}

/** Tells a marker from what it is interleaved with (completions carry no `kind`). */
export function isMigrationMarker(item: object): item is SynchronizerMigrationMarker {
  return "kind" in item && item.kind === "synchronizer-migration";
}

export interface UpdatesRequest {
  /** 0n for all; after the ledger end: OFFSET_AFTER_LEDGER_END. */
  readonly beginExclusive: bigint;
  readonly endInclusive?: bigint;
  readonly parties: readonly string[];
  readonly incarnation?: string;
}

export interface CompletionsRequest {
  readonly beginExclusive: bigint;
  readonly userId: string;
  readonly parties: readonly string[];
  readonly incarnation?: string;
}
