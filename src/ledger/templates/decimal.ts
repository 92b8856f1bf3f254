import { z } from "zod";

/** Up to 28 integer digits and 10 fractional digits, as Daml's Numeric 10. */
const DECIMAL_PATTERN = /^\d{1,28}(\.\d{1,10})?$/;

/**
 * Decimals are strings, never floats: "007.5" → "7.50", "100.1230" → "100.123". At least two
 * fractional digits (money reads that way), no trailing zeros beyond them, no leading zeros.
 * Idempotent, so a normalized value normalizes to itself.
 */
export function normalizeDecimal(value: string): string {
  if (!DECIMAL_PATTERN.test(value)) throw new TypeError(`"${value}" is not a decimal`);
  const [whole = "0", fraction = ""] = value.split(".");
  const integer = whole.replace(/^0+(?=\d)/, "");
  const digits = fraction.replace(/0+$/, "").padEnd(2, "0");
  return `${integer}.${digits}`;
}

export function isPositiveDecimal(normalized: string): boolean {
  return /[1-9]/.test(normalized);
}

/** A decimal string (e.g. "100.00"), normalized; refuses numbers so that no float ever rounds it. */
export const decimalSchema = z
  .string()
  .regex(DECIMAL_PATTERN, 'a decimal string such as "100.00" (up to 28 integer and 10 fractional digits)')
  .transform(normalizeDecimal);
