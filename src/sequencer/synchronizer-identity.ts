import { LockstepError } from "../common/errors.ts";
import type { Queryable } from "../storage/db.ts";

// Which synchronizer a sequencer database belongs to. Recorded at the first activation (an older
// database adopts the configured id then); every later activation must name the same id. A new
// synchronizer rolled out after a loss (docs/restore.md) gets databases of its own: reusing the
// lost one's under a new id would carry its history, keys and members over unseen.

/** Records `synchronizerId` on first use; refuses a database recorded for another synchronizer. */
export async function claimSynchronizerId(q: Queryable, node: string, synchronizerId: string): Promise<void> {
  await q.execute(
    "INSERT INTO sequencer_synchronizer (synchronizer_id) VALUES ($1) ON CONFLICT (singleton) DO NOTHING",
    [synchronizerId],
  );
  const found = await recordedSynchronizerId(q);
  if (found !== null && found !== synchronizerId) {
    throw new LockstepError("NEW_SYNCHRONIZER_NOT_FRESH", { node, found, synchronizer: synchronizerId });
  }
}

/** The recorded id, or null (a database that never ran, or one from before the record existed). */
export async function recordedSynchronizerId(q: Queryable): Promise<string | null> {
  const exists = await q.one<{ t: string | null }>("SELECT to_regclass('sequencer_synchronizer')::text AS t");
  if (exists.t === null) return null;
  const row = await q.maybeOne<{ synchronizer_id: string }>(
    "SELECT synchronizer_id FROM sequencer_synchronizer",
  );
  return row?.synchronizer_id ?? null;
}
