import type { NodeKind } from "../common/config-schema.ts";
import { uniqueIdentifier } from "../common/ids.ts";
import { readSequencerHead } from "../sequencer/sequencer-head.ts";
import type { Queryable } from "../storage/db.ts";
import type {
  MediatorPosition,
  MemberEventView,
  ParticipantPosition,
  SequencerPosition,
  StoredEventRef,
} from "./manifest.ts";

/** A member's last stored timestamp, whose event the sequencer's side of the order check looks up. */
export interface MemberLookup {
  member: string;
  timestamp: string;
}

/** What the manifest records about a node, read in the dump's snapshot (docs/design.md §4.2). */
export interface NodeSnapshotInfo {
  nodeName: string;
  kind: NodeKind;
  incarnation: string;
  writerEpoch: string;
  member: string | null;
  synchronizerId: string | null;
  keyFingerprints: string[];
  /** The wrapper key the private keys are encrypted under (docs/keys.md); null when in plain. */
  wrapperFingerprint: string | null;
  postgres: { version: string; systemIdentifier: string };
  position: ParticipantPosition | MediatorPosition | SequencerPosition;
}

const str = (v: bigint | null | undefined): string | null =>
  v === null || v === undefined ? null : v.toString();

async function tableExists(q: Queryable, table: string): Promise<boolean> {
  const row = await q.one<{ found: boolean }>("SELECT to_regclass($1) IS NOT NULL AS found", [table]);
  return row.found;
}

async function lastStored(q: Queryable): Promise<StoredEventRef | null> {
  const row = await q.maybeOne<{ timestamp: bigint; chain_hash: Buffer }>(
    "SELECT timestamp, chain_hash FROM sequencer_client_events ORDER BY timestamp DESC LIMIT 1",
  );
  return row ? { timestamp: row.timestamp.toString(), chainHash: row.chain_hash.toString("hex") } : null;
}

async function memberPosition(
  q: Queryable,
): Promise<{ clean: string | null; lastStored: StoredEventRef | null }> {
  const clean = await q.maybeOne<{ clean_timestamp: bigint }>(
    "SELECT clean_timestamp FROM sequencer_client_clean",
  );
  return { clean: str(clean?.clean_timestamp), lastStored: await lastStored(q) };
}

/** The participant's position: clean timestamp and ledger end (+ last stored event for fork prediction). */
export async function participantPosition(q: Queryable): Promise<ParticipantPosition> {
  const end = await q.one<{ ledger_end: bigint }>("SELECT ledger_end FROM participant_ledger_end");
  return { ...(await memberPosition(q)), ledgerEnd: end.ledger_end.toString() };
}

export async function mediatorPosition(q: Queryable): Promise<MediatorPosition> {
  return memberPosition(q);
}

/** The sequencer's position: head, per-member last delivered, pruning lower bound. */
export async function sequencerPosition(q: Queryable): Promise<SequencerPosition> {
  const state = await q.one<{ pruning_lower_bound: bigint | null }>(
    "SELECT pruning_lower_bound FROM sequencer_state",
  );
  const members = await q.query<{ member: string; last_timestamp: bigint | null }>(
    `SELECT m.member, h.last_timestamp FROM sequencer_members m
       LEFT JOIN sequencer_member_heads h ON h.member = m.member ORDER BY m.member`,
  );
  return {
    // As the store's load(): events, member heads (they outlive pruning) and allow-list changes.
    head: str(await readSequencerHead(q)),
    members: Object.fromEntries(members.map((m) => [m.member, str(m.last_timestamp)])),
    pruningLowerBound: str(state.pruning_lower_bound),
  };
}

/**
 * The sequencer's event for each member at the given timestamp (docs/design.md §4.3): its chain hash from
 * the member's delivery, or from the member's chain head when that is the event (pruning keeps
 * heads). In the sequencer's snapshot, so it describes exactly what the dump holds.
 */
