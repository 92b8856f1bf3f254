/**
 * Timestamps are microseconds since the Unix epoch as bigint, as Canton's CantonTimestamp is.
 * Wall time has only millisecond resolution here, so the sequencer makes its timestamps unique
 * and strictly increasing itself (see sequencer writer); this file only converts.
 */
export type Micros = bigint;

/** Later than any timestamp: "as of now and forever" in topology queries. */
export const END_OF_TIME: Micros = 2n ** 63n - 1n;

export function nowMicros(): Micros {
  // performance.timeOrigin + now() gives sub-millisecond wall-clock resolution.
  return BigInt(Math.floor((performance.timeOrigin + performance.now()) * 1000));
}

export function microsToDate(micros: Micros): Date {
  return new Date(Number(micros / 1000n));
}

export function microsToIso(micros: Micros): string {
  const iso = microsToDate(micros).toISOString();
  const sub = (micros % 1000n).toString().padStart(3, "0");
  return iso.replace("Z", `${sub}Z`);
}

export function msToMicros(ms: number): Micros {
  return BigInt(Math.round(ms)) * 1000n;
}

export function maxMicros(a: Micros, b: Micros): Micros {
  return a > b ? a : b;
}
