import type { Db } from "./db.ts";

/**
 * Completed backup sets that hold this node's database, recorded in the node's own database by
 * `backup create` once the set is complete (migration "backups_taken" in node/node-state.ts): the
 * node refuses to announce a rotated key, revoke the old one or retire a wrapper key until one of
 * them holds the new key (docs/keys.md).
 */
export interface BackupTaken {
  setId: string;
  repository: string;
  takenAt: Date;
  keyFingerprints: readonly string[];
  position: Record<string, unknown>;
  safe: boolean;
  /** The wrapper key the set's private keys are encrypted under; null when stored in plain. */
  wrapperFingerprint: string | null;
}

/** Records a completed backup set holding this node's database; idempotent per set. */
export async function registerBackupTaken(db: Db, backup: BackupTaken): Promise<void> {
  await db.execute(
    `INSERT INTO backups_taken (set_id, repository, taken_at, key_fingerprints, position, safe, wrapper_fingerprint)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (set_id) DO NOTHING`,
    [
      backup.setId,
      backup.repository,
      backup.takenAt,
      [...backup.keyFingerprints],
      backup.position,
      backup.safe,
      backup.wrapperFingerprint,
    ],
  );
}

/** The backups recorded in this node's database, newest first. */
export async function backupsTaken(db: Db): Promise<BackupTaken[]> {
  const rows = await db.query<{
    set_id: string;
    repository: string;
    taken_at: Date;
    key_fingerprints: string[];
    position: Record<string, unknown>;
    safe: boolean;
    wrapper_fingerprint: string | null;
  }>(
    "SELECT set_id, repository, taken_at, key_fingerprints, position, safe, wrapper_fingerprint FROM backups_taken ORDER BY taken_at DESC, set_id DESC",
  );
  return rows.map((r) => ({
    setId: r.set_id,
    repository: r.repository,
    takenAt: r.taken_at,
    keyFingerprints: r.key_fingerprints,
    position: r.position,
    safe: r.safe,
    wrapperFingerprint: r.wrapper_fingerprint,
  }));
}
