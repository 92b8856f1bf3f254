import { LockstepError } from "../common/errors.ts";

/**
 * What keeps an open Ledger API stream authorized after its first check (Canton's
 * OngoingAuthorizationObserver, ledger-api-core .../ledger/api/auth):
 * * the token's `exp`: at it the stream ends with ACCESS_TOKEN_EXPIRED;
 * * the user's rights, re-read every `checkIntervalMs` (Canton's UserRightsChangeAsyncChecker, a
 *   fixed delay between checks): when they no longer cover the stream, or cannot be read, it ends
 *   with STALE_STREAM_AUTHORIZATION;
 * * Canton's safety switch: an item about to be sent while the last successful check is older
 *   than twice the interval (the checks are stuck, e.g. on an unreachable database) ends it too.
 */
export interface StreamWatch {
  /** The token's `exp` in ms since the epoch; undefined: none. */
  readonly expiresAtMs?: number | undefined;
  /**
   * Re-reads the caller's rights: why they no longer cover the stream, or undefined while they
   * do. Absent (auth off): no checks.
   */
  readonly recheck?: (() => Promise<string | undefined>) | undefined;
  readonly checkIntervalMs: number;
}

/** The longest delay setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A token's expiry for messages: ISO time, or the raw number when it is past what a Date holds
 * (a signed `exp` of 1e20 must not turn a refusal into a RangeError).
 */
export function expiryText(ms: number): string {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? `${ms / 1000} s since the epoch` : date.toISOString();
}

const stale = (reason: string) => new LockstepError("STALE_STREAM_AUTHORIZATION", { reason });

/**
 * `items` until the client goes, the producer ends, or `watch` closes the stream with its error.
 * `abort` stops the producer (the backend honours its signal) however the stream ends.
 */
export async function* watchStream<T>(
  items: AsyncIterable<T>,
  watch: StreamWatch,
  abort: AbortController,
): AsyncIterable<T> {
  const { expiresAtMs, recheck, checkIntervalMs } = watch;
  if (expiresAtMs === undefined && recheck === undefined) {
    try {
      yield* items;
    } finally {
      if (!abort.signal.aborted) abort.abort();
    }
    return;
  }
  let closedWith: LockstepError | undefined;
  // The pending race's way to learn of a close: one fresh promise per item, so that a long stream
  // does not pile reactions onto one never-settling promise.
  let wake: (() => void) | undefined;
  const close = (error: LockstepError) => {
    closedWith ??= error;
    wake?.();
  };
  let finished = false;
  let expiryTimer: NodeJS.Timeout | undefined;
  let checkTimer: NodeJS.Timeout | undefined;
  if (expiresAtMs !== undefined) {
    // Node fires a timer longer than 2^31-1 ms (24.8 days) after 1 ms: a token valid for a month
    // would close its stream at once. Such an expiry is re-armed in steps instead.
    const armExpiry = () => {
      const left = expiresAtMs - Date.now();
      expiryTimer =
        left > MAX_TIMER_MS
          ? setTimeout(armExpiry, MAX_TIMER_MS)
          : setTimeout(
              () => close(new LockstepError("ACCESS_TOKEN_EXPIRED", { expiredAt: expiryText(expiresAtMs) })),
              Math.max(0, left),
            );
    };
    armExpiry();
  }
  let lastCheckAt = Date.now();
  if (recheck) {
    const schedule = () => {
      checkTimer = setTimeout(async () => {
        try {
          const reason = await recheck();
          lastCheckAt = Date.now();
          if (reason !== undefined) close(stale(reason));
        } catch (error) {
          // Canton's checker treats a failed read as a change: the client re-opens and is checked afresh.
          close(stale(`the user's rights could not be re-read (${(error as Error).message})`));
        }
        if (!finished && !closedWith) schedule();
      }, checkIntervalMs);
    };
    schedule();
  }
  const iterator = items[Symbol.asyncIterator]();
  try {
    for (;;) {
      const closing = new Promise<"closed">((resolve) => {
        wake = () => resolve("closed");
      });
      const next = closedWith ? "closed" : await Promise.race([closing, iterator.next()]);
      wake = undefined;
      if (next === "closed") throw closedWith;
      if (next.done) return;
      const sinceCheck = Date.now() - lastCheckAt;
      if (recheck && sinceCheck > 2 * checkIntervalMs)
        close(
          stale(`the user's rights were last checked ${sinceCheck} ms ago (every ${checkIntervalMs} ms)`),
        );
      if (closedWith) throw closedWith;
      yield next.value;
    }
  } finally {
    finished = true;
    clearTimeout(expiryTimer);
    clearTimeout(checkTimer);
    // Ends the producer whatever ended the stream (a close, the client leaving, an error).
    if (!abort.signal.aborted) abort.abort(closedWith);
    void iterator.return?.()?.catch?.(() => {});
  }
}
