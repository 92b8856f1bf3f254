import {
  type DeliverErrorInfo,
  type EventPosition,
  eventFromRow,
  type SequencedEvent,
  type SequencedEventRow,
} from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import type { TopologyEntry } from "../crypto/topology.ts";
import { signedTopologyFromParts } from "../crypto/topology.ts";
import type { Db, DbSession, Queryable } from "../storage/db.ts";
import { type Admission, readAdmissions } from "./member-admissions.ts";
import { type RetentionHold, readHolds, type StrandedSet, strandSets } from "./retention-holds.ts";

/** NOTIFY channel on which every committed batch announces the new head (readers in other processes). */
export const SEQUENCER_EVENTS_CHANNEL = "lockstep_sequencer_events";

export interface StoredMember {
  readonly member: string;
  readonly registeredAt: Micros;
  readonly writerEpoch: bigint;
  readonly writerActivation: string;
}

/** What the writer needs to continue where the last process stopped. */
export interface LoadedSequencerState {
  /** The last sequenced timestamp (null before the first event). */
  readonly head: Micros | null;
  readonly pruningLowerBound: Micros | null;
  readonly members: readonly StoredMember[];
  readonly heads: ReadonlyMap<string, EventPosition>;
  readonly topology: readonly TopologyEntry[];
  /** The allow-list (member-admissions.ts). */
  readonly admissions: readonly Admission[];
}

/** One sequenced submission with the member views it produced; written all at once. */
export interface SequencedRecord {
  readonly timestamp: Micros;
  readonly sender: string;
  readonly messageId: string;
  readonly recipients: readonly string[];
  readonly payload: Uint8Array;
  readonly deliverError?: DeliverErrorInfo;
  readonly deliveries: readonly { readonly member: string; readonly event: SequencedEvent }[];
}

/** Everything one writer transaction commits. */
export interface WriteBatch {
  readonly records: readonly SequencedRecord[];
  /** Final chain position per member touched by the batch. */
  readonly heads: ReadonlyMap<string, EventPosition>;
  readonly newMembers: readonly { readonly member: string; readonly registeredAt: Micros }[];
  readonly topology: readonly TopologyEntry[];
  /** Allow-list changes at their sequencing timestamps (member-admissions.ts). */
  readonly admissions: readonly Admission[];
}

export interface MemberPosition {
  readonly member: string;
  readonly registeredAt: Micros;
  readonly writerEpoch: bigint;
  readonly writerActivation: string;
  readonly lastDelivered: Micros | null;
  readonly acknowledged: Micros | null;
}

export interface DeliveryPage {
  readonly events: SequencedEvent[];
  /** Read in the same snapshot as the events: if it passed the cursor, events may be missing. */
  readonly pruningLowerBound: Micros | null;
}

/** A delivery joined with its event; all null when the member has nothing from the cursor on. */
type DeliveryRow = { pruning_lower_bound: bigint | null } & (
  | SequencedEventRow
  | { [K in keyof SequencedEventRow]: null }
);

/**
 * The sequencer's tables (sequencer-migrations.ts). Writes come from the single writer only
 * (the node holds the single-writer lock); reads are safe from anywhere.
 */
export class SequencerStore {
  /** The writer's own connection (see writerConnection). */
  private writerSession: Promise<DbSession> | undefined;

  constructor(private readonly db: Db) {}

  /** The sequencer's database, for the stores of other tables (retention-holds.ts). */
  get database(): Db {
    return this.db;
  }

  /**
   * The single writer's dedicated connection, with `synchronous_commit = on` for the session: each
   * batch is then one autocommit statement, one round trip (BEGIN, SET LOCAL and COMMIT would be
   * three more, and on loopback in a VM each costs about what the statement does). A connection
   * that breaks while idle is replaced on the next batch; one that breaks during a batch fails
   * that batch, and the writer stops (the outcome is unknown).
   */
  private writerConnection(): Promise<DbSession> {
    if (!this.writerSession) {
      const opening = (async () => {
        const session = await this.db.session();
        session.onError(() => {
          if (this.writerSession === opening) this.writerSession = undefined;
          session.release(true);
        });
        await session.execute("SET synchronous_commit = on");
        return session;
      })();
      opening.catch(() => {
        if (this.writerSession === opening) this.writerSession = undefined;
      });
      this.writerSession = opening;
    }
    return this.writerSession;
  }

