import type { LockstepError } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";

interface Waiter {
  readonly at: Micros;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * The promises of SequencerClient.whenClean: each waits for the clean timestamp to reach its
 * time; processing resolves them as it records a new clean timestamp (no timers, no polling), and
 * a client that failed or stopped rejects them all, and every later one at once.
 */
export class CleanWaiters {
  private waiters: Waiter[] = [];
  private clean: Micros | null = null;
  private closedWith: LockstepError | undefined;

  wait(at: Micros, signal?: AbortSignal): Promise<void> {
    if (this.clean !== null && this.clean >= at) return Promise.resolve();
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(signal?.reason);
      };
      const waiter: Waiter = {
        at,
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Processing committed everything up to `clean`. */
  advanced(clean: Micros): void {
    this.clean = clean;
    if (this.waiters.length === 0) return;
    const due = this.waiters.filter((w) => w.at <= clean);
    if (due.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.at > clean);
    for (const waiter of due) waiter.resolve();
  }

  /** The client failed or stopped: the clean timestamp moves no more. */
  close(error: LockstepError): void {
    this.closedWith ??= error;
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter.reject(this.closedWith);
  }
}
