import type { ActiveContract } from "./contract.ts";
import type { LedgerRecord, LedgerValue } from "./ledger-value.ts";
import { partySet } from "./ledger-value.ts";

/**
 * Transactions (docs/design.md §2 "Transactions"): the result of interpreting one command. A transaction
 * carries the command it came from and the submitter's identifiers, so that every informee
 * participant can re-interpret it (Canton's model conformance check), and the instances of the
 * contracts it uses, so that a participant that never saw their creation can still re-interpret.
 */

export type CreateCommand = {
  readonly kind: "create";
  readonly template: string;
  readonly arguments: LedgerValue;
};

export type ExerciseCommand = {
  readonly kind: "exercise";
  readonly contractId: string;
  readonly choice: string;
  readonly argument: LedgerValue;
};

/** What an application submits: one create or exercise, acting as some parties. */
export type Command = (CreateCommand | ExerciseCommand) & { readonly actAs: readonly string[] };

/** Who submitted; the transaction seed, and so every contract id, derives from these. */
export interface SubmitterInfo {
  /** The submitting participant's member id; validators compare it with the sequenced sender. */
  readonly participant: string;
  readonly userId: string;
  readonly commandId: string;
  /** Unique per submission, so that resubmitting a command never repeats contract ids. */
  readonly submissionId: string;
}

export interface CreateNode {
  readonly kind: "create";
  readonly contractId: string;
  readonly template: string;
  readonly arguments: LedgerRecord;
  readonly signatories: readonly string[];
  readonly observers: readonly string[];
}

export interface ExerciseNode {
  readonly kind: "exercise";
  readonly contractId: string;
  readonly template: string;
  readonly choice: string;
  readonly argument: LedgerValue;
  /** The choice's controllers. */
  readonly actingParties: readonly string[];
  readonly consuming: boolean;
  /** Of the exercised contract, so that informees follow from the node alone. */
  readonly signatories: readonly string[];
  readonly observers: readonly string[];
  readonly children: readonly TransactionNode[];
}

export type TransactionNode = CreateNode | ExerciseNode;

export interface Transaction {
  readonly version: 1;
  /** The command as interpreted: arguments normalized, act-as parties sorted. */
  readonly command: Command;
  readonly submitter: SubmitterInfo;
  /** Microseconds since the epoch. */
  readonly ledgerTime: bigint;
  /** The root nodes (one per command); exercise nodes hold their consequences. */
  readonly nodes: readonly TransactionNode[];
  /** Instances of the pre-existing contracts the transaction uses, in order of first use. */
  readonly inputContracts: readonly ActiveContract[];
  /** Contracts the transaction creates and does not itself archive. */
  readonly createdContracts: readonly ActiveContract[];
  /** Ids of the pre-existing contracts it archives (the consumed inputs). */
  readonly archivedContracts: readonly string[];
  /** Every stakeholder of every node and every actor; sorted. */
  readonly informees: readonly string[];
  /** The signatories of the used and created contracts, whose approval the mediator needs; sorted. */
  readonly confirmingParties: readonly string[];
}

/** Nodes in pre-order (a node before its children), as node indices count them. */
export function* preorder(nodes: readonly TransactionNode[]): Generator<TransactionNode> {
  for (const node of nodes) {
    yield node;
    if (node.kind === "exercise") yield* preorder(node.children);
  }
}

/**
 * Who must learn of a node, as Daml's ledger privacy model says: the stakeholders of a created
 * contract; for an exercise, the signatories and actors, plus the observers when it is consuming.
 */
export function nodeInformees(node: TransactionNode): string[] {
  if (node.kind === "create") return partySet(node.signatories, node.observers);
  return partySet(node.signatories, node.actingParties, node.consuming ? node.observers : []);
}

export function transactionInformees(nodes: readonly TransactionNode[]): string[] {
  return partySet(...[...preorder(nodes)].map(nodeInformees));
}

/** docs/design.md §2: the confirming parties are the signatories (of exercised and of created contracts). */
export function transactionConfirmingParties(nodes: readonly TransactionNode[]): string[] {
  return partySet(...[...preorder(nodes)].map((n) => n.signatories));
}
