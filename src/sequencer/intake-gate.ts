import { LockstepError } from "../common/errors.ts";

/**
 * Pauses the sequencer's intake for `backup create --quiesce` (docs/design.md §4.3). While paused, new
 * submissions are refused with SEQUENCER_INTAKE_PAUSED (retryable); `pause` returns once those
 * admitted before are sequenced, so the head stands still. The pause is a lease: it ends by itself,
 * so an operator that crashed mid-backup cannot leave the synchronizer stopped.
 */
export class IntakeGate {
  private pausedUntil = 0;
  private inFlight = 0;
  private drained: (() => void)[] = [];

  constructor(private readonly now: () => number = Date.now) {}

  get paused(): boolean {
    return this.now() < this.pausedUntil;
  }

  /** Runs a submission unless paused; counts it as in flight meanwhile. */
  async admit<T>(fn: () => Promise<T>): Promise<T> {
    if (this.paused) throw new LockstepError("SEQUENCER_INTAKE_PAUSED");
    this.inFlight++;
    try {
      return await fn();
    } finally {
      this.inFlight--;
      if (this.inFlight === 0) for (const resolve of this.drained.splice(0)) resolve();
    }
  }

  /** Pauses (or extends the pause) for leaseMs and waits until nothing admitted is still in flight. */
  async pause(leaseMs: number): Promise<void> {
    this.pausedUntil = this.now() + leaseMs;
    if (this.inFlight > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
  }

  resume(): void {
    this.pausedUntil = 0;
  }
}
