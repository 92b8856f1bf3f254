/**
 * A restore point that describes a node exactly: the node's position read while its writer cannot
 * commit, and the restore point written before it can again (docs/design.md §4.6).
 *
 * Every state-changing commit of a node writes one of its "writer tables" (a member's clean
 * timestamp; the sequencer's events and member heads). A SHARE lock on them waits for the commits
 * that got there first (their WAL precedes the restore point) and holds back later ones until the
 * transaction ends (their WAL follows it). So recovery to the restore point's name yields exactly
 * the position read under the lock. pg_create_restore_point writes WAL at once, whatever the
 * transaction, which is why it runs before COMMIT.
 */
import type { NodeKind } from "../../common/config-schema.ts";
import type { DbSession } from "../../storage/db.ts";

/** The tables a node's writer commits to with every change of its position. */
export const WRITER_TABLES: Record<NodeKind, readonly string[]> = {
  participant: ["sequencer_client_clean"],
  mediator: ["sequencer_client_clean"],
  sequencer: ["sequencer_events", "sequencer_member_heads"],
};

/** PostgreSQL keeps restore point names to 63 bytes (MAXFNAMELEN - 1). */
export const RESTORE_POINT_NAME_MAX = 63;

/** Begins a transaction on `session` and blocks the node's writer (see the file comment). */
export async function lockWriter(session: DbSession, kind: NodeKind, lockTimeout = "30s"): Promise<void> {
  await session.execute("BEGIN");
  await session.execute(`SET LOCAL lock_timeout = '${lockTimeout.replace(/[^0-9a-z]/g, "")}'`);
  for (const table of WRITER_TABLES[kind]) await session.execute(`LOCK TABLE ${table} IN SHARE MODE`);
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
