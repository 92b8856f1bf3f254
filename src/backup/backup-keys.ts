import { randomBytes } from "node:crypto";
import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import type { LockstepConfig } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { BACKUP_KEY_BYTES, type BackupKey, backupKey } from "./artifact-cipher.ts";

/**
 * Backup key files (config `backup.encryption`): 32 random bytes as 64 hex digits, as the wrapper
 * key files of docs/keys.md (white space around them ignored), readable by their owner only (one
 * with any group or other permission bit is refused, BACKUP_KEY_FILE_INVALID). The
 * current key encrypts new sets; previous ones only decrypt older sets (a rotation).
 */

export interface LoadedBackupKey extends BackupKey {
  /** The file it was read from. */
  readonly source: string;
}

export type BackupEncryptionConfig = NonNullable<LockstepConfig["backup"]["encryption"]>;

export function loadBackupKey(path: string): LoadedBackupKey {
  const source = resolve(path);
  let text: string;
  try {
    text = readFileSync(source, "utf8").trim();
  } catch (error) {
    throw new LockstepError("BACKUP_KEY_FILE_INVALID", { path: source, reason: (error as Error).message });
  }
  // As ssh ("UNPROTECTED PRIVATE KEY FILE!", ssh's authfile.c: any group/other bit refuses the
  // key) and PostgreSQL (ssl_key_file "has group or world access", be-secure-common.c): a key
  // others can read or replace is refused, not used with a warning; the key opens every set.
  const mode = statSync(source).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new LockstepError("BACKUP_KEY_FILE_INVALID", {
      path: source,
      reason: `others than its owner can access it (mode 0${mode.toString(8)}); make it owner-only: chmod 600 ${source}`,
    });
  }
  if (!/^[0-9a-fA-F]{64}$/.test(text)) {
    throw new LockstepError("BACKUP_KEY_FILE_INVALID", {
      path: source,
      reason: `it must hold ${BACKUP_KEY_BYTES} bytes as 64 hex digits`,
    });
  }
  return { ...backupKey(Buffer.from(text, "hex")), source };
}

/** `lockstep backup key create FILE`: a fresh key, owner-only (0600 whatever the umask); never overwrites. */
export function createBackupKeyFile(path: string): LoadedBackupKey {
  const source = resolve(path);
  const key = randomBytes(BACKUP_KEY_BYTES);
  try {
    writeFileSync(source, `${key.toString("hex")}\n`, { mode: 0o600, flag: "wx" });
    chmodSync(source, 0o600);
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === "EEXIST"
        ? "the file exists (a key is never overwritten: a set encrypted under it would be lost)"
        : (error as Error).message;
    throw new LockstepError("BACKUP_KEY_FILE_INVALID", { path: source, reason });
  }
  return { ...backupKey(key), source };
}

/** What the restoring config holds for a fingerprint: the key, or why not (for refusals that name it). */
export type KeyLookup =
  | { ok: true; key: LoadedBackupKey }
  | { ok: false; code: "BACKUP_KEY_MISSING"; configured: string }
  | { ok: false; code: "BACKUP_KEY_MISMATCH"; configured: string };

/** The configured backup keys, read on first use (a config without encryption reads nothing). */
export class BackupKeys {
  private loaded: LoadedBackupKey[] | undefined;

  constructor(private readonly config: BackupEncryptionConfig | undefined) {}

  get enabled(): boolean {
    return this.config !== undefined;
  }

  /** The key new artifacts are encrypted under; undefined without backup.encryption. */
  current(): LoadedBackupKey | undefined {
    return this.config ? this.all()[0] : undefined;
  }

  /** The configured key with that fingerprint, or why there is none. */
  find(fingerprint: string): KeyLookup {
    if (!this.config) return { ok: false, code: "BACKUP_KEY_MISSING", configured: "no backup.encryption" };
    const keys = this.all();
    const key = keys.find((k) => k.fingerprint === fingerprint);
    if (key) return { ok: true, key };
    return {
      ok: false,
      code: "BACKUP_KEY_MISMATCH",
      configured: keys.map((k) => `${k.source} holds ${k.fingerprint}`).join("; "),
    };
  }

  /** The key for an artifact, or BACKUP_KEY_MISSING / BACKUP_KEY_MISMATCH naming the fingerprint it needs. */
  require(fingerprint: string, set: string, artifact: string): LoadedBackupKey {
    const found = this.find(fingerprint);
    if (found.ok) return found.key;
    if (found.code === "BACKUP_KEY_MISSING")
      throw new LockstepError("BACKUP_KEY_MISSING", { set, artifact, fingerprint });
    throw new LockstepError("BACKUP_KEY_MISMATCH", {
      set,
      artifact,
      fingerprint,
      configured: found.configured,
    });
  }

  private all(): LoadedBackupKey[] {
    if (!this.config) return [];
    this.loaded ??= [this.config["key-file"], ...this.config["previous-key-files"]].map(loadBackupKey);
    return this.loaded;
  }
}
