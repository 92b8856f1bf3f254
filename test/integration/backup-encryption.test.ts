import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { parse, stringify } from "yaml";
import { hashFile } from "../../src/backup/file-hash.ts";
import { type Manifest, sealManifest } from "../../src/backup/manifest.ts";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { type BackupTestNetwork, startBackupNetwork } from "../support/backup-network.ts";
import { waitFor } from "../support/ledger-network.ts";
import {
  acsKeys,
  dropNodeDatabase,
  nodeStart,
  nodeStop,
  type PlanJson,
  restore,
} from "../support/restore-network.ts";

// Backups are secrets (issue 15), through the real CLI on a running network: the repository is
// owner-only under umask 022, artifacts are encrypted under backup.encryption's key (the manifest
// names its fingerprint only), `verify` authenticates every chunk, `restore plan` refuses a set
// whose key is absent or another, and an encrypted set round-trips through `restore apply`.

interface ErrorJson {
  error: { code: string; message: string; remedy?: string };
}

process.umask(0o022); // the CLI children inherit it: modes must not depend on it
const n: BackupTestNetwork = await startBackupNetwork(1);
after(async () => {
  await n.down();
  rmSync(n.net.dir, { recursive: true, force: true });
});

function editConfig(edit: (config: ConfigInput) => void): void {
  const config = parse(readFileSync(n.net.configPath, "utf8")) as ConfigInput;
  edit(config);
  writeFileSync(n.net.configPath, stringify(config));
}

/** Every directory and file under the repository with a mode other than owner-only. */
function notOwnerOnly(dir: string): string[] {
  const bad: string[] = [];
  const visit = (path: string) => {
    const st = statSync(path);
    const want = st.isDirectory() ? 0o700 : 0o600;
    if ((st.mode & 0o777) !== want) bad.push(`${path} ${(st.mode & 0o777).toString(8)}`);
    if (st.isDirectory()) for (const e of readdirSync(path)) visit(join(path, e));
  };
  visit(dir);
  return bad;
}

async function create(...args: string[]): Promise<string> {
  const r = await n.cli("backup", "create", "--json", ...args);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.json<{ set: string }>().set;
}

let alice: string;
/** A plain set, made before backup.encryption was configured. */
let plainSet: string;
let fingerprint: string;
let encrypted: string;
/** A set whose participant1.dump was cut, its manifest rewritten to match. */
let tampered: string;

test("plain sets are owner-only too, pg_dump's own directory-format files included", async () => {
  alice = await n.traffic();
  const set = await create("--format", "directory");
  plainSet = set;
  assert.ok(existsSync(join(n.repository.setDir(set), "participant1", "toc.dat")));
  assert.deepEqual(notOwnerOnly(n.repository.dir), []);
  // An existing repository with loose modes (written before this rule) is tightened by verify.
  const dump = join(n.repository.setDir(set), "participant1", "toc.dat");
  chmodSync(dump, 0o644);
  const v = await n.cli("backup", "verify", set, "--json");
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stderr, /readable by others than their owner.*made owner-only/);
  assert.deepEqual(notOwnerOnly(n.repository.dir), []);
});

test("backup key create writes 64 hex digits owner-only and never overwrites", async () => {
  const path = join(n.net.dir, "backup.key");
  const r = await n.cli("backup", "key", "create", path, "--json");
  assert.equal(r.code, 0, r.stdout + r.stderr);
  fingerprint = r.json<{ fingerprint: string }>().fingerprint;
  assert.match(fingerprint, /^[0-9a-f]{16}$/);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.match(readFileSync(path, "utf8"), /^[0-9a-f]{64}\n$/);
  const again = await n.cli("backup", "key", "create", path, "--json");
  assert.equal(again.code, 1, again.stdout);
  assert.equal(again.json<ErrorJson>().error.code, "BACKUP_KEY_FILE_INVALID");
  // Relative to the config file's folder, as every path in it.
  editConfig((c) => {
    c.backup = { ...c.backup, encryption: { "key-file": "backup.key" } };
  });
});