export async function readMemberEvents(
  q: Queryable,
  lookups: readonly MemberLookup[],
): Promise<Record<string, MemberEventView>> {
  if (lookups.length === 0) return {};
  const rows = await q.query<{ member: string; ts: bigint; known: boolean; chain_hash: Buffer | null }>(
    `SELECT x.member, x.ts,
            EXISTS (SELECT 1 FROM sequencer_members m WHERE m.member = x.member) AS known,
            COALESCE(
              (SELECT d.chain_hash FROM sequencer_deliveries d WHERE d.member = x.member AND d.timestamp = x.ts),
              (SELECT h.last_chain_hash FROM sequencer_member_heads h WHERE h.member = x.member AND h.last_timestamp = x.ts)
            ) AS chain_hash
       FROM unnest($1::text[], $2::bigint[]) AS x(member, ts)`,
    [lookups.map((l) => l.member), lookups.map((l) => l.timestamp)],
  );
  return Object.fromEntries(
    rows.map((r) => [
      r.member,
      { timestamp: r.ts.toString(), known: r.known, chainHash: r.chain_hash?.toString("hex") ?? null },
    ]),
  );
}

/**
 * Reads everything the manifest needs about one node, with `q` inside the dump's REPEATABLE READ
 * transaction, so that the position describes exactly the data in the dump.
 */
export async function readNodeSnapshotInfo(
  q: Queryable,
  kind: NodeKind,
  configSynchronizerId: string,
  /** For the sequencer: the members' last stored events of the same set, to look up (order check). */
  lookups: readonly MemberLookup[] = [],
): Promise<NodeSnapshotInfo> {
  const state = await q.one<{ node_name: string; kind: NodeKind; incarnation: string; writer_epoch: bigint }>(
    "SELECT node_name, kind, incarnation, writer_epoch FROM node_state",
  );
  const pgInfo = await q.one<{ version: string; system_identifier: bigint }>(
    "SELECT current_setting('server_version') AS version, system_identifier FROM pg_control_system()",
  );
  const keys = (await tableExists(q, "crypto_private_keys"))
    ? await q.query<{
        fingerprint: string;
        purpose: string;
        state: string;
        wrapper_fingerprint: string | null;
      }>(
        "SELECT fingerprint, purpose, state, wrapper_fingerprint FROM crypto_private_keys ORDER BY fingerprint",
      )
    : [];
  // Rewrapping is one transaction, so a snapshot sees one wrapper key (or none: keys in plain).
  const wrapperFingerprint = keys.find((k) => k.wrapper_fingerprint !== null)?.wrapper_fingerprint ?? null;
  let member: string | null = null;
  let synchronizerId: string | null = null;
  let position: NodeSnapshotInfo["position"];
  if (kind === "sequencer") {
    const namespace = keys.find((k) => k.purpose === "namespace" && k.state === "active");
    member = namespace ? uniqueIdentifier(state.node_name, namespace.fingerprint) : null;
    synchronizerId = configSynchronizerId;
    position = { ...(await sequencerPosition(q)), memberEvents: await readMemberEvents(q, lookups) };
  } else {
    const reg = await q.maybeOne<{ member: string; synchronizer_id: string }>(
      "SELECT member, synchronizer_id FROM sequencer_client_registration",
    );
    member = reg?.member ?? null;
    synchronizerId = reg?.synchronizer_id ?? null;
    position = kind === "participant" ? await participantPosition(q) : await mediatorPosition(q);
  }
  return {
    nodeName: state.node_name,
    kind: state.kind,
    incarnation: state.incarnation,
    writerEpoch: state.writer_epoch.toString(),
    member,
    synchronizerId,
    keyFingerprints: keys.map((k) => k.fingerprint),
    wrapperFingerprint,
    postgres: { version: pgInfo.version, systemIdentifier: pgInfo.system_identifier.toString() },
    position,
  };
}
