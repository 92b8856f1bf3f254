import type { Logger } from "../common/logging.ts";

/** After subscribing, how long the stored event's echo may take before a time proof is asked for. */
export const CHECK_PROBE_DELAY_MS = 300;
/** While the check is pending on a live subscription, a time proof is asked for this often. */
export const CHECK_PROBE_INTERVAL_MS = 2000;

export type SubscriptionCheckState = "pending" | "passed";

/**
 * The resubscription check (docs/design.md §2 "Sequenced events"): on every (re)subscription the member's
 * last stored event must come back from the sequencer (the "echo", validated by
 * EventStreamValidator) before the member may act. Without traffic a sequencer that lacks that
 * event (restored from an older backup) would send nothing and the member would look healthy; so
 * while the check is pending on a live subscription, the member asks for a time proof: the sequencer
 * must then deliver either the echo first (check passes) or the new time proof, which is not the
 * stored event and is refused as a fork. A member with nothing stored passes once subscribed.
 *
 * One instance per client; begin() on every Subscribe call resets it to pending.
 */
export class SubscriptionCheck {
  private current: SubscriptionCheckState = "pending";
  private subscription = 0;
  private awaitingEcho = false;
  private probeTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: {
      /** Asks the sequencer for an empty event addressed to this member. */
      readonly requestTimeProof: () => Promise<unknown>;
      /** Called every time the check passes (each reconnect may pass it again). */
      readonly onPassed: (info: { subscription: number }) => void;
      readonly log: Logger;
    },
  ) {}

  get state(): SubscriptionCheckState {
    return this.current;
  }

  /**
   * A new Subscribe call starts; `hasStored`: the member expects its stored event back. The probe is
   * timed from here, not from connected(): a sequencer that lacks the event sends no event and, as a
   * streaming server sends its headers with the first message, no headers either.
   */
  begin(hasStored: boolean): void {
    this.end();
    this.subscription++;
    this.awaitingEcho = hasStored;
    if (hasStored) this.schedule(CHECK_PROBE_DELAY_MS);
  }

  /** The subscription is established (headers or events arrived). */
  connected(): void {
    if (this.current !== "passed" && !this.awaitingEcho) this.pass();
  }

  /** The stored event came back and matched. */
  echoed(): void {
    this.awaitingEcho = false;
    if (this.current !== "passed") this.pass();
  }

  /** The subscription ended (error, close, stop): the next one must pass the check again. */
  end(): void {
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    this.current = "pending";
  }

  private pass(): void {
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    this.current = "passed";
    this.deps.log.info({ subscription: this.subscription }, "resubscription check passed");
    try {
      this.deps.onPassed({ subscription: this.subscription });
    } catch (error) {
      this.deps.log.error({ err: error }, "onSubscriptionCheckPassed callback failed");
    }
  }

  private schedule(delayMs: number): void {
    const subscription = this.subscription;
    this.probeTimer = setTimeout(() => {
      if (this.current === "passed" || subscription !== this.subscription) return;
      this.deps.requestTimeProof().catch((error: unknown) => {
        this.deps.log.warn(
          { err: error },
          "time proof for the resubscription check failed; asking again shortly",
        );
      });
      this.schedule(CHECK_PROBE_INTERVAL_MS);
    }, delayMs);
    this.probeTimer.unref();
  }
}