  /** Releases the writer's connection (the writer has stopped). */
  async close(): Promise<void> {
    const session = await this.writerSession?.catch(() => undefined);
    this.writerSession = undefined;
    session?.release(true);
  }

  async load(): Promise<LoadedSequencerState> {
    const state = await this.db.one<{ pruning_lower_bound: bigint | null; head: bigint | null }>(
      `SELECT pruning_lower_bound, (SELECT max(timestamp) FROM sequencer_events) AS head FROM sequencer_state`,
    );
    const members = await this.db.query<{
      member: string;
      registered_at: bigint;
      writer_epoch: bigint;
      writer_activation: string;
    }>(
      "SELECT member, registered_at, writer_epoch, writer_activation FROM sequencer_members ORDER BY member",
    );
    const heads = await this.db.query<{ member: string; last_timestamp: bigint; last_chain_hash: Buffer }>(
      "SELECT member, last_timestamp, last_chain_hash FROM sequencer_member_heads",
    );
    const topology = await this.db.query<{
      effective_at: bigint;
      transaction: Buffer;
      signer_public_key: Buffer;
      signature: Buffer;
    }>(
      `SELECT effective_at, transaction, signer_public_key, signature FROM sequencer_topology
       ORDER BY effective_at, position`,
    );
    const admissions = await readAdmissions(this.db);
    // Heads and the lower bound also bound the head: never reuse a timestamp, even after pruning.
    // So do allow-list changes, which take a timestamp without an event.
    let head = state.head;
    for (const h of heads) if (head === null || h.last_timestamp > head) head = h.last_timestamp;
    for (const a of admissions) if (head === null || a.at > head) head = a.at;
    return {
      head,
      pruningLowerBound: state.pruning_lower_bound,
      members: members.map((m) => ({
        member: m.member,
        registeredAt: m.registered_at,
        writerEpoch: m.writer_epoch,
        writerActivation: m.writer_activation,
      })),
      heads: new Map(
        heads.map((h) => [h.member, { timestamp: h.last_timestamp, chainHash: h.last_chain_hash }]),
      ),
      topology: topology.map((t) => ({
        effectiveAt: t.effective_at,
        signed: signedTopologyFromParts({
          transaction: t.transaction,
          signerPublicKey: t.signer_public_key,
          signature: t.signature,
        }),
      })),
      admissions,
    };
  }

  /**
   * Commits a batch durably (synchronous commit) in one statement, and NOTIFYs the new head on
   * commit so that readers in other processes wake up. One statement is one transaction (all or
   * nothing), and arrays + unnest keep it one round trip whatever the batch size.
   */
  async writeBatch(batch: WriteBatch, head: Micros): Promise<void> {
    const r = batch.records;
    const d = r.flatMap((rec) => rec.deliveries);
    const h = [...batch.heads];
    const t = batch.topology.map((entry, i) => ({ entry, position: i }));
    const connection = await this.writerConnection();
    await connection.query(
      `WITH ev AS (
             INSERT INTO sequencer_events (timestamp, sender, message_id, recipients, payload, deliver_error)
             SELECT x.ts, x.sender, x.mid, ARRAY(SELECT jsonb_array_elements_text(x.rcp)), x.payload, x.err
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[], $5::bytea[], $6::jsonb[])
               AS x(ts, sender, mid, rcp, payload, err)
           ), dl AS (
             INSERT INTO sequencer_deliveries (member, timestamp, previous_timestamp, chain_hash, signature)
             SELECT * FROM unnest($7::text[], $8::bigint[], $9::bigint[], $10::bytea[], $11::bytea[])
           ), hd AS (
             INSERT INTO sequencer_member_heads (member, last_timestamp, last_chain_hash)
             SELECT * FROM unnest($12::text[], $13::bigint[], $14::bytea[])
             ON CONFLICT (member) DO UPDATE
               SET last_timestamp = EXCLUDED.last_timestamp, last_chain_hash = EXCLUDED.last_chain_hash
           ), mb AS (
             INSERT INTO sequencer_members (member, registered_at)
             SELECT * FROM unnest($15::text[], $16::bigint[])
             ON CONFLICT (member) DO NOTHING
           ), tp AS (
             INSERT INTO sequencer_topology (effective_at, position, transaction, signer_public_key, signature)
             SELECT * FROM unnest($17::bigint[], $18::int[], $19::bytea[], $20::bytea[], $21::bytea[])
           ), ad AS (
             INSERT INTO sequencer_admissions (member, state, changed_at, changed_by)
             SELECT * FROM unnest($23::text[], $24::text[], $25::bigint[], $26::text[])
             ON CONFLICT (member) DO UPDATE
               SET state = EXCLUDED.state, changed_at = EXCLUDED.changed_at,
                   changed_by = EXCLUDED.changed_by, recorded_at = now()
           )
           SELECT pg_notify('${SEQUENCER_EVENTS_CHANNEL}', $22)`,
      [
        r.map((x) => x.timestamp),
        r.map((x) => x.sender),
        r.map((x) => x.messageId),
        r.map((x) => JSON.stringify(x.recipients)),
        r.map((x) => Buffer.from(x.payload)),
        r.map((x) => (x.deliverError ? JSON.stringify(x.deliverError) : null)),
        d.map((x) => x.member),
        d.map((x) => x.event.timestamp),
        d.map((x) => x.event.previousTimestamp),
        d.map((x) => x.event.chainHash),
        d.map((x) => x.event.signature),
        h.map(([member]) => member),
        h.map(([, p]) => p.timestamp),
        h.map(([, p]) => p.chainHash),
        batch.newMembers.map((m) => m.member),
        batch.newMembers.map((m) => m.registeredAt),
        t.map((x) => x.entry.effectiveAt),
        t.map((x) => x.position),
        t.map((x) => x.entry.signed.bytes),
        t.map((x) => x.entry.signed.signerKey),
        t.map((x) => x.entry.signed.signature),
        head.toString(),
        batch.admissions.map((a) => a.member),
        batch.admissions.map((a) => a.state),
        batch.admissions.map((a) => a.at),
        batch.admissions.map((a) => a.by),
      ],
      { prepare: "lockstep_sequencer_write_batch" },
    );
  }

