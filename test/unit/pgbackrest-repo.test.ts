import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { BackupKeys, createBackupKeyFile } from "../../src/backup/backup-keys.ts";
import type { PgBackRestRecord } from "../../src/backup/manifest.ts";
import { pgBackRestConfig } from "../../src/backup/pgbackrest/pgbackrest-config.ts";
import {
  cipherPass,
  currentRepo,
  inRepo,
  isRepoFolder,
  knownRepos,
  recordEncryption,
  recordRepo,
  repoFolder,
} from "../../src/backup/pgbackrest/pgbackrest-repo.ts";
import { exampleConfig } from "../../src/common/config.ts";
import type { LockstepConfig } from "../../src/common/config-schema.ts";
import { isLockstepError } from "../../src/common/errors.ts";

// pgBackRest's repository encryption (src/backup/pgbackrest/pgbackrest-repo.ts): which repository a
// stanza's backups go to, the passphrase derived from the backup key, and the refusal naming the
// fingerprint of a repository whose key is not configured.

const dir = mkdtempSync(join(tmpdir(), "lockstep-pgbackrest-repo-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const oldKey = createBackupKeyFile(join(dir, "old.key"));
const newKey = createBackupKeyFile(join(dir, "new.key"));
const repository = join(dir, "backups");

function config(encryption?: { "key-file": string; "previous-key-files": string[] }): LockstepConfig {
  const c = exampleConfig(join(dir, "data"));
  c.backup.repository = repository;
  if (encryption) c.backup.encryption = encryption;
  return c;
}

function record(keyFingerprint?: string): PgBackRestRecord {
  return {
    name: "pgbackrest",
    stanza: "lockstep-1",
    label: "20261203-130000F",
    type: "full",
    startLsn: "0/2000028",
    stopLsn: "0/2000100",
    database: "participant1",
    target: { type: "name", name: "lockstep-x-participant1", lsn: "0/3000000", timeline: 1 },
    ...(keyFingerprint ? { encryption: { cipher: "aes-256-cbc" as const, keyFingerprint } } : {}),
  };
}

test("the passphrase is derived from the key: stable, one per key, neither the key nor its fingerprint", () => {
  const pass = cipherPass(oldKey.key);
  assert.match(pass, /^[0-9a-f]{64}$/);
  assert.equal(cipherPass(Buffer.from(oldKey.key)), pass);
  assert.notEqual(cipherPass(newKey.key), pass);
  assert.notEqual(pass, oldKey.key.toString("hex"));
  assert.ok(!pass.includes(oldKey.fingerprint));
});

test("plain and encrypted repositories never share a folder", () => {
  assert.equal(repoFolder(), "pgbackrest");
  assert.equal(repoFolder(oldKey.fingerprint), `pgbackrest-${oldKey.fingerprint}`);
  for (const name of ["pgbackrest", `pgbackrest-${oldKey.fingerprint}`]) assert.ok(isRepoFolder(name), name);
  for (const name of ["pgbackrest-x", "checkpoints", "20261203T130000Z-abc", "pgbackrest-"])
    assert.ok(!isRepoFolder(name), name);

  const plain = currentRepo(config(), new BackupKeys(undefined));
  assert.equal(plain.path, join(repository, "pgbackrest"));
  assert.equal(plain.cipher, undefined);
  assert.deepEqual(recordEncryption(plain), {});

  const c = config({ "key-file": oldKey.source, "previous-key-files": [] });
  const encrypted = currentRepo(c, new BackupKeys(c.backup.encryption));
  assert.equal(encrypted.path, join(repository, `pgbackrest-${oldKey.fingerprint}`));
  assert.deepEqual(encrypted.cipher, { keyFingerprint: oldKey.fingerprint, pass: cipherPass(oldKey.key) });
  // The manifest records the fingerprint only.
  assert.deepEqual(recordEncryption(encrypted), {
    encryption: { cipher: "aes-256-cbc", keyFingerprint: oldKey.fingerprint },
  });
  assert.ok(inRepo(record(oldKey.fingerprint), encrypted));
  assert.ok(!inRepo(record(), encrypted));
  assert.ok(inRepo(record(), plain));
});

test("pgbackrest.conf of an encrypted repository names the cipher and its passphrase", () => {
  const input = {
    stanza: "lockstep",
    repoPath: join(repository, repoFolder(oldKey.fingerprint)),
    stateDir: "/srv/data/pgbackrest/lockstep",
    cluster: { dataDir: "/srv/data/postgres/data", port: 5433, socketDir: "/srv/data/postgres" },
  };
  const pass = cipherPass(oldKey.key);
  const lines = pgBackRestConfig({ ...input, cipherPass: pass }).split("\n");
  assert.ok(lines.includes("repo1-cipher-type=aes-256-cbc"));
  assert.ok(lines.includes(`repo1-cipher-pass=${pass}`));
  // In [global], with the repository it encrypts.
  assert.ok(lines.indexOf(`repo1-cipher-pass=${pass}`) < lines.indexOf("[lockstep]"));
  assert.ok(!pgBackRestConfig(input).includes("cipher"), "a plain repository has no cipher lines");
  assert.throws(
    () => pgBackRestConfig({ ...input, cipherPass: `${pass}\n[evil]` }),
    (e: unknown) => isLockstepError(e, "CONFIG_INVALID") && /passphrase/.test(e.message),
  );
  assert.throws(
    () => pgBackRestConfig({ ...input, cipherPass: "short" }),
    (e: unknown) => isLockstepError(e, "CONFIG_INVALID"),
  );
});

test("a record's repository needs its key: after a rotation through previous-key-files, else refused naming it", () => {
  const rotated = config({ "key-file": newKey.source, "previous-key-files": [oldKey.source] });
  const keys = new BackupKeys(rotated.backup.encryption);
  const where = { set: "20261203T130000Z-abc", artifact: "participant1.pgbackrest.json" };
  const old = recordRepo(rotated, keys, record(oldKey.fingerprint), where);
  assert.equal(old.folder, `pgbackrest-${oldKey.fingerprint}`);
  assert.equal(old.cipher?.pass, cipherPass(oldKey.key));
  assert.equal(recordRepo(rotated, keys, record(), where).folder, "pgbackrest");
  assert.equal(currentRepo(rotated, keys).folder, `pgbackrest-${newKey.fingerprint}`);

  const none = config();
  assert.throws(
    () => recordRepo(none, new BackupKeys(undefined), record(oldKey.fingerprint), where),
    (e: unknown) =>
      isLockstepError(e, "BACKUP_KEY_MISSING") &&
      e.message.includes(oldKey.fingerprint) &&
      e.message.includes(where.set),
  );
  const other = config({ "key-file": newKey.source, "previous-key-files": [] });
  assert.throws(
    () => recordRepo(other, new BackupKeys(other.backup.encryption), record(oldKey.fingerprint), where),
    (e: unknown) =>
      isLockstepError(e, "BACKUP_KEY_MISMATCH") &&
      e.message.includes(oldKey.fingerprint) &&
      e.message.includes(newKey.fingerprint),
  );
});

test("knownRepos: the current first, then each one on disk, those without their key marked", () => {
  for (const folder of [
    "pgbackrest",
    repoFolder(oldKey.fingerprint),
    repoFolder(newKey.fingerprint),
    "other",
  ])
    mkdirSync(join(repository, folder), { recursive: true });
  const c = config({ "key-file": newKey.source, "previous-key-files": [] });
  const known = knownRepos(c, new BackupKeys(c.backup.encryption));
  assert.deepEqual(
    known.map((k) => (k.ok ? k.repo.folder : `${k.folder} (no key ${k.keyFingerprint})`)),
    [
      repoFolder(newKey.fingerprint),
      "pgbackrest",
      `${repoFolder(oldKey.fingerprint)} (no key ${oldKey.fingerprint})`,
    ],
  );
});
