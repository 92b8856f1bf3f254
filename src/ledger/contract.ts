import { hashFields } from "../common/hash.ts";
import { type LedgerRecord, ledgerJson, partySet } from "./ledger-value.ts";

/**
 * A contract instance as the ACS keeps it. The id authenticates the rest (as Canton's authenticated
 * contract ids do): a validator that learns an input contract only from a transaction can check the
 * instance is the one that was created, without having seen its creation.
 */
export interface ActiveContract {
  readonly contractId: string;
  readonly template: string;
  /** Canonical arguments, as the template normalized them. */
  readonly arguments: LedgerRecord;
  /** Sorted, without duplicates. */
  readonly signatories: readonly string[];
  /** Sorted, without duplicates, without signatories. */
  readonly observers: readonly string[];
  /** The ledger time of the creating transaction, in microseconds. */
  readonly createdAt: bigint;
  /** Hex; derived from the transaction seed and the node index, so ids never repeat. */
  readonly salt: string;
}

/** Contract ids are version "00" followed by the hex SHA-256 over the contract's content. */
const CONTRACT_ID_PATTERN = /^00[0-9a-f]{64}$/;

export function isContractId(id: string): boolean {
  return CONTRACT_ID_PATTERN.test(id);
}

export function deriveContractId(contract: Omit<ActiveContract, "contractId">): string {
  const digest = hashFields(
    "lockstep-contract-id-v1",
    contract.salt,
    contract.template,
    ledgerJson(contract.arguments),
    ledgerJson(contract.signatories),
    ledgerJson(contract.observers),
    contract.createdAt.toString(),
  );
  return `00${digest.toString("hex")}`;
}

/** True when the id is the one derived from the instance's content. */
export function contractIdMatches(contract: ActiveContract): boolean {
  return contract.contractId === deriveContractId(contract);
}

/** Signatories and observers: the parties that see the contract and keep it in their ACS. */
export function stakeholdersOf(contract: Pick<ActiveContract, "signatories" | "observers">): string[] {
  return partySet(contract.signatories, contract.observers);
}

/** Equal content, field for field (ids included). */
export function sameContract(a: ActiveContract, b: ActiveContract): boolean {
  return canonicalContract(a) === canonicalContract(b);
}

function canonicalContract(c: ActiveContract): string {
  return ledgerJson({ ...c, createdAt: c.createdAt.toString() });
}
