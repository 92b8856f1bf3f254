/**
 * Wakes Ledger API streams and submitAndWait when the ledger end moved (the node calls notify()
 * once the handler's transaction committed). Waiters also wake after `fallbackMs`, so a missed
 * notification only delays, never loses, an update.
 */
export class LedgerNotifier {
  private waiters = new Set<() => void>();

  notify(): void {
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** Resolves on the next notify(), after fallbackMs, or when the signal aborts. */
  wait(signal?: AbortSignal, fallbackMs = 500): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, fallbackMs);
      signal?.addEventListener("abort", done, { once: true });
      this.waiters.add(done);
    });
  }
}
