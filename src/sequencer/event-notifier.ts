import type { Micros } from "../common/time.ts";
import type { DbSession } from "../storage/db.ts";
import { SEQUENCER_EVENTS_CHANNEL } from "./sequencer-store.ts";

/**
 * Wakes subscription readers when the head moves. Fed in-process by the writer after each commit,
 * and, for readers in other processes (HA replicas), by the NOTIFY the writer's transaction sends.
 * Readers also wake on a timer, so a lost notification costs latency, never events.
 */
export class EventNotifier {
  private current: Micros | null;
  private waiters = new Set<() => void>();

  constructor(head: Micros | null) {
    this.current = head;
  }

  get head(): Micros | null {
    return this.current;
  }

  advance(head: Micros): void {
    if (this.current !== null && head <= this.current) return;
    this.current = head;
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** Resolves once the head is past `seen`, the signal aborts, or `timeoutMs` passed. */
  waitBeyond(seen: Micros | null, signal: AbortSignal, timeoutMs: number): Promise<void> {
    if (signal.aborted || (this.current !== null && (seen === null || this.current > seen))) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener("abort", done, { once: true });
      this.waiters.add(done);
    });
  }

  /** Follows the writer's NOTIFYs on a session (for a reader outside the writer's process). */
  async listen(session: DbSession): Promise<() => Promise<void>> {
    return session.listen(SEQUENCER_EVENTS_CHANNEL, (payload) => {
      if (/^\d+$/.test(payload)) this.advance(BigInt(payload));
    });
  }
}
