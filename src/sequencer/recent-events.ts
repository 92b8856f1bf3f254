import type { SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";

const EARLIEST: Micros = -(2n ** 63n);

/**
 * The member views the writer committed most recently, kept in memory so that subscribers that
 * keep up are served without a database read (Canton's sequencer reader keeps such a buffer too).
 * It answers only what it knows completely: for each member, every event from `coveredFrom(member)`
 * on is here (the writer adds each batch after its commit, before waking the readers); a read from
 * earlier returns undefined and goes to the database, which also reports pruning.
 */
/** Views kept per member by default, and their payload bytes at most (big payloads keep fewer). */
const PER_MEMBER = 1024;
const PER_MEMBER_BYTES = 8 * 2 ** 20;

export class RecentEvents {
  private readonly byMember = new Map<string, SequencedEvent[]>();
  private readonly bytes = new Map<string, number>();
  /** Per member, after eviction: every event of the member at or after this is in byMember. */
  private readonly coveredFrom = new Map<string, Micros>();
  /** For members never evicted: everything after the head at start was added here. */
  private floor: Micros;

  /**
   * @param head the last timestamp already in the database when the writer started.
   * @param perMember views kept per member; a subscriber further behind reads the database.
   * @param perMemberBytes payload bytes kept per member at most (a view's payload is shared with
   *   the other views of its event, so this bounds memory from above).
   */
  constructor(
    head: Micros | null,
    private readonly perMember = PER_MEMBER,
    private readonly perMemberBytes = PER_MEMBER_BYTES,
  ) {
    this.floor = head === null ? EARLIEST : head + 1n;
  }

  /** A committed batch's views, in timestamp order. */
  add(deliveries: Iterable<{ readonly member: string; readonly event: SequencedEvent }>): void {
    for (const { member, event } of deliveries) {
      let events = this.byMember.get(member);
      if (!events) {
        events = [];
        this.byMember.set(member, events);
      }
      events.push(event);
      let bytes = (this.bytes.get(member) ?? 0) + event.payload.length;
      // Past twice a limit, evict down to the limits: in chunks, so the cost per event stays constant.
      if (events.length >= 2 * this.perMember || bytes > 2 * this.perMemberBytes) {
        let drop = 0;
        while (
          drop < events.length &&
          (events.length - drop > this.perMember || bytes > this.perMemberBytes)
        ) {
          bytes -= (events[drop] as SequencedEvent).payload.length;
          drop++;
        }
        const evicted = events.splice(0, drop);
        this.coveredFrom.set(member, (evicted[evicted.length - 1] as SequencedEvent).timestamp + 1n);
      }
      this.bytes.set(member, bytes);
    }
  }

  /**
   * Up to `limit` of the member's events from `fromInclusive` on, or undefined when some of them
   * may not be here (the caller reads the database). An empty array means: none yet.
   */
  read(member: string, fromInclusive: Micros, limit: number): SequencedEvent[] | undefined {
    if (fromInclusive < (this.coveredFrom.get(member) ?? this.floor)) return undefined;
    const events = this.byMember.get(member);
    if (!events) return [];
    let lo = 0;
    let hi = events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((events[mid] as SequencedEvent).timestamp < fromInclusive) lo = mid + 1;
      else hi = mid;
    }
    return events.slice(lo, lo + limit);
  }

  /** Pruning removed everything below `before`: so must this (reads from there go to the database). */
  prune(before: Micros): void {
    if (before > this.floor) this.floor = before;
    for (const [member, events] of this.byMember) {
      const keep = events.findIndex((e) => e.timestamp >= before);
      if (keep !== 0) {
        const removed = events.splice(0, keep === -1 ? events.length : keep);
        const bytes = removed.reduce((sum, e) => sum + e.payload.length, 0);
        this.bytes.set(member, (this.bytes.get(member) ?? 0) - bytes);
      }
      const from = this.coveredFrom.get(member);
      if (from !== undefined && from < before) this.coveredFrom.set(member, before);
    }
  }
}