test("an encrypted set: the manifest names the key's fingerprint only, artifacts are ciphertext, all owner-only", async () => {
  await n.traffic();
  encrypted = await create();
  const manifest = await n.repository.readManifest(encrypted);
  const keyHex = readFileSync(join(n.net.dir, "backup.key"), "utf8").trim();
  assert.ok(!readFileSync(join(n.repository.setDir(encrypted), "manifest.json"), "utf8").includes(keyHex));
  for (const node of manifest.nodes) {
    const record = node.engine?.name === "pg-dump" ? node.engine : undefined;
    assert.equal(record?.encryption?.keyFingerprint, fingerprint, node.name);
    const file = node.files[0];
    assert.ok(file);
    const path = join(n.repository.setDir(encrypted), file.path);
    const head = readFileSync(path).subarray(0, 8).toString("latin1");
    assert.equal(head, "LKSTPENC", `${file.path} is encrypted`);
    // The manifest's SHA-256 is the stored file's (the ciphertext).
    assert.equal((await hashFile(path)).sha256, file.sha256);
  }
  assert.deepEqual(notOwnerOnly(n.repository.dir), []);
});

test("verify authenticates every chunk; the drill restores the encrypted set and leaves no plaintext", async () => {
  const v = await n.cli("backup", "verify", encrypted, "--json");
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(
    v.stderr,
    new RegExp(`participant1: every chunk authenticates under backup key ${fingerprint}`),
  );
  assert.match(v.stderr, /participant1: archive lists \d+ entries/);
  const drill = await n.cli("backup", "verify", encrypted, "--drill", "--json");
  assert.equal(drill.code, 0, drill.stdout + drill.stderr);
  const r = drill.json<{ level: string; drill: { node: string; checks: string[] }[] }>();
  assert.equal(r.level, "drill");
  assert.ok(
    r.drill.find((d) => d.node === "participant1")?.checks.some((c) => /^ACS of 2 contracts/.test(c)),
  );
  // The drill's parallel restore decrypted into an owner-only scratch folder: removed after.
  const scratch = join(n.dataDir, "backup-scratch");
  assert.deepEqual(existsSync(scratch) ? readdirSync(scratch) : [], []);
});

test("the directory format: pg_dump writes outside the repository, each file encrypted in; verify and drill pass", async () => {
  const set = await create("--format", "directory", "--nodes", "participant1");
  const dir = join(n.repository.setDir(set), "participant1");
  const files = readdirSync(dir);
  assert.ok(files.includes("toc.dat"), files.join());
  for (const f of files)
    assert.equal(readFileSync(join(dir, f)).subarray(0, 8).toString("latin1"), "LKSTPENC");
  assert.deepEqual(notOwnerOnly(n.repository.dir), []);
  const drill = await n.cli("backup", "verify", set, "--drill", "--json");
  assert.equal(drill.code, 0, drill.stdout + drill.stderr);
  assert.match(drill.stderr, /participant1: every chunk authenticates/);
  assert.match(drill.stderr, /participant1: archive lists \d+ entries/);
  const scratch = join(n.dataDir, "backup-scratch");
  assert.deepEqual(existsSync(scratch) ? readdirSync(scratch) : [], []);
});

test("with backup.encryption, a key file that cannot be used refuses pgbackrest and checkpoints before anything starts", async () => {
  // The pgbackrest engine encrypts through pgBackRest's repository encryption (its round trips:
  // test/scenarios/pgbackrest-encryption.test.ts); its key is read before a set is begun.
  editConfig((c) => {
    c.backup = { ...c.backup, encryption: { "key-file": "missing.key" } };
  });
  try {
    const before = readdirSync(n.repository.dir).sort();
    const r = await n.cli("backup", "create", "--engine", "pgbackrest", "--json");
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const e = r.json<ErrorJson>().error;
    assert.equal(e.code, "BACKUP_KEY_FILE_INVALID");
    assert.match(e.message, /missing\.key/);
    assert.deepEqual(readdirSync(n.repository.dir).sort(), before, "no set was begun");
    const c = await n.cli("checkpoint", "create", "cp1", "--json");
    assert.equal(c.code, 1, c.stdout + c.stderr);
    assert.equal(c.json<ErrorJson>().error.code, "BACKUP_KEY_FILE_INVALID");
    assert.deepEqual(readdirSync(n.repository.dir).sort(), before, "no checkpoint set or record was begun");
  } finally {
    editConfig((c) => {
      c.backup = { ...c.backup, encryption: { "key-file": "backup.key" } };
    });
  }
});

