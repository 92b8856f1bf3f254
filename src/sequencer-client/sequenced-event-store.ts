import { eventFromRow, type SequencedEvent, type SequencedEventRow } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import type { Db, Queryable, SqlParam } from "../storage/db.ts";

/** An event as the member stored it, with its local counter. */
export interface StoredEvent {
  readonly counter: bigint;
  readonly event: SequencedEvent;
}

interface EventRow extends SequencedEventRow {
  counter: bigint;
}

const COLUMNS =
  "counter, timestamp, previous_timestamp, sender, message_id, recipients, payload, deliver_error, chain_hash, signature";

/**
 * The member's copy of its sequenced events (table sequencer_client_events) and its clean timestamp
 * (sequencer_client_clean). Events are stored (one commit per received run) before they are processed;
 * the clean timestamp moves in the processing transaction. Between the two lies what a restart
 * replays: the stored events after the clean timestamp.
 */
export class SequencedEventStore {
  constructor(private readonly db: Db) {}

  /** Stores a validated event; returns its counter. */
  async store(event: SequencedEvent): Promise<bigint> {
    const [stored] = await this.storeAll([event]);
    return (stored as StoredEvent).counter;
  }

  /**
   * Stores validated events (in timestamp order) in ONE commit, all or none; returns them with their
   * counters, in the same order. The events of one received batch are stored together before any
   * of them is processed.
   */
  async storeAll(events: readonly SequencedEvent[]): Promise<StoredEvent[]> {
    if (events.length === 0) return [];
    const params: SqlParam[] = [];
    const tuples: string[] = [];
    for (const event of events) {
      const n = params.length;
      tuples.push(
        `($${n + 1}::bigint, $${n + 2}::bigint, $${n + 3}, $${n + 4}, $${n + 5}::text[], $${n + 6}::bytea, $${n + 7}::jsonb, $${n + 8}::bytea, $${n + 9}::bytea, ${tuples.length})`,
      );
      params.push(
        event.timestamp,
        event.previousTimestamp,
        event.sender,
        event.messageId,
        [...event.recipients],
        Buffer.from(event.payload),
        event.deliverError ? JSON.stringify(event.deliverError) : null,
        event.chainHash,
        event.signature,
      );
    }
    // Counters follow timestamp order (bigserial drawn row by row in the ORDER BY order).
    const rows = await this.db.query<{ counter: bigint; timestamp: bigint }>(
      `INSERT INTO sequencer_client_events
         (timestamp, previous_timestamp, sender, message_id, recipients, payload, deliver_error, chain_hash, signature)
       SELECT t, p, s, m, r, pl, de, ch, sig
         FROM (VALUES ${tuples.join(", ")}) AS v (t, p, s, m, r, pl, de, ch, sig, ord)
        ORDER BY ord
       RETURNING counter, timestamp`,
      params,
    );
    const counters = new Map(rows.map((r) => [r.timestamp, r.counter]));
    return events.map((event) => ({ counter: counters.get(event.timestamp) as bigint, event }));
  }

  /** The newest stored event: where a (re)subscription starts, inclusive. */
  async lastStored(): Promise<StoredEvent | undefined> {
    const row = await this.db.maybeOne<EventRow>(
      `SELECT ${COLUMNS} FROM sequencer_client_events ORDER BY timestamp DESC LIMIT 1`,
    );
    return row && toStored(row);
  }

  async eventAt(timestamp: Micros): Promise<StoredEvent | undefined> {
    const row = await this.db.maybeOne<EventRow>(
      `SELECT ${COLUMNS} FROM sequencer_client_events WHERE timestamp = $1`,
      [timestamp],
    );
    return row && toStored(row);
  }

  /** Stored events after `clean` (all when null), oldest first, in batches so a long backlog is not loaded at once. */
  async *unprocessed(clean: Micros | null, batchSize = 500): AsyncGenerator<StoredEvent> {
    let after = clean ?? -(2n ** 63n);
    for (;;) {
      const rows = await this.db.query<EventRow>(
        `SELECT ${COLUMNS} FROM sequencer_client_events WHERE timestamp > $1 ORDER BY timestamp LIMIT $2`,
        [after, batchSize],
      );
      for (const row of rows) yield toStored(row);
      if (rows.length < batchSize) return;
      after = (rows[rows.length - 1] as EventRow).timestamp;
    }
  }

  /** Counters and timestamps of all stored events, oldest first (tests, diagnostics). */
  async list(): Promise<StoredEvent[]> {
    const rows = await this.db.query<EventRow>(
      `SELECT ${COLUMNS} FROM sequencer_client_events ORDER BY timestamp`,
    );
    return rows.map(toStored);
  }

  async clean(q: Queryable = this.db): Promise<Micros | null> {
    const row = await q.maybeOne<{ clean_timestamp: bigint }>(
      "SELECT clean_timestamp FROM sequencer_client_clean",
    );
    return row?.clean_timestamp ?? null;
  }

  /** Records `timestamp` as processed; call inside the processing transaction. Never moves back. */
  async setClean(tx: Queryable, timestamp: Micros): Promise<void> {
    await tx.execute(
      `INSERT INTO sequencer_client_clean (clean_timestamp) VALUES ($1)
       ON CONFLICT (singleton) DO UPDATE SET clean_timestamp = EXCLUDED.clean_timestamp, updated_at = now()
       WHERE sequencer_client_clean.clean_timestamp < EXCLUDED.clean_timestamp`,
      [timestamp],
    );
  }
}

function toStored(row: EventRow): StoredEvent {
  return { counter: row.counter, event: eventFromRow(row) };
}
