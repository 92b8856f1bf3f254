/** Durations as operators write them (docs/cli.md): `500ms`, `30s`, `5m`, `2h`, `7d`. Values are milliseconds. */
const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PATTERN = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;

export class DurationFormatError extends Error {
  override readonly name = "DurationFormatError";
  constructor(readonly input: string) {
    super(`"${input}" is not a duration; write it like 500ms, 30s, 5m, 2h or 7d`);
  }
}

export function parseDuration(input: string): number {
  const match = PATTERN.exec(input.trim());
  if (!match) throw new DurationFormatError(input);
  const ms = Number(match[1]) * (UNITS[match[2] as string] as number);
  if (!Number.isSafeInteger(Math.round(ms))) throw new DurationFormatError(input);
  return Math.round(ms);
}

/** The largest unit that divides the value exactly, so `formatDuration(parseDuration(x))` is canonical. */
export function formatDuration(ms: number): string {
  for (const unit of ["d", "h", "m", "s"] as const) {
    const size = UNITS[unit] as number;
    if (ms !== 0 && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
