import type { Code } from "@connectrpc/connect";
import { ERRORS, type ErrorCategory, type ErrorCodeName, type ErrorTemplateKeys } from "./error-codes.ts";

export type ErrorMetadata = Record<string, string>;

/** A value that fills a `{key}` (String(value)); undefined would leave `{key}` in the text. */
export type MetadataValue = string | number | bigint | boolean;

/**
 * The metadata `new LockstepError(code, …)` takes: every key the code's templates use, plus any
 * others (for a union of codes, every key of each). Any record for a code only known at run time
 * (ErrorCodeName itself, e.g. an error rebuilt from the wire): its metadata was filled where the
 * error was raised.
 */
export type MetadataFor<C extends ErrorCodeName> = ErrorCodeName extends C
  ? Record<string, unknown>
  : { [K in ErrorTemplateKeys<C>]: MetadataValue } & Record<string, unknown>;

type ErrorArgs<C extends ErrorCodeName> = ErrorCodeName extends C
  ? [metadata?: MetadataFor<C>, options?: { cause?: unknown }]
  : [ErrorTemplateKeys<C>] extends [never]
    ? [metadata?: MetadataFor<C>, options?: { cause?: unknown }]
    : [metadata: MetadataFor<C>, options?: { cause?: unknown }];

function fill(template: string, metadata: ErrorMetadata): string {
  return template.replace(/\{(\w+)\}/g, (whole, key: string) => metadata[key] ?? whole);
}

/** The JSON shape every failure takes on the CLI (`{"error": …}`) and in API error details. */
export interface ErrorJson {
  code: string;
  message: string;
  retryable: boolean;
  remedy: string;
  metadata?: ErrorMetadata;
}

/**
 * Every error Lockstep reports on purpose. Fields come from the registry in error-codes.ts;
 * `metadata` fills the message and remedy templates and travels to clients unchanged.
 */
/**
 * The longest metadata value an error carries. Values often echo a request (a party id hint, a
 * template name): a hostile 4 MiB one would otherwise come back in the message, the remedy and the
 * details, several times over, and cost the node seconds of encoding (and its lock check with them).
 */
const METADATA_VALUE_MAX = 2048;

function bounded(value: string): string {
  if (value.length <= METADATA_VALUE_MAX) return value;
  return `${value.slice(0, METADATA_VALUE_MAX)}… (${value.length} characters in all)`;
}

export class LockstepError<C extends ErrorCodeName = ErrorCodeName> extends Error {
  override readonly name = "LockstepError";
  readonly code: C;
  readonly grpc: Code;
  readonly retryable: boolean;
  readonly category: ErrorCategory;
  readonly remedy: string;
  readonly metadata: ErrorMetadata;

  constructor(code: C, ...args: ErrorArgs<C>) {
    const [metadata = {}, options] = args as [Record<string, unknown>?, { cause?: unknown }?];
    const definition = ERRORS.get(code);
    if (!definition) throw new TypeError(`unregistered error code ${code}`);
    const meta: ErrorMetadata = {};
    for (const [k, v] of Object.entries(metadata)) if (v !== undefined) meta[k] = bounded(String(v));
    super(fill(definition.message, meta), options);
    this.code = code;
    this.grpc = definition.grpc;
    this.retryable = definition.retryable;
    this.category = definition.category;
    this.remedy = fill(definition.remedy, meta);
    this.metadata = meta;
  }

  /** CLI exit code per docs/cli.md: 2 bad usage/config, 3 refused by a safety check, else 1. */
  get exitCode(): 1 | 2 | 3 {
    if (this.category === "usage") return 2;
    if (this.category === "safety") return 3;
    return 1;
  }

  toJSON(): ErrorJson {
    return {
      code: this.code,
      message: this.message,
      retryable: this.retryable,
      remedy: this.remedy,
      metadata: this.metadata,
    };
  }
}

/** Wraps anything thrown into a LockstepError so that every failure has a code and a remedy. */
export function toLockstepError(error: unknown): LockstepError {
  if (error instanceof LockstepError) return error;
  const details = error instanceof Error ? error.message : String(error);
  return new LockstepError("INTERNAL_ERROR", { details }, { cause: error });
}

export function isLockstepError(error: unknown, code?: ErrorCodeName): error is LockstepError {
  return error instanceof LockstepError && (code === undefined || error.code === code);
}
