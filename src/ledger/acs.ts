import { LockstepError } from "../common/errors.ts";
import type { ActiveContract } from "./contract.ts";
import type { Transaction } from "./transaction.ts";

/** An active contract set: contract id → instance. Treated as immutable; updates return a new map. */
export type Acs = ReadonlyMap<string, ActiveContract>;

/** What a committed transaction changes in an ACS; a Transaction and a TransactionView both are one. */
export type AcsChange = Pick<Transaction, "inputContracts" | "createdContracts" | "archivedContracts">;

/**
 * Activeness (docs/design.md §2 step 4): every input contract must be active, and no created contract may
 * exist already. Returns one error per kind of problem; empty when the change applies.
 */
export function activenessProblems(acs: Acs, change: AcsChange): LockstepError[] {
  const problems: LockstepError[] = [];
  const inactive = new Set<string>();
  for (const id of [...change.inputContracts.map((c) => c.contractId), ...change.archivedContracts]) {
    if (!acs.has(id) && !inactive.has(id)) {
      inactive.add(id);
      problems.push(new LockstepError("CONTRACT_NOT_ACTIVE", { contractId: id }));
    }
  }
  const existing = change.createdContracts.map((c) => c.contractId).filter((id) => acs.has(id));
  if (existing.length > 0) {
    problems.push(
      new LockstepError("LOCAL_VERDICT_CREATES_EXISTING_CONTRACTS", { contractIds: existing.join(", ") }),
    );
  }
  return problems;
}

/**
 * The ACS after a transaction: archived contracts removed, created ones added. Throws
 * CONTRACT_NOT_ACTIVE when an input is not active, LOCAL_VERDICT_CREATES_EXISTING_CONTRACTS when a
 * created id exists already; the given ACS is left unchanged.
 */
export function applyTransaction(acs: Acs, change: AcsChange): Map<string, ActiveContract> {
  const next = new Map(acs);
  applyInPlace(next, change);
  return next;
}

/**
 * The ACS that an ordered list of committed transactions (or one party's views of them) leaves,
 * starting from `initial`; integrity checks compare it with the stored ACS.
 */
export function recomputeAcs(
  updates: Iterable<AcsChange>,
  initial: Acs = new Map(),
): Map<string, ActiveContract> {
  const acs = new Map(initial);
  for (const update of updates) applyInPlace(acs, update);
  return acs;
}

function applyInPlace(acs: Map<string, ActiveContract>, change: AcsChange): void {
  const [problem] = activenessProblems(acs, change);
  if (problem) throw problem;
  for (const id of change.archivedContracts) acs.delete(id);
  for (const contract of change.createdContracts) acs.set(contract.contractId, contract);
}
