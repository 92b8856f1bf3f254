import { ConnectError } from "@connectrpc/connect";
import { fromConnectError } from "../common/connect-errors.ts";
import { LockstepError, toLockstepError } from "../common/errors.ts";

/**
 * How the client reads failures of its calls to the sequencer. Pure: no logging, no retries.
 */

/** The sequencer's own errors as it threw them; other RPC failures as SEQUENCER_UNAVAILABLE. */
export function sequencerCallError(error: unknown, sequencerUrl: string): unknown {
  const remote = fromConnectError(error);
  if (remote) return remote;
  if (error instanceof ConnectError) {
    return new LockstepError(
      "SEQUENCER_UNAVAILABLE",
      { url: sequencerUrl, reason: error.message },
      { cause: error },
    );
  }
  return error;
}

/** Runs a unary call, mapping its failure with sequencerCallError. */
export async function callSequencer<T>(sequencerUrl: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw sequencerCallError(error, sequencerUrl);
  }
}

/**
 * A subscription failure is either transient (reconnect with backoff: transport errors and the
 * sequencer's retryable or internal errors) or fatal (no retry: the stream failed validation, or the
 * sequencer refused for good, e.g. EVENTS_UNAVAILABLE_FOR_TIMESTAMP, STALE_WRITER_EPOCH).
 */
export function classifySubscriptionError(
  error: unknown,
  sequencerUrl: string,
): { fatal: boolean; error: LockstepError } {
  const remote = fromConnectError(error);
  if (remote && remote !== error) {
    const transient = remote.retryable || remote.category === "transient" || remote.category === "internal";
    return { fatal: !transient, error: remote };
  }
  if (error instanceof LockstepError) return { fatal: true, error };
  if (error instanceof ConnectError) {
    return { fatal: false, error: sequencerCallError(error, sequencerUrl) as LockstepError };
  }
  return { fatal: true, error: toLockstepError(error) };
}
