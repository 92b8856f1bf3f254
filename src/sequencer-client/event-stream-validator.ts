import type { Bytes } from "../common/hash.ts";
import { type EventPosition, positionOf, type SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import { validateNext, validateResubscription } from "./event-validation.ts";

/**
 * The checks of one subscription (one Subscribe call), in arrival order; pure apart from the key
 * lookup. A subscription from the last stored event S (inclusive) must start with S itself (the
 * "echo", not stored again); every later event must chain onto its predecessor. A subscription with
 * nothing stored must start with the member's first event (no previous timestamp).
 */
export class EventStreamValidator {
  private prior: EventPosition | null;
  private awaitingEcho: boolean;

  constructor(
    private readonly lastStored: SequencedEvent | null,
    /** The sequencer's public signing keys valid for an event at the timestamp. */
    private readonly sequencerKeysAt: (timestamp: Micros) => readonly Bytes[],
  ) {
    this.prior = lastStored && positionOf(lastStored);
    this.awaitingEcho = lastStored !== null;
  }

  /** The event this subscription must chain onto (for logging a failure). */
  get expected(): SequencedEvent | EventPosition | null {
    return this.awaitingEcho ? this.lastStored : this.prior;
  }

  /**
   * "echo" for the first event of a resubscription (equal to the stored one: skip it), "new" for an
   * event to store and process. Throws the fatal LockstepError of the first failed check.
   */
  accept(event: SequencedEvent): "echo" | "new" {
    if (this.awaitingEcho) {
      this.awaitingEcho = false;
      validateResubscription(this.lastStored as SequencedEvent, event, this.sequencerKeysAt(event.timestamp));
      return "echo";
    }
    this.prior = validateNext(this.prior, event, this.sequencerKeysAt(event.timestamp));
    return "new";
  }
}

/** Exponential backoff with "equal jitter": half the delay fixed, half random; `attempt` from 0. */
export function backoffDelayMs(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(base / 2 + (random() * base) / 2);
}

/** Both sides of a refused event, for the ERROR log line: what the member has and what arrived. */
export function describeRefusal(expected: EventPosition | null, received: SequencedEvent) {
  return {
    stored: expected && {
      timestamp: String(expected.timestamp),
      chainHash: expected.chainHash.toString("hex"),
    },
    received: {
      timestamp: String(received.timestamp),
      previousTimestamp: String(received.previousTimestamp ?? "none"),
      chainHash: received.chainHash.toString("hex"),
    },
  };
}