  /**
   * Up to `limit` of the member's views from `fromInclusive` on, in timestamp order, with the
   * pruning lower bound of the same snapshot (one statement), so that a prune racing the read
   * can never go unnoticed.
   */
  async readDeliveries(member: string, fromInclusive: Micros, limit: number): Promise<DeliveryPage> {
    const rows = await this.db.query<DeliveryRow>(
      `SELECT s.pruning_lower_bound, x.*
       FROM sequencer_state s
       LEFT JOIN LATERAL (
         SELECT d.timestamp, d.previous_timestamp, d.chain_hash, d.signature,
                e.sender, e.message_id, e.recipients, e.payload, e.deliver_error
         FROM sequencer_deliveries d JOIN sequencer_events e ON e.timestamp = d.timestamp
         WHERE d.member = $1 AND d.timestamp >= $2
         ORDER BY d.timestamp
         LIMIT $3
       ) x ON true`,
      [member, fromInclusive, limit],
    );
    const events: SequencedEvent[] = [];
    for (const row of rows) if (row.timestamp !== null) events.push(eventFromRow(row as SequencedEventRow));
    return { events, pruningLowerBound: rows[0]?.pruning_lower_bound ?? null };
  }

  /** The member's view of the event at exactly `timestamp`, if the sequencer still has it. */
  async deliveryAt(member: string, timestamp: Micros): Promise<SequencedEvent | undefined> {
    const page = await this.readDeliveries(member, timestamp, 1);
    const event = page.events[0];
    return event?.timestamp === timestamp ? event : undefined;
  }

  /** A higher epoch with its activation, or the first activation at an epoch recorded without one. */
  async recordWriterEpoch(member: string, epoch: bigint, activation: string): Promise<void> {
    await this.db.transaction(
      (tx) =>
        tx.execute(
          `UPDATE sequencer_members SET writer_epoch = $2, writer_activation = $3
           WHERE member = $1 AND (writer_epoch < $2 OR (writer_epoch = $2 AND writer_activation = ''))`,
          [member, epoch, activation],
        ),
      { synchronousCommit: true },
    );
  }

  /** Acknowledgements only move forward (as Canton's: an earlier one is ignored). */
  async acknowledge(member: string, timestamp: Micros): Promise<void> {
    await this.db.execute(
      `INSERT INTO sequencer_acknowledgements (member, timestamp) VALUES ($1, $2)
       ON CONFLICT (member) DO UPDATE SET timestamp = EXCLUDED.timestamp, acknowledged_at = now()
       WHERE sequencer_acknowledgements.timestamp < EXCLUDED.timestamp`,
      [member, timestamp],
    );
  }

