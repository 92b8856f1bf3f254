import type { NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { nodeConnection } from "../node/node-database.ts";
import { nodeStateMigrations } from "../node/node-state.ts";
import { lockIdForDatabase, SessionLock } from "../storage/advisory-lock.ts";
import type { Db } from "../storage/db.ts";
import { runMigrations } from "../storage/migrations.ts";
import { createStorageDb } from "../storage/storage-db.ts";
import { participantNodeKind } from "./participant-node.ts";

// Repairs (docs/restore.md, "The synchronizer is lost or restored behind the participants") work on
// a participant's database with the participant disconnected, as Canton's repair commands require
// (SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE). "Disconnected" here is exact: the repair holds the
// node's single-writer lock (docs/design.md §3) for its whole run, so no process of the participant
// is active meanwhile, and none can become active until the repair let go.

export interface OfflineParticipant {
  entry: NodeEntry;
  db: Db;
  /** Where the database is, for messages (never with a password). */
  description: string;
}

/**
 * Runs `work` on the participant's database while holding its single-writer lock. Refuses with
 * SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE while a process of the participant holds it. The
 * database's schema is brought up to date first (a participant stopped before an upgrade).
 */
export async function withOfflineParticipant<T>(
  entry: NodeEntry,
  dataDir: string,
  logger: Logger,
  operation: string,
  work: (participant: OfflineParticipant) => Promise<T>,
): Promise<T> {
  if (entry.kind !== "participant") {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `${entry.name} is a ${entry.kind}, not a participant`,
    });
  }
  const connection = await nodeConnection(entry, dataDir, logger);
  const db = createStorageDb({
    connectionString: connection.url,
    applicationName: `lockstep-repair-${entry.name}`,
    logger,
  });
  try {
    const session = await db.session();
    try {
      const lock = new SessionLock(session, lockIdForDatabase(db.database));
      if (!(await lock.tryAcquire())) {
        throw new LockstepError("SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE", {
          participant: entry.name,
          operation,
        });
      }
      await runMigrations(db, entry.kind, [...nodeStateMigrations, ...participantNodeKind.migrations]);
      return await work({ entry, db, description: connection.description });
    } finally {
      session.release(true);
    }
  } finally {
    await db.close();
  }
}
