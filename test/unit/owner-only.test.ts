import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { BackupRepository, writeFileAtomic } from "../../src/backup/backup-repository.ts";
import { looseModes, tightenTree } from "../../src/backup/owner-only.ts";

// Backups are secrets: what Lockstep writes into a repository is owner-only whatever the umask,
// and an older repository is tightened, pgBackRest's own folder left to its engine.

const base = mkdtempSync(join(tmpdir(), "lockstep-owner-only-"));
after(() => rmSync(base, { recursive: true, force: true }));
const mode = (path: string) => statSync(path).mode & 0o777;

test("a new repository, its set folder, marker and atomic writes are owner-only under umask 022", async () => {
  const previous = process.umask(0o022);
  try {
    const repository = new BackupRepository(join(base, "fresh", "backups"));
    const set = await repository.beginSet();
    const dir = repository.setDir(set);
    assert.equal(mode(repository.dir), 0o700);
    assert.equal(mode(dir), 0o700);
    assert.equal(mode(join(dir, "in-progress.json")), 0o600);
    await writeFileAtomic(join(dir, "verification.json"), "{}");
    assert.equal(mode(join(dir, "verification.json")), 0o600);
    assert.deepEqual(await repository.loosePaths(), []);
  } finally {
    process.umask(previous);
  }
});

test("an older repository is tightened on the next write; pgbackrest/, pgbackrest-<fp>/ and the root's search bits are kept", async () => {
  const root = join(base, "old");
  const set = join(root, "20261127T065012Z-3f9a1c");
  const pgbackrest = join(root, "pgbackrest");
  mkdirSync(join(set, "participant1"), { recursive: true });
  mkdirSync(pgbackrest);
  writeFileSync(join(set, "participant1", "toc.dat"), "x");
  writeFileSync(join(set, "manifest.json"), "{}");
  writeFileSync(join(pgbackrest, "backup.info"), "x");
  chmodSync(root, 0o755);
  chmodSync(set, 0o755);
  chmodSync(join(set, "manifest.json"), 0o644);
  chmodSync(join(set, "participant1", "toc.dat"), 0o644);
  chmodSync(pgbackrest, 0o750);
  chmodSync(join(pgbackrest, "backup.info"), 0o640);
  const repository = new BackupRepository(root);
  assert.equal((await repository.loosePaths()).length, 5);
  await repository.beginSet();
  // pgBackRest's user reaches its folder through the root: search only, nothing to list.
  assert.equal(mode(root), 0o711);
  assert.equal(mode(set), 0o700);
  assert.equal(mode(join(set, "participant1")), 0o700);
  assert.equal(mode(join(set, "manifest.json")), 0o600);
  assert.equal(mode(join(set, "participant1", "toc.dat")), 0o600);
  assert.equal(mode(pgbackrest), 0o750, "left to the pgbackrest engine");
  assert.equal(mode(join(pgbackrest, "backup.info")), 0o640);
  assert.deepEqual(await repository.loosePaths(), []);
  // An encrypted pgBackRest repository (pgbackrest-<key fingerprint>) is pgBackRest's too; a folder
  // that only looks like one is Lockstep's, and tightened.
  const encrypted = join(root, "pgbackrest-0123456789abcdef");
  const lookalike = join(root, "pgbackrest-extra");
  mkdirSync(encrypted, { mode: 0o750 });
  mkdirSync(lookalike, { mode: 0o755 });
  chmodSync(encrypted, 0o750);
  chmodSync(lookalike, 0o755);
  assert.deepEqual(await repository.loosePaths(), [lookalike]);
  await repository.tighten();
  assert.equal(mode(encrypted), 0o750, "left to the pgbackrest engine");
  assert.equal(mode(lookalike), 0o700);
  // Without pgBackRest's folder the root is 0700; a tighter mode is never loosened.
  const plain = join(base, "plain");
  mkdirSync(plain, { mode: 0o755 });
  writeFileSync(join(plain, "f"), "x", { mode: 0o400 });
  chmodSync(plain, 0o755);
  assert.deepEqual(await tightenTree(plain), [plain]);
  assert.equal(mode(plain), 0o700);
  assert.equal(mode(join(plain, "f")), 0o400);
  assert.deepEqual(await looseModes(plain), []);
});
