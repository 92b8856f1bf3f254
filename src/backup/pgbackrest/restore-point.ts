/**
 * A restore point that describes a node exactly: the node's position read while its writer cannot
 * commit, and the restore point written before it can again (docs/design.md §4.6).
 *
 * Every commit that changes what the manifest records of a node writes one of its "writer tables"
 * (WRITER_TABLES). A SHARE lock on them waits for the commits
 * that got there first (their WAL precedes the restore point) and holds back later ones until the
 * transaction ends (their WAL follows it). So recovery to the restore point's name yields exactly
 * the position read under the lock. pg_create_restore_point writes WAL at once, whatever the
 * transaction, which is why it runs before COMMIT.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { NodeKind } from "../../common/config-schema.ts";
import type { DbSession } from "../../storage/db.ts";

/**
 * The tables whose rows make up what the manifest records of a node: its position (a member's clean
 * timestamp and stored events, a participant's ledger end; the sequencer's events, member heads,
 * deliveries, members and state) and its identity (node state, registration, keys). Locked only
 * where they exist (a node that never started has no keys table yet).
 */
export const WRITER_TABLES: Record<NodeKind, readonly string[]> = {
  participant: [
    "sequencer_client_clean",
    "sequencer_client_events",
    "participant_ledger_end",
    "sequencer_client_registration",
    "node_state",
    "crypto_private_keys",
  ],
  mediator: [
    "sequencer_client_clean",
    "sequencer_client_events",
    "sequencer_client_registration",
    "node_state",
    "crypto_private_keys",
  ],
  sequencer: [
    "sequencer_events",
    "sequencer_member_heads",
    "sequencer_deliveries",
    "sequencer_members",
    "sequencer_state",
    "node_state",
    "crypto_private_keys",
  ],
};

/** PostgreSQL's lock_not_available (lock_timeout expired). */
const LOCK_NOT_AVAILABLE = "55P03";
/** Below deadlock_timeout (1 s): a writer that waits on us while we wait on it is never the one aborted. */
const ATTEMPT_LOCK_TIMEOUT = "300ms";

/** PostgreSQL keeps restore point names to 63 bytes (MAXFNAMELEN - 1). */
export const RESTORE_POINT_NAME_MAX = 63;

/**
 * Begins a transaction on `session` and blocks the node's writer (see the file comment). The locks
 * are taken with a short lock_timeout and retried: a writer transaction holding one of the tables
 * while it waits for another we hold would otherwise deadlock, and PostgreSQL could abort the
 * writer's side (a node error); this way our attempt gives up first and the writer goes on.
 */
export async function lockWriter(session: DbSession, kind: NodeKind, within = 30_000): Promise<void> {
  const deadline = Date.now() + within;
  for (;;) {
    await session.execute("BEGIN");
    try {
      const present = await session.query<{ name: string }>(
        "SELECT t AS name FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NOT NULL",
        [[...WRITER_TABLES[kind]]],
      );
      await session.execute(`SET LOCAL lock_timeout = '${ATTEMPT_LOCK_TIMEOUT}'`);
      await session.execute(`LOCK TABLE ${present.map((p) => p.name).join(", ")} IN SHARE MODE`);
      return;
    } catch (error) {
      await session.execute("ROLLBACK").catch(() => {});
      const code = (error as { code?: string }).code ?? (error as { cause?: { code?: string } }).cause?.code;
      if (code !== LOCK_NOT_AVAILABLE || Date.now() > deadline) throw error;
      await sleep(20 + Math.random() * 80);
    }
  }
}

/** Writes the restore point; the caller commits after. Returns its LSN and the server's time. */
export async function createRestorePoint(
  session: DbSession,
  name: string,
): Promise<{ lsn: string; serverTime: string; timeline: number }> {
  if (Buffer.byteLength(name) > RESTORE_POINT_NAME_MAX)
    throw new TypeError(`restore point name ${name} is longer than ${RESTORE_POINT_NAME_MAX} bytes`);
  // The WAL file name of the point starts with the timeline it was written on (8 hex digits).
  const row = await session.one<{ lsn: string; at: string; file: string }>(
    `SELECT p.lsn::text AS lsn, clock_timestamp()::text AS at, pg_walfile_name(p.lsn) AS file
       FROM (SELECT pg_create_restore_point($1) AS lsn) p`,
    [name],
  );
  return { lsn: row.lsn, serverTime: row.at, timeline: Number.parseInt(row.file.slice(0, 8), 16) };
}

/**
 * Locks the node's writer, calls `read` under the lock, writes restore point `name`, commits.
 * On any failure the transaction is rolled back (the restore point, if written, names nothing a
 * record refers to).
 */
export async function atRestorePoint<T>(
  session: DbSession,
  kind: NodeKind,
  name: string,
  read: (session: DbSession) => Promise<T>,
): Promise<{ value: T; lsn: string; serverTime: string; timeline: number }> {
  try {
    await lockWriter(session, kind);
    const value = await read(session);
    const point = await createRestorePoint(session, name);
    await session.execute("COMMIT");
    return { value, ...point };
  } catch (error) {
    await session.execute("ROLLBACK").catch(() => {});
    throw error;
  }
}

/** The 24-hex-digit WAL segment file name (without timeline) holding `lsn`, for 16 MiB segments. */
export function walSegmentOf(lsn: string): string {
  const [hi, lo] = lsn.split("/");
  const position = (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
  const segment = position / (16n * 1024n * 1024n);
  const log = segment / 256n;
  const seg = segment % 256n;
  return `${log.toString(16).toUpperCase().padStart(8, "0")}${seg.toString(16).toUpperCase().padStart(8, "0")}`;
}
