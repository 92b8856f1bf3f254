/**
 * The one canonical encoding of bytes that are signed or hashed (contract ids and transactions,
 * topology transactions, backup manifest checksums): JSON with object keys sorted by UTF-16 code
 * unit and no white space. Changing any byte it produces breaks signatures and checksums already
 * stored; test/unit/canonical-encoding.test.ts pins them.
 *
 * Values:
 * - null, booleans and strings: as JSON.stringify writes them.
 * - Arrays: every element encoded; an undefined element is refused (JSON.stringify would write null).
 * - Objects: own enumerable string keys, sorted; a field whose value is undefined is left out, as
 *   JSON.stringify does (an optional field absent or undefined encodes the same).
 * - Numbers, by the caller's explicit NumberPolicy:
 *   "finite": any finite number, formatted by JSON.stringify (shortest round-trip form, already
 *   canonical: 0.1, 1e+21, 5e-7); "safe-integer": integers within ±(2^53 − 1) only.
 *   Under both: NaN and ±Infinity are refused (JSON.stringify would write null), and -0 is written
 *   as 0 (as JSON.stringify does).
 * - bigint, undefined (at the top or in an array), functions and symbols: refused. int64 values
 *   travel as decimal strings, chosen by the caller.
 * Refusals throw TypeError: they are programming errors, not input errors.
 */
export type NumberPolicy = "finite" | "safe-integer";

export function canonicalJson(value: unknown, numbers: NumberPolicy): string {
  if (value === null || typeof value === "string" || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "number") return JSON.stringify(checkNumber(value, numbers));
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v, numbers)).join(",")}]`;
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v, numbers)}`).join(",")}}`;
  }
  throw new TypeError(`not a JSON value: ${typeof value}`);
}

function checkNumber(value: number, numbers: NumberPolicy): number {
  if (numbers === "safe-integer") {
    if (!Number.isSafeInteger(value)) throw new TypeError(`not an integer: ${value}`);
  } else if (!Number.isFinite(value)) {
    throw new TypeError(`not a finite number: ${value}`);
  }
  return value;
}