/** Replaces a set's file and rewrites its manifest to match (size, SHA-256, checksum): what a writer of the repository can do. */
function forge(set: string, file: string, bytes: Buffer): void {
  const dir = n.repository.setDir(set);
  writeFileSync(join(dir, file), bytes);
  const path = join(dir, "manifest.json");
  const manifest = JSON.parse(readFileSync(path, "utf8")) as Manifest;
  for (const node of manifest.nodes)
    for (const f of node.files)
      if (f.path === file) {
        f.bytes = String(bytes.length);
        f.sha256 = createHashHex(bytes);
      }
  const { checksum: _old, ...unsigned } = manifest;
  writeFileSync(path, `${JSON.stringify(sealManifest(unsigned), null, 2)}\n`);
}

function createHashHex(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

test("a tampered artifact fails verify with BACKUP_AUTHENTICATION_FAILED, even with its manifest rewritten to match", async () => {
  const set = await create();
  const dir = n.repository.setDir(set);
  // A flipped byte alone: the stored file no longer matches the manifest.
  const original = readFileSync(join(dir, "participant1.dump"));
  const flipped = Buffer.from(original);
  const at = Math.floor(flipped.length / 2);
  flipped[at] = (flipped[at] as number) ^ 0x01;
  writeFileSync(join(dir, "participant1.dump"), flipped);
  let v = await n.cli("backup", "verify", set, "--json");
  assert.equal(v.json<ErrorJson>().error.code, "BACKUP_CORRUPTED");
  // The same with the manifest made to match: only the authentication tags can tell.
  forge(set, "participant1.dump", flipped);
  v = await n.cli("backup", "verify", set, "--json");
  assert.equal(v.code, 1, v.stdout);
  let e = v.json<ErrorJson>().error;
  assert.equal(e.code, "BACKUP_AUTHENTICATION_FAILED");
  assert.match(
    e.message,
    new RegExp(`participant1\\.dump of backup set ${set} fails authentication: chunk \\d+`),
  );
  // Another node's artifact put in its place (a valid file under the same key): refused by its binding.
  forge(set, "participant1.dump", readFileSync(join(dir, "mediator1.dump")));
  v = await n.cli("backup", "verify", set, "--json");
  e = v.json<ErrorJson>().error;
  assert.equal(e.code, "BACKUP_AUTHENTICATION_FAILED");
  assert.match(e.message, /mediator1\.dump, not .*participant1\.dump/);
  // Cut at the end: the last chunk is missing.
  forge(set, "participant1.dump", original.subarray(0, original.length - 100));
  v = await n.cli("backup", "verify", set, "--json");
  assert.equal(v.json<ErrorJson>().error.code, "BACKUP_AUTHENTICATION_FAILED");
  tampered = set;
});

test("restore plan refuses a set whose key is absent or another, naming the fingerprint it needs", async () => {
  const keyFile = join(n.net.dir, "backup.key");
  editConfig((c) => {
    c.backup = { ...c.backup, encryption: undefined };
  });
  let plan = await restore(n, "plan", encrypted, ["--nodes", "participant1"]);
  assert.equal(plan.code, 3, plan.stdout + plan.stderr);
  let check = plan.json<PlanJson>().checks.find((c) => c.check === "artifact");
  assert.deepEqual([check?.verdict, check?.code], ["refuse", "BACKUP_KEY_MISSING"]);
  assert.match(check?.message ?? "", new RegExp(`encrypted under backup key ${fingerprint}`));
  assert.match(check?.remedy ?? "", new RegExp(fingerprint));
  // Another key only: named, and the one needed.
  const other = join(n.net.dir, "other.key");
  assert.equal((await n.cli("backup", "key", "create", other)).code, 0);
  editConfig((c) => {
    c.backup = { ...c.backup, encryption: { "key-file": other } };
  });
  plan = await restore(n, "plan", encrypted, ["--nodes", "participant1"]);
  assert.equal(plan.code, 3);
  check = plan.json<PlanJson>().checks.find((c) => c.check === "artifact");
  assert.equal(check?.code, "BACKUP_KEY_MISMATCH");
  assert.match(
    check?.message ?? "",
    new RegExp(`key ${fingerprint}; the configured keys are others \\(${other} holds`),
  );
  // verify refuses as clearly.
  const v = await n.cli("backup", "verify", encrypted, "--json");
  assert.equal(v.json<ErrorJson>().error.code, "BACKUP_KEY_MISMATCH");
  // A key the config lacks is no verdict on the set: the drill's result stays.
  const list = (await n.cli("backup", "list", "--json")).json<{
    sets: { id: string; verified: { ok: boolean; level: string } | null }[];
  }>();
  assert.deepEqual(list.sets.find((x) => x.id === encrypted)?.verified, {
    ...list.sets.find((x) => x.id === encrypted)?.verified,
    ok: true,
    level: "drill",
  });
  // The old key as a previous key: a new set goes under the new key, the old set still opens.
  editConfig((c) => {
    c.backup = { ...c.backup, encryption: { "key-file": other, "previous-key-files": [keyFile] } };
  });
  plan = await restore(n, "plan", encrypted, ["--nodes", "participant1"]);
  check = plan.json<PlanJson>().checks.find((c) => c.check === "artifact");
  assert.equal(check?.verdict, "pass", JSON.stringify(check));
  assert.match(
    check?.message ?? "",
    new RegExp(`encrypted under backup key ${fingerprint}, configured in ${keyFile}`),
  );
  // A plain set while encryption is configured: refused (an older set, or a rewritten manifest:
  // nothing tells them apart), unless the operator vouches for it (test/integration/backup-secrets-attacks.test.ts).
  plan = await restore(n, "plan", plainSet, ["--nodes", "participant1"]);
  check = plan.json<PlanJson>().checks.find((c) => c.check === "encryption");
  assert.deepEqual([check?.verdict, check?.code], ["refuse", "BACKUP_NOT_ENCRYPTED"]);
});

test("an encrypted set round-trips through restore apply (one job: decrypted into pg_restore's stdin)", async () => {
  const before = await acsKeys(n, 0, alice);
  assert.equal(before.length, 2);
  await nodeStop(n, "participant1");
  await dropNodeDatabase(n, "participant1");
  // The cut set passes the plan (its manifest was made to match) but not the restore: pg_restore
  // got only authenticated chunks, and the missing last one fails the apply; nothing is put in place.
  const failed = await restore(n, "apply", tampered, ["--nodes", "participant1", "--jobs", "1"]);
  assert.equal(failed.code, 1, failed.stdout + failed.stderr);
  const e = failed.json<ErrorJson>().error;
  assert.equal(e.code, "RESTORE_FAILED");
  assert.match(
    e.message,
    /BACKUP_AUTHENTICATION_FAILED: .*participant1\.dump of backup set .* fails authentication/,
  );
  const apply = await restore(n, "apply", encrypted, ["--nodes", "participant1", "--jobs", "1"]);
  assert.equal(apply.code, 0, apply.stdout + apply.stderr);
  assert.match(apply.stderr, new RegExp(`decrypted under backup key ${fingerprint}`));
  await nodeStart(n, "participant1");
  await waitFor(
    "participant1's restored ACS",
    async () => {
      const now = await acsKeys(n, 0, alice).catch(() => []);
      return now.join() === before.join() ? now : undefined;
    },
    60_000,
    500,
  );
  assert.deepEqual(notOwnerOnly(n.repository.dir), []);
});
