import type { ErrorJson } from "../common/errors.ts";
import { LockstepError, toLockstepError } from "../common/errors.ts";

/**
 * CLI output per docs/cli.md: with --json one JSON document on stdout and nothing else; human text
 * and progress go to stderr, results to stdout. int64 values are written as strings.
 */
export class Output {
  constructor(readonly json: boolean) {}

  /** The command's result: JSON document, or the human rendering. */
  result(value: unknown, human: () => string): void {
    if (this.json) process.stdout.write(`${JSON.stringify(value, jsonReplacer)}\n`);
    else process.stdout.write(ensureNewline(human()));
  }

  /** A progress or narrative line (stderr, so --json stdout stays one document). */
  info(line: string): void {
    process.stderr.write(ensureNewline(line));
  }

  /** Prints the failure and returns the exit code docs/cli.md prescribes. */
  failure(error: unknown): number {
    const e = toLockstepError(error);
    const body: { error: ErrorJson } = {
      error: {
        code: e.code,
        message: e.message,
        retryable: e.retryable,
        remedy: e.remedy,
        metadata: e.metadata,
      },
    };
    if (this.json) process.stdout.write(`${JSON.stringify(body)}\n`);
    else process.stderr.write(`error ${e.code}: ${e.message}\n  remedy: ${e.remedy}\n`);
    if (e.code === "INTERNAL_ERROR" && e.cause instanceof Error && process.env.LOCKSTEP_DEBUG) {
      process.stderr.write(`${e.cause.stack}\n`);
    }
    return e.exitCode;
  }
}

const reportedErrors = new WeakSet<LockstepError>();

/**
 * For a command that printed its own outcome before failing (a refused restore plan's JSON, a
 * failed demo's steps): returns the error to throw. runCli then exits with the error's exit code
 * (its category decides, as for every failure) and prints nothing more.
 */
export function alreadyReported(error: LockstepError): LockstepError {
  reportedErrors.add(error);
  return error;
}

export function wasReported(error: unknown): error is LockstepError {
  return error instanceof LockstepError && reportedErrors.has(error);
}

export function jsonReplacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

function ensureNewline(text: string): string {
  return text.endsWith("\n") ? text : `${text}\n`;
}

/** A plain aligned table for human output. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}
