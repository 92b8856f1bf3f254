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
    expiryTimer = setTimeout(
      () =>
        close(new LockstepError("ACCESS_TOKEN_EXPIRED", { expiredAt: new Date(expiresAtMs).toISOString() })),
      Math.max(0, expiresAtMs - Date.now()),
    );
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
