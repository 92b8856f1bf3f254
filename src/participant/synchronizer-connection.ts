import { setTimeout as sleep } from "node:timers/promises";
import { LockstepError } from "../common/errors.ts";
import type { SequencerClientStatus } from "../sequencer-client/sequencer-client.ts";

/**
 * How long a submission waits for the resubscription check before it is refused: a node that just
 * started or reconnected normally passes it within milliseconds (the sequencer echoes the stored
 * event at once), so a command sent right after `node start` is not bounced for nothing.
 */
export const SUBMISSION_CHECK_GRACE_MS = 2000;

/**
 * Whether the participant may accept submissions, from its sequencer connection (docs/design.md §2
 * "Sequenced events"): only once the current subscription passed the resubscription check. Before
 * (after start, after every reconnect) submissions are refused with NOT_CONNECTED_TO_SYNCHRONIZER,
 * retryable, as Canton refuses commands while it is not connected to the synchronizer; a node whose
 * connection stopped for good refuses them with that error (e.g. SEQUENCER_FORK_DETECTED).
 */
export class SynchronizerConnection {
  constructor(
    private readonly synchronizer: string,
    private readonly clientStatus: () => SequencerClientStatus,
    /** The error the connection stopped with, once it stopped for good. */
    private readonly stoppedWith: () => LockstepError | undefined,
  ) {}

  /** The fatal error (a fresh copy, same code, message and remedy), if the connection stopped. */
  fatal(): LockstepError | undefined {
    const error = this.stoppedWith();
    if (error) return new LockstepError(error.code, error.metadata);
    const status = this.clientStatus();
    if (!status.failed) return undefined;
    return new LockstepError("NOT_CONNECTED_TO_SYNCHRONIZER", {
      synchronizer: this.synchronizer,
      reason: `the connection stopped: ${status.lastError?.code ?? "unknown error"}`,
    });
  }

  /** Why a submission must be refused now, or undefined when it may go ahead. */
  refusal(): LockstepError | undefined {
    const fatal = this.fatal();
    if (fatal) return fatal;
    const status = this.clientStatus();
    if (status.subscriptionCheck === "passed") return undefined;
    return new LockstepError("NOT_CONNECTED_TO_SYNCHRONIZER", {
      synchronizer: this.synchronizer,
      reason: status.connected
        ? "checking its history against the sequencer"
        : "reconnecting to the sequencer",
      ...(status.lastError && !status.connected ? { lastError: status.lastError.code } : {}),
    });
  }

  /** Resolves when submissions may go ahead; throws the refusal after the grace period. */
  async awaitSubmittable(signal?: AbortSignal, graceMs = SUBMISSION_CHECK_GRACE_MS): Promise<void> {
    const until = Date.now() + graceMs;
    for (;;) {
      const refusal = this.refusal();
      if (refusal === undefined) return;
      if (this.fatal() || Date.now() >= until || signal?.aborted) throw refusal;
      await sleep(25);
    }
  }
}
