import { LockstepError, toLockstepError } from "../common/errors.ts";

/**
 * How the client reads a failed subscription stream (the transport already turned it into a
 * LockstepError). Pure: no logging, no retries.
 *
 * A failure is either transient (reconnect with backoff: the sequencer unreachable, its retryable
 * or internal errors) or fatal (no retry: the sequencer refused for good, e.g.
 * EVENTS_UNAVAILABLE_FOR_TIMESTAMP, STALE_WRITER_EPOCH). The client's own failures while
 * validating, storing or processing the stream are always fatal and never come here.
 */
export function classifySubscriptionError(error: unknown): { fatal: boolean; error: LockstepError } {
  if (error instanceof LockstepError) {
    const transient = error.retryable || error.category === "transient" || error.category === "internal";
    return { fatal: !transient, error };
  }
  return { fatal: true, error: toLockstepError(error) };
}
