/**
 * Which pgBackRest repository a stanza's backups and WAL go to, and how it is encrypted
 * (docs/backup.md "Encryption", docs/security.md "Backups"). Pure, but for reading the key files
 * (BackupKeys) and listing the folders of the backup repository.
 *
 * Without `backup.encryption`: the plain repository `<backup.repository>/pgbackrest`.
 * With it: pgBackRest's own repository encryption (`repo1-cipher-type=aes-256-cbc`) in a repository
 * of its own, `<backup.repository>/pgbackrest-<key fingerprint>`. pgBackRest fixes a repository's
 * cipher when the stanza is created and cannot change it afterwards (pgBackRest user guide,
 * "Configure Repository Encryption": "Once the repository has been configured and the stanza
 * created and checked, the repository encryption settings cannot be changed"), so plain and
 * encrypted backups never share one: turning encryption on, or changing the key, starts a new
 * repository (a new stanza-create; archive_command names the stanza's config file, which then
 * names the new repository, so WAL follows). Sets made before keep naming theirs (their manifest
 * record's `encryption.keyFingerprint`) and stay restorable while the key is configured
 * (`previous-key-files`).
 *
 * The passphrase (`repo1-cipher-pass`) is derived from the backup key, never the key itself:
 * HKDF-SHA256 with a label of its own, so the same key's other uses (the pg-dump artifacts' file
 * keys, artifact-cipher.ts) never meet it. It is written into pgBackRest's config file only
 * (owner-only, the cluster owner's), never into a manifest or a message. pgBackRest encrypts its
 * info files with it, and each backup and the WAL archive with random passphrases kept in those
 * info files (user guide, "Encryption").
 */
import { hkdfSync } from "node:crypto";
import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { LockstepConfig } from "../../common/config-schema.ts";
import type { BackupKeys, LoadedBackupKey } from "../backup-keys.ts";
import type { PgBackRestRecord } from "../manifest.ts";

/** pgBackRest's cipher, as its `repo1-cipher-type` and the manifest record name it. */
export const PGBACKREST_CIPHER = "aes-256-cbc";
const PLAIN_FOLDER = "pgbackrest";
const CIPHER_PASS_LABEL = "lockstep/pgbackrest-repo-cipher-pass/v1";
const FOLDER = /^pgbackrest(?:-([0-9a-f]{16}))?$/;

/** One pgBackRest repository inside Lockstep's backup repository. */
export interface PgBackRestRepo {
  /** Its folder's name: `pgbackrest` (plain) or `pgbackrest-<fingerprint>`. */
  folder: string;
  /** `repo1-path`. */
  path: string;
  /** Encrypted: the backup key's fingerprint (recorded) and the passphrase derived from it (never). */
  cipher?: { keyFingerprint: string; pass: string };
}

/** The folder of the repository encrypted under a key with this fingerprint (none: the plain one). */
export function repoFolder(keyFingerprint?: string): string {
  return keyFingerprint ? `${PLAIN_FOLDER}-${keyFingerprint}` : PLAIN_FOLDER;
}

/** Whether a folder of the backup repository is one of pgBackRest's (owner-only rules leave those to it). */
export function isRepoFolder(name: string): boolean {
  return FOLDER.test(name);
}

/** The key fingerprint a repository folder is encrypted under (undefined: plain; null: not a repository). */
export function folderFingerprint(name: string): string | undefined | null {
  const m = FOLDER.exec(name);
  return m ? m[1] : null;
}

/** `repo1-cipher-pass` for a backup key: 32 bytes of HKDF-SHA256 output as 64 hex digits (INI-safe). */
export function cipherPass(key: Buffer): string {
  return Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), CIPHER_PASS_LABEL, 32)).toString("hex");
}

function repoOf(backupRepository: string, key: LoadedBackupKey | undefined): PgBackRestRepo {
  const folder = repoFolder(key?.fingerprint);
  const path = join(resolve(backupRepository), folder);
  return key
    ? { folder, path, cipher: { keyFingerprint: key.fingerprint, pass: cipherPass(key.key) } }
    : { folder, path };
}

/** Where new backups and WAL go: encrypted under the current backup key, or the plain repository. */
export function currentRepo(config: LockstepConfig, keys: BackupKeys): PgBackRestRepo {
  return repoOf(config.backup.repository, keys.current());
}

/**
 * The repository a set's record names. Its key must be configured (current or previous):
 * BACKUP_KEY_MISSING / BACKUP_KEY_MISMATCH naming the fingerprint otherwise.
 */
export function recordRepo(
  config: LockstepConfig,
  keys: BackupKeys,
  record: PgBackRestRecord,
  where: { set: string; artifact: string },
): PgBackRestRepo {
  const fingerprint = record.encryption?.keyFingerprint;
  return repoOf(
    config.backup.repository,
    fingerprint ? keys.require(fingerprint, where.set, where.artifact) : undefined,
  );
}

export type KnownRepo =
  | { ok: true; repo: PgBackRestRepo }
  | { ok: false; folder: string; path: string; keyFingerprint: string };

/**
 * Every pgBackRest repository in the backup repository, and the current one (it may not exist yet):
 * those whose key is not configured cannot be opened, and say which fingerprint they need.
 */
export function knownRepos(config: LockstepConfig, keys: BackupKeys): KnownRepo[] {
  const root = resolve(config.backup.repository);
  const current = currentRepo(config, keys);
  const out: KnownRepo[] = [{ ok: true, repo: current }];
  let names: string[] = [];
  try {
    names = readdirSync(root).sort();
  } catch {
    // no repository yet
  }
  for (const folder of names) {
    const fingerprint = folderFingerprint(folder);
    if (fingerprint === null || folder === current.folder) continue;
    if (fingerprint === undefined) {
      out.push({ ok: true, repo: repoOf(root, undefined) });
      continue;
    }
    const found = keys.find(fingerprint);
    out.push(
      found.ok
        ? { ok: true, repo: repoOf(root, found.key) }
        : { ok: false, folder, path: join(root, folder), keyFingerprint: fingerprint },
    );
  }
  return out;
}

/** Whether a record's backup is in this repository. */
export function inRepo(record: PgBackRestRecord, repo: PgBackRestRepo): boolean {
  return (record.encryption?.keyFingerprint ?? undefined) === repo.cipher?.keyFingerprint;
}

/** The manifest record's `encryption` for a backup taken into this repository (absent: plain). */
export function recordEncryption(
  repo: PgBackRestRepo,
): Pick<PgBackRestRecord, "encryption"> | Record<string, never> {
  return repo.cipher
    ? { encryption: { cipher: PGBACKREST_CIPHER, keyFingerprint: repo.cipher.keyFingerprint } }
    : {};
}
