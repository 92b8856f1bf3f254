import { ConnectError, type Interceptor, type StreamResponse } from "@connectrpc/connect";
import { toConnectError } from "../common/connect-errors.ts";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";

export { fromConnectError } from "../common/connect-errors.ts";

/**
 * Server interceptor: every LockstepError a handler throws reaches the client with its gRPC code
 * and an ErrorDetail; anything else is a bug, logged with its stack and sent as INTERNAL_ERROR.
 * ConnectErrors (from Connect itself, or thrown on purpose) pass through unchanged.
 */
export function errorInterceptor(logger: Logger): Interceptor {
  const convert = (error: unknown, procedure: string, signal: AbortSignal): unknown => {
    if (error instanceof ConnectError) return error;
    if (error instanceof LockstepError) return toConnectError(error);
    // A cancelled or timed-out call: its handler's failure is expected, not a bug.
    if (signal.aborted) return ConnectError.from(signal.reason ?? error);
    logger.error({ err: error, procedure }, "handler failed unexpectedly");
    return toConnectError(toLockstepError(error));
  };
  return (next) => async (req) => {
    const procedure = `${req.service.typeName}/${req.method.name}`;
    try {
      const res = await next(req);
      // Server-streaming responses fail while iterating, after next() returned.
      if (!res.stream) return res;
      return {
        ...res,
        message: convertStream(res.message, (e) => convert(e, procedure, req.signal)),
      } as StreamResponse;
    } catch (error) {
      throw convert(error, procedure, req.signal);
    }
  };
}

async function* convertStream<T>(
  messages: AsyncIterable<T>,
  convert: (error: unknown) => unknown,
): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (error) {
    throw convert(error);
  }
}
