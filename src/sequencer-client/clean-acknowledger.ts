import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { Micros } from "../common/time.ts";

export interface CleanAcknowledgerOptions {
  intervalMs: number;
  /** The member's current clean timestamp. */
  clean: () => Micros | null;
  /** Sends one signed Acknowledge; rejects with the sequencer's LockstepError. */
  send: (timestamp: Micros, signal: AbortSignal) => Promise<void>;
  /** STALE_WRITER_EPOCH: another process of the node took over. */
  onFatal: (error: LockstepError) => void;
  signal: AbortSignal;
  log: Logger;
}

/**
 * Acknowledges the member's clean timestamp every interval when it moved (docs/design.md §2): the sequencer
 * never prunes at or above it. A failed acknowledgement is simply tried again on the next tick.
 */
export class CleanAcknowledger {
  acknowledged: Micros | null = null;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;

  constructor(private readonly options: CleanAcknowledgerOptions) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.inFlight;
  }

  private async tick(): Promise<void> {
    const clean = this.options.clean();
    if (this.inFlight || this.options.signal.aborted || clean === null || clean === this.acknowledged) return;
    this.inFlight = (async () => {
      try {
        await this.options.send(clean, this.options.signal);
        this.acknowledged = clean;
      } catch (error) {
        if (this.options.signal.aborted) return;
        if (error instanceof LockstepError && error.code === "STALE_WRITER_EPOCH") {
          clearInterval(this.timer);
          this.options.onFatal(error);
          return;
        }
        this.options.log.debug({ err: error }, "acknowledgement failed; retrying on the next tick");
      }
    })().finally(() => {
      this.inFlight = undefined;
    });
    await this.inFlight;
  }
}
