import { LockstepError } from "../common/errors.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import type { EventNotifier } from "./event-notifier.ts";
import type { RecentEvents } from "./recent-events.ts";
import type { SequencerStore } from "./sequencer-store.ts";

export interface ReadEventsOptions {
  store: SequencerStore;
  notifier: EventNotifier;
  /** The writer's recent views: what it can answer needs no database read. */
  recent?: RecentEvents;
  member: string;
  fromInclusive: Micros;
  /** Ends the stream: the client went away or the sequencer stops. */
  signal: AbortSignal;
  batchSize?: number;
  /** Wake-up without a notification, as a safety net. */
  pollMs?: number;
}

/**
 * A member's events from `fromInclusive` on, in batches, following the head forever (until the
 * signal aborts). If the pruning lower bound ever passes the position still to be read, the
 * events there may be gone: that fails with EVENTS_UNAVAILABLE_FOR_TIMESTAMP, never a silent gap.
 */
export async function* readEvents(options: ReadEventsOptions): AsyncGenerator<SequencedEvent[]> {
  const { store, notifier, member, signal } = options;
  const batchSize = options.batchSize ?? 100;
  let cursor = options.fromInclusive;
  while (!signal.aborted) {
    // Before reading: an event committed after this read moves the head past `seen` and wakes us.
    const seen = notifier.head;
    const recent = options.recent?.read(member, cursor, batchSize);
    const page = recent
      ? { events: recent, pruningLowerBound: null }
      : await store.readDeliveries(member, cursor, batchSize);
    if (page.pruningLowerBound !== null && page.pruningLowerBound > cursor) {
      throw new LockstepError("EVENTS_UNAVAILABLE_FOR_TIMESTAMP", {
        timestamp: cursor,
        member,
        reason: `events below ${page.pruningLowerBound} have been pruned`,
      });
    }
    if (page.events.length > 0) {
      yield page.events;
      cursor = (page.events[page.events.length - 1] as SequencedEvent).timestamp + 1n;
      if (page.events.length === batchSize) continue;
    }
    await notifier.waitBeyond(seen, signal, options.pollMs ?? 1000);
  }
}
