import type { AcsChange } from "./acs.ts";
import { stakeholdersOf } from "./contract.ts";
import { nodeInformees, type Transaction, type TransactionNode } from "./transaction.ts";

/**
 * A transaction as a set of parties may see it (Daml's ledger privacy model): what a participant
 * stores for the parties it hosts. Usable as an AcsChange for that participant's ACS.
 */
export interface TransactionView extends AcsChange {
  readonly ledgerTime: bigint;
  /** The projection: every node one of the parties is an informee of, with its consequences. */
  readonly nodes: readonly TransactionNode[];
  /** The given parties that are informees of the transaction; sorted. */
  readonly witnesses: readonly string[];
}

/** True when one of the parties is an informee: only then does its participant see the transaction. */
export function isVisibleTo(tx: Pick<Transaction, "informees">, parties: string | Iterable<string>): boolean {
  const set = toSet(parties);
  return tx.informees.some((p) => set.has(p));
}

/**
 * The view for these parties, or undefined when none of them is an informee. Contracts (input,
 * created, archived) are kept only when one of the parties is a stakeholder, as the ACS of a
 * participant holds only its parties' contracts.
 */
export function visibleTo(tx: Transaction, parties: string | Iterable<string>): TransactionView | undefined {
  const set = toSet(parties);
  const witnesses = tx.informees.filter((p) => set.has(p));
  if (witnesses.length === 0) return undefined;
  const sees = (parties: readonly string[]) => parties.some((p) => set.has(p));
  const project = (nodes: readonly TransactionNode[]): TransactionNode[] =>
    nodes.flatMap((node) => {
      if (sees(nodeInformees(node))) return [node];
      return node.kind === "exercise" ? project(node.children) : [];
    });
  const inputContracts = tx.inputContracts.filter((c) => sees(stakeholdersOf(c)));
  const visibleInputs = new Set(inputContracts.map((c) => c.contractId));
  return {
    ledgerTime: tx.ledgerTime,
    nodes: project(tx.nodes),
    witnesses,
    inputContracts,
    createdContracts: tx.createdContracts.filter((c) => sees(stakeholdersOf(c))),
    archivedContracts: tx.archivedContracts.filter((id) => visibleInputs.has(id)),
  };
}

function toSet(parties: string | Iterable<string>): ReadonlySet<string> {
  return new Set(typeof parties === "string" ? [parties] : parties);
}
