import { formatDuration } from "../common/duration.ts";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import { type Micros, microsToIso } from "../common/time.ts";
import type { TopologyState } from "../crypto/topology.ts";
import type { ConfirmationRequest } from "../gen/lockstep/protocol/v1/confirmation_pb.ts";
import { partySet } from "../ledger/ledger-value.ts";
import type { Transaction } from "../ledger/transaction.ts";
import { hashSerializedTransaction, parseTransaction } from "../ledger/transaction-codec.ts";
import { validateTransaction } from "../ledger/transaction-validator.ts";
import { type TransactionView, visibleTo } from "../ledger/transaction-view.ts";

/**
 * What an informee participant decides about a confirmation request (docs/design.md §2 step 4, Canton's
 * TransactionProcessingSteps): pure, given the request, its sequencing and this participant's
 * state. First the checks that need no state (payload, model conformance, authorization, ledger
 * time), then activeness against the local ACS and locks.
 */

export interface RequestChecks {
  /** Undefined when the payload does not parse. */
  readonly transaction?: Transaction;
  /** The projection to the parties hosted here; undefined when none is an informee. */
  readonly view?: TransactionView;
  /** The request's confirming parties hosted here: this participant answers for them. */
  readonly confirmingHere: readonly string[];
  /**
   * The payload is self-consistent: it hashes to the root hash, and the request's submitter,
   * ledger time, informees and confirming parties are the transaction's, its act-as parties the
   * sender's. Only then may it be committed. These checks depend on the payload and the topology
   * alone, so every honest informee participant finds the same; else a submitter could declare
   * only its own parties as confirming and have an approval commit at the others' participants.
   */
  readonly authentic: boolean;
  readonly problems: readonly LockstepError[];
}

const MALFORMED_CODES = new Set<string>([
  "LOCAL_VERDICT_MALFORMED_PAYLOAD",
  "LOCAL_VERDICT_MALFORMED_REQUEST",
]);

export function checkRequest(args: {
  readonly request: ConfirmationRequest;
  readonly sender: string;
  /** The request's sequencing timestamp: its record time and id. */
  readonly recordTime: Micros;
  readonly topology: TopologyState;
  readonly self: string;
}): RequestChecks {
  const { request, sender, recordTime, topology, self } = args;
  const hosted = topology.partiesOf(self, recordTime);
  const hostedSet = new Set(hosted);
  const confirmingHere = partySet(request.confirmingParties.filter((p) => hostedSet.has(p)));
  let transaction: Transaction;
  try {
    transaction = parseTransaction(request.transaction);
  } catch (error) {
    return { confirmingHere, authentic: false, problems: [toLockstepError(error)] };
  }
  const view = visibleTo(transaction, hosted);
  const problems: LockstepError[] = [];
  const malformed = (details: string) =>
    problems.push(new LockstepError("LOCAL_VERDICT_MALFORMED_PAYLOAD", { details }));
  if (!hashSerializedTransaction(request.transaction).equals(Buffer.from(request.rootHash)))
    malformed("the root hash is not the hash of the transaction");
  if (request.submittingParticipant !== sender)
    malformed(`the request names ${request.submittingParticipant} as submitter but ${sender} sent it`);
  if (request.ledgerTime !== transaction.ledgerTime)
    malformed("the ledger time differs from the transaction's");
  if (!samePartySet(request.informees, transaction.informees))
    malformed("the informees differ from the transaction's");
  if (!samePartySet(request.confirmingParties, transaction.confirmingParties))
    malformed("the confirming parties differ from the transaction's");
  // Submitter authorization (Canton's AuthorizationValidator): the sender must host every act-as
  // party, else any member could act for anyone ("The submitting participant … is not authorized
  // to submit on behalf of the submitting parties" → LOCAL_VERDICT_MALFORMED_REQUEST).
  const foreignActAs = transaction.command.actAs.filter(
    (p) => topology.participantOf(p, recordTime) !== sender,
  );
  if (foreignActAs.length > 0) {
    problems.push(
      new LockstepError("LOCAL_VERDICT_MALFORMED_REQUEST", {
        details: `the submitting participant ${sender} does not host the act-as parties ${foreignActAs.join(", ")}`,
      }),
    );
  }
  problems.push(...validateTransaction(transaction, { submittingParticipant: sender }).problems);
  // Canton's ledger time / record time check: the request must be sequenced close to its ledger time.
  const toleranceMs = topology.parameters(recordTime).ledgerTimeRecordTimeToleranceMs;
  const delta = transaction.ledgerTime - recordTime;
  if ((delta < 0n ? -delta : delta) > BigInt(toleranceMs) * 1000n) {
    problems.push(
      new LockstepError("LEDGER_TIME_RECORD_TIME_DELTA_TOO_LARGE", {
        ledgerTime: microsToIso(transaction.ledgerTime),
        recordTime: microsToIso(recordTime),
        tolerance: formatDuration(toleranceMs),
      }),
    );
  }
  const authentic = !problems.some((p) => MALFORMED_CODES.has(p.code));
  return { transaction, ...(view ? { view } : {}), confirmingHere, authentic, problems };
}

/** This participant's knowledge of the contracts a view uses. */
export interface ContractState {
  readonly active: ReadonlySet<string>;
  /** Locked by another pending request. */
  readonly locked: ReadonlySet<string>;
  /** Ever stored here (active or archived). */
  readonly known: ReadonlySet<string>;
}

/**
 * Activeness (Canton's conflict detection): every input of a hosted stakeholder must be active
 * here and not locked by a pending request; no created contract may exist already. Inputs without
 * a hosted stakeholder are not in the view: their stakeholders' participants check them.
 */
export function activenessProblems(view: TransactionView, state: ContractState): LockstepError[] {
  const inputs = view.inputContracts.map((c) => c.contractId);
  const problems: LockstepError[] = [];
  const inactive = inputs.filter((id) => !state.active.has(id));
  for (const contractId of inactive) problems.push(new LockstepError("CONTRACT_NOT_ACTIVE", { contractId }));
  const locked = inputs.filter((id) => state.active.has(id) && state.locked.has(id));
  if (locked.length > 0)
    problems.push(new LockstepError("LOCAL_VERDICT_LOCKED_CONTRACTS", { contractIds: locked.join(", ") }));
  const existing = view.createdContracts.map((c) => c.contractId).filter((id) => state.known.has(id));
  if (existing.length > 0) {
    problems.push(
      new LockstepError("LOCAL_VERDICT_CREATES_EXISTING_CONTRACTS", { contractIds: existing.join(", ") }),
    );
  }
  return problems;
}

/** The contracts an approving participant locks until the verdict: the ones the view consumes. */
export function contractsToLock(view: TransactionView): string[] {
  return [...view.archivedContracts];
}

function samePartySet(a: readonly string[], b: readonly string[]): boolean {
  const x = partySet(a);
  const y = partySet(b);
  return x.length === y.length && x.every((p, i) => p === y[i]);
}
