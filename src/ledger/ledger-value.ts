import { canonicalJson } from "../common/canonical-json.ts";

/**
 * Contract and choice arguments are plain JSON values (docs/cli.md: "Contract arguments travel as JSON
 * values"; google.protobuf.Value maps to exactly this). Templates normalize them, so two commands
 * that mean the same thing produce the same bytes.
 */
export type LedgerValue =
  | null
  | boolean
  | number
  | string
  | readonly LedgerValue[]
  | { readonly [key: string]: LedgerValue };

/** A record of named values: what contract and choice arguments are. */
export type LedgerRecord = { readonly [key: string]: LedgerValue };

/**
 * The encoding of ledger values that is hashed and signed (contract ids, transactions): the
 * canonical JSON of common/canonical-json.ts with any finite number (arguments are JSON values).
 */
export function ledgerJson(value: unknown): string {
  return canonicalJson(value, "finite");
}

/** Sorted and without duplicates: how party sets are kept everywhere in a transaction. */
export function partySet(...lists: Iterable<string>[]): string[] {
  const all = new Set<string>();
  for (const list of lists) for (const p of list) all.add(p);
  return [...all].sort();
}
