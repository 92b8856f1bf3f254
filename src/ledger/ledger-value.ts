/**
 * Contract and choice arguments are plain JSON values (CLI.md: "Contract arguments travel as JSON
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
 * JSON with sorted keys and no white space: the one encoding of a value that is hashed and signed.
 * Numbers must be finite (JavaScript's number formatting is itself canonical); undefined fields are
 * left out, as JSON.stringify does.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === "string" || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`not a finite number: ${value}`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  throw new TypeError(`not a JSON value: ${typeof value}`);
}

/** Sorted and without duplicates: how party sets are kept everywhere in a transaction. */
export function partySet(...lists: Iterable<string>[]): string[] {
  const all = new Set<string>();
  for (const list of lists) for (const p of list) all.add(p);
  return [...all].sort();
}