  async memberPositions(): Promise<MemberPosition[]> {
    return readMemberPositions(this.db);
  }

  async pruningLowerBound(): Promise<Micros | null> {
    const row = await this.db.one<{ pruning_lower_bound: bigint | null }>(
      "SELECT pruning_lower_bound FROM sequencer_state",
    );
    return row.pruning_lower_bound;
  }

  /**
   * Deletes events and deliveries below `before` and raises the lower bound, in one transaction.
   * `check` runs first, under the state row's lock (which setting holds takes too) and with the
   * acknowledgements locked, with the members' positions and the holds of that moment, so neither
   * can change between the safety check and the delete. It returns the sets a forced prune
   * strands: their holds are released and they are recorded, in the same transaction.
   */
  async prune(
    before: Micros,
    check: (positions: MemberPosition[], holds: RetentionHold[], lowerBound: Micros | null) => string[],
    now: Micros,
  ): Promise<{ pruningLowerBound: Micros; removedEvents: number; stranded: StrandedSet[] }> {
    return this.db.transaction(
      async (tx) => {
        const state = await tx.one<{ pruning_lower_bound: bigint | null }>(
          "SELECT pruning_lower_bound FROM sequencer_state FOR UPDATE",
        );
        const lowerBound = state.pruning_lower_bound;
        // Acknowledge takes no lock: lock them too, so none moves during the check.
        await tx.execute("LOCK TABLE sequencer_acknowledgements IN SHARE MODE");
        const toStrand = check(await readMemberPositions(tx), await readHolds(tx), lowerBound);
        if (lowerBound !== null && before <= lowerBound) {
          return { pruningLowerBound: lowerBound, removedEvents: 0, stranded: [] };
        }
        const stranded = await strandSets(tx, toStrand, before, now);
        await tx.execute("DELETE FROM sequencer_deliveries WHERE timestamp < $1", [before]);
        const removedEvents = await tx.execute("DELETE FROM sequencer_events WHERE timestamp < $1", [before]);
        await tx.execute("UPDATE sequencer_state SET pruning_lower_bound = $1", [before]);
        return { pruningLowerBound: before, removedEvents, stranded };
      },
      { synchronousCommit: true },
    );
  }

  /**
   * Lowers the member's acknowledgement to `timestamp` (null: removes it, so its registration
   * bounds pruning again); never raises it. For a restored member, which goes back behind its own
   * acknowledgement (docs/design.md §2). Returns the acknowledgement on record afterwards.
   */
  async lowerAcknowledgement(member: string, timestamp: Micros | null): Promise<Micros | null> {
    return this.db.transaction(
      async (tx) => {
        if (timestamp === null) {
          await tx.execute("DELETE FROM sequencer_acknowledgements WHERE member = $1", [member]);
          return null;
        }
        await tx.execute(
          "UPDATE sequencer_acknowledgements SET timestamp = $2, acknowledged_at = now() WHERE member = $1 AND timestamp > $2",
          [member, timestamp],
        );
        const row = await tx.maybeOne<{ timestamp: bigint }>(
          "SELECT timestamp FROM sequencer_acknowledgements WHERE member = $1",
          [member],
        );
        return row?.timestamp ?? null;
      },
      { synchronousCommit: true },
    );
  }
}

/** Every member with its registration, writer epoch, last delivered and acknowledged timestamps. */
async function readMemberPositions(q: Queryable): Promise<MemberPosition[]> {
  const rows = await q.query<{
    member: string;
    registered_at: bigint;
    writer_epoch: bigint;
    writer_activation: string;
    last_timestamp: bigint | null;
    acknowledged: bigint | null;
  }>(
    `SELECT m.member, m.registered_at, m.writer_epoch, m.writer_activation, h.last_timestamp, a.timestamp AS acknowledged
     FROM sequencer_members m
     LEFT JOIN sequencer_member_heads h ON h.member = m.member
     LEFT JOIN sequencer_acknowledgements a ON a.member = m.member
     ORDER BY m.member`,
  );
  return rows.map((r) => ({
    member: r.member,
    registeredAt: r.registered_at,
    writerEpoch: r.writer_epoch,
    writerActivation: r.writer_activation,
    lastDelivered: r.last_timestamp,
    acknowledged: r.acknowledged,
  }));
}
