import { ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema } from "../gen/lockstep/common/v1/error_pb.ts";
import { ERRORS, type ErrorCodeName } from "./error-codes.ts";
import { LockstepError } from "./errors.ts";

/** Response header prefix for a LockstepError's fields, for clients that do not decode error details. */
export const ERROR_HEADER_PREFIX = "lockstep-error-";

/** Turns a LockstepError into the ConnectError clients see: its gRPC code, headers and an ErrorDetail. */
export function toConnectError(error: LockstepError): ConnectError {
  const headers = new Headers();
  headers.set(`${ERROR_HEADER_PREFIX}code`, error.code);
  headers.set(`${ERROR_HEADER_PREFIX}retryable`, String(error.retryable));
  for (const [key, value] of Object.entries(error.metadata)) {
    const name = headerName(key);
    if (name) headers.set(name, headerValue(value));
  }
  const detail = {
    desc: ErrorDetailSchema,
    value: {
      code: error.code,
      message: error.message,
      retryable: error.retryable,
      remedy: error.remedy,
      metadata: error.metadata,
    },
  };
  return new ConnectError(`${error.code}: ${error.message}`, error.grpc, headers, [detail], error);
}

/**
 * Rebuilds the LockstepError a node threw from the ErrorDetail of a ConnectError (CLI and
 * node-to-node clients). Undefined for anything else, e.g. a refused connection or a code this
 * build does not know (version skew).
 */
export function fromConnectError(err: unknown): LockstepError | undefined {
  if (err instanceof LockstepError) return err;
  if (!(err instanceof ConnectError)) return undefined;
  const [detail] = err.findDetails(ErrorDetailSchema);
  if (!detail || !ERRORS.has(detail.code as ErrorCodeName)) return undefined;
  const error = new LockstepError(detail.code as ErrorCodeName, detail.metadata, { cause: err });
  // Keep the server's wording: it rendered the same templates, possibly from a newer registry.
  error.message = detail.message;
  return error;
}

// gRPC metadata keys are [0-9a-z_.-]; "-bin" would mark a binary header.
function headerName(key: string): string | undefined {
  const name = `${ERROR_HEADER_PREFIX}${key.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase()}`;
  return /^[0-9a-z_.-]+$/.test(name) && !name.endsWith("-bin") ? name : undefined;
}

// Header values must be printable ASCII; the full value travels in the ErrorDetail anyway.
function headerValue(value: string): string {
  const printable = value.replace(/[^\x20-\x7e]/g, " ");
  return printable.length > 512 ? `${printable.slice(0, 509)}...` : printable;
}
