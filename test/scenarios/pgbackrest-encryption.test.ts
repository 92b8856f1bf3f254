import assert from "node:assert/strict";
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { parse, stringify } from "yaml";
import type { Manifest, PgBackRestRecord } from "../../src/backup/manifest.ts";
import { PgBackRest } from "../../src/backup/pgbackrest/pgbackrest-cli.ts";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { runLockstep } from "../support/cli.ts";
import { allocateKnownParty, type LedgerNetwork, startLedgerNetwork } from "../support/ledger-network.ts";
import {
  acsKeys,
  cliOk,
  createIou,
  dropNodeDatabase,
  nodeStart,
  nodeStop,
  type PlanJson,
  restore,
  serverTime,
  waitForRecovery,
} from "../support/restore-network.ts";
import { waitFor } from "../support/wait.ts";

// Issue 15 "backups are secrets" for the physical engine, on real pgBackRest and PostgreSQL:
// backup.encryption turns on pgBackRest's own repository encryption (aes-256-cbc) in a repository
// of the key's own (src/backup/pgbackrest/pgbackrest-repo.ts). A plain set, then encryption on: the
// next set goes to `pgbackrest-<fingerprint>`, whose files hold none of the database's plaintext
// (the plain repository's do: compression is off here so that they would) and which pgBackRest
// cannot read without the passphrase; verify passes. The key is rotated: the next set goes to the
// new key's repository while the old key's set restores through previous-key-files; without the
// key, or with another only, restore plan refuses naming the fingerprint; a checkpoint and a
// point-in-time plan work from the encrypted repository, and the network is restored to the
// checkpoint in place from it; a damaged repository file fails verify.

let network: LedgerNetwork | undefined;
after(() => network?.down());

const cli = cliOk;
/** Stored in the participants' databases in plain: a party's name. */
const MARKER = "zebracipher";

interface ErrorJson {
  error: { code: string; message: string };
}

function editConfig(n: LedgerNetwork, edit: (config: ConfigInput) => void): void {
  const config = parse(readFileSync(n.net.configPath, "utf8")) as ConfigInput;
  edit(config);
  writeFileSync(n.net.configPath, stringify(config));
}

function setEncryption(
  n: LedgerNetwork,
  encryption: { "key-file": string; "previous-key-files"?: string[] } | undefined,
): void {
  editConfig(n, (c) => {
    const backup = { ...(c.backup ?? {}) } as Record<string, unknown>;
    if (encryption === undefined) delete backup.encryption;
    else backup.encryption = encryption;
    c.backup = backup as ConfigInput["backup"];
  });
}

async function physicalSet(n: LedgerNetwork, ...args: string[]): Promise<Manifest> {
  const r = await cli(n, "backup", "create", "--engine", "pgbackrest", "--json", ...args);
  const set = r.json<{ set: string }>().set;
  return readManifest(n, set);
}

function readManifest(n: LedgerNetwork, set: string): Manifest {
  return JSON.parse(readFileSync(join(n.net.dir, "backups", set, "manifest.json"), "utf8")) as Manifest;
}

function records(manifest: Manifest): PgBackRestRecord[] {
  return manifest.nodes.map((node) => {
    assert.equal(node.engine?.name, "pgbackrest", node.name);
    return node.engine as PgBackRestRecord;
  });
}

/** Every regular file under dir (symbolic links, e.g. pgBackRest's `latest`, not followed). */
function files(dir: string): string[] {
  const out: string[] = [];
  const visit = (path: string) => {
    const st = lstatSync(path);
    if (st.isDirectory()) for (const e of readdirSync(path)) visit(join(path, e));
    else if (st.isFile()) out.push(path);
  };
  visit(dir);
  return out;
}

const holding = (dir: string, needle: string) =>
  files(dir).filter((f) => readFileSync(f).includes(Buffer.from(needle)));

async function keyCreate(n: LedgerNetwork, name: string): Promise<string> {
  const r = await cli(n, "backup", "key", "create", join(n.net.dir, name), "--json");
  return r.json<{ fingerprint: string }>().fingerprint;
}

test("pgbackrest with backup.encryption: its own encrypted repository per key, verified, restored, rotated, refused without the key", async (t) => {
  const n = await startLedgerNetwork({
    tolerance: "5s",
    configure: (config) => {
      config.backup = {
        ...(config.backup ?? {}),
        engine: "pgbackrest",
        // Uncompressed, so that plaintext in a repository file is found as such.
        pgbackrest: { "compress-type": "none" },
      };
    },
  });
  network = n;
  const backups = join(n.net.dir, "backups");
  const alice = await allocateKnownParty(n, 0, MARKER);
  const bob = await allocateKnownParty(n, 1, "bob");
  await createIou(n, 0, "a1", alice, bob);

  // A plain set first: the plain repository, which does hold the marker.
  const plain = await physicalSet(n, "--type", "full");
  for (const r of records(plain)) assert.equal(r.encryption, undefined);
  assert.ok(
    holding(join(backups, "pgbackrest", "backup"), MARKER).length > 0,
    "control: plain files hold it",
  );

  // Encryption on: a new repository, its stanza created by the backup itself.
  const fp1 = await keyCreate(n, "key1");
  setEncryption(n, { "key-file": "key1" });
  await createIou(n, 0, "a2", alice, bob);
  const set1 = await physicalSet(n);
  const repo1 = join(backups, `pgbackrest-${fp1}`);
  for (const r of records(set1)) {
    assert.deepEqual(r.encryption, { cipher: "aes-256-cbc", keyFingerprint: fp1 });
    assert.equal(r.type, "full", "a new repository starts with a full backup");
  }
  const key1Hex = readFileSync(join(n.net.dir, "key1"), "utf8").trim();
  const manifestText = readFileSync(join(backups, set1.id, "manifest.json"), "utf8");
  assert.ok(!manifestText.includes(key1Hex), "the manifest holds the fingerprint only");
  // pgBackRest's config holds the derived passphrase, owner-only; never the key.
  const stanza = records(set1)[0]?.stanza as string;
  const conf = join(n.dataDir, "pgbackrest", stanza, "pgbackrest.conf");
  assert.equal(statSync(conf).mode & 0o777, 0o600);
  const confText = readFileSync(conf, "utf8");
  assert.match(confText, /^repo1-cipher-type=aes-256-cbc$/m);
  assert.ok(confText.includes(`repo1-path=${repo1}\n`), "archive_command's config names the new repository");
  const pass = /^repo1-cipher-pass=(\S+)$/m.exec(confText)?.[1] ?? "";
  assert.ok(pass.length >= 32 && !confText.includes(key1Hex));
  assert.ok(!manifestText.includes(pass));

  // The encrypted repository: no plaintext, every file in OpenSSL's salted format, the info files too.
  assert.deepEqual(holding(repo1, MARKER), [], "no repository file holds the marker");
  const encryptedFiles = files(repo1);
  assert.ok(encryptedFiles.some((f) => f.includes(`/archive/${stanza}/`) && /[0-9A-F]{24}-/.test(f)));
  for (const f of encryptedFiles.filter((f) => statSync(f).size > 0))
    assert.equal(readFileSync(f).subarray(0, 8).toString("latin1"), "Salted__", f);
  assert.match(
    readFileSync(join(backups, "pgbackrest", "backup", stanza, "backup.info"), "utf8"),
    /\[backrest\]/,
  );
  // pgBackRest cannot read it without the passphrase; with it, it lists the set's backup.
  const probe = (cipherPass?: string) =>
    new PgBackRest({
      config: {
        stanza,
        repoPath: repo1,
        ...(cipherPass ? { cipherPass } : {}),
        stateDir: join(n.net.dir, `probe-${cipherPass ? "pass" : "none"}`),
        cluster: { dataDir: "/nonexistent", port: 5432, socketDir: "/tmp" },
      },
      timeoutMs: 60_000,
    });
  const blind = probe();
  blind.prepare();
  const blindInfo = await blind.info().then(
    (info) => info,
    (error: Error) => error,
  );
  assert.ok(
    blindInfo instanceof Error || (blindInfo.backups.length === 0 && blindInfo.status.code !== 0),
    `info without the passphrase must fail: ${JSON.stringify(blindInfo)}`,
  );
  const seeing = probe(pass);
  seeing.prepare();
  const label = records(set1)[0]?.label;
  assert.ok((await seeing.info()).backups.some((b) => b.label === label));

  const verified = await cli(n, "backup", "verify", set1.id, "--json");
  assert.match(verified.stderr, new RegExp(`encrypted under backup key ${fp1}`));
  assert.match(verified.stderr, /pgBackRest verify: stanza \S+ ok/);

  // Rotation: key2 encrypts new sets in its own repository; key1 only opens the old ones.
  const fp2 = await keyCreate(n, "key2");
  setEncryption(n, { "key-file": "key2", "previous-key-files": ["key1"] });
  await createIou(n, 1, "b1", bob, alice);
  const set2 = await physicalSet(n);
  for (const r of records(set2)) assert.equal(r.encryption?.keyFingerprint, fp2);
  assert.ok(existsSync(join(backups, `pgbackrest-${fp2}`, "backup", stanza, "backup.info")));
  assert.ok(readFileSync(conf, "utf8").includes(`repo1-path=${join(backups, `pgbackrest-${fp2}`)}\n`));

  // Without the key, or with another only: refused naming the fingerprint it needs.
  setEncryption(n, undefined);
  const missing = await restore(n, "plan", set1.id, ["--nodes", "participant2", "--replace"]);
  assert.equal(missing.code, 3, missing.stdout + missing.stderr);
  const missingCheck = missing.json<PlanJson>().checks.find((c) => c.check === "artifact");
  assert.equal(missingCheck?.code, "BACKUP_KEY_MISSING", JSON.stringify(missingCheck));
  assert.match(missingCheck?.message ?? "", new RegExp(fp1));
  setEncryption(n, { "key-file": "key2" });
  const other = await restore(n, "plan", set1.id, ["--nodes", "participant2", "--replace"]);
  assert.equal(other.code, 3, other.stdout + other.stderr);
  const otherCheck = other.json<PlanJson>().checks.find((c) => c.check === "artifact");
  assert.equal(otherCheck?.code, "BACKUP_KEY_MISMATCH", JSON.stringify(otherCheck));
  assert.match(otherCheck?.message ?? "", new RegExp(fp1));
  const verifyOther = await runLockstep(["backup", "verify", set1.id, "--json", ...n.cfg], {
    timeoutMs: 300_000,
  });
  assert.equal(verifyOther.code, 3, verifyOther.stdout + verifyOther.stderr);
  assert.equal(verifyOther.json<ErrorJson>().error.code, "BACKUP_KEY_MISMATCH");

  // With previous-key-files: participant2 loses its database and is restored from set1 (key1's
  // repository, by copy), then replays from the sequencer and agrees with participant1.
  setEncryption(n, { "key-file": "key2", "previous-key-files": ["key1"] });
  await createIou(n, 0, "a3", alice, bob);
  const expected = await waitFor("participant1 to hold four contracts", async () => {
    const keys = await acsKeys(n, 0, alice);
    return keys.length === 4 ? keys : undefined;
  });
  await nodeStop(n, "participant2");
  await dropNodeDatabase(n, "participant2");
  const plan = await restore(n, "plan", set1.id, ["--nodes", "participant2"]);
  assert.equal(plan.code, 0, plan.stdout + plan.stderr);
  const apply = await restore(n, "apply", set1.id, ["--nodes", "participant2"]);
  assert.equal(apply.code, 0, apply.stdout + apply.stderr);
  await nodeStart(n, "participant2");
  await waitForRecovery(n, "participant2");
  let seen: string[] = [];
  await waitFor(
    "participant2 to agree with participant1",
    async () => {
      seen = await acsKeys(n, 1, bob).catch(() => []);
      return JSON.stringify(seen) === JSON.stringify(expected) ? true : undefined;
    },
    90_000,
    500,
  ).catch((error) => {
    throw new Error(
      `${error}: participant2 holds ${JSON.stringify(seen)}, participant1 ${JSON.stringify(expected)}`,
    );
  });
  // Archiving stayed on the current repository: WAL of key2's, none of key1's since.
  assert.ok(readFileSync(conf, "utf8").includes(`pgbackrest-${fp2}`));

  // A checkpoint with encryption on: its set names key2's repository; restore plan lists it there.
  const cp = (await cli(n, "checkpoint", "create", "cp1", "--json")).json<{ set: string }>();
  for (const r of records(readManifest(n, cp.set))) assert.equal(r.encryption?.keyFingerprint, fp2);
  const cpPlan = await runLockstep(
    ["restore", "plan", "--checkpoint", "cp1", "--replace", "--json", ...n.cfg],
    {
      timeoutMs: 300_000,
    },
  );
  const cpArtifacts = cpPlan.json<PlanJson>().checks.filter((c) => c.check === "artifact");
  assert.equal(cpArtifacts.length, 4, cpPlan.stdout);
  for (const c of cpArtifacts) {
    assert.equal(c.verdict, "pass", JSON.stringify(c));
    assert.match(c.message, new RegExp(`encrypted under backup key ${fp2}`));
  }

  // A point in time: recovered from key2's repository (its WAL decrypted by archive-get).
  await createIou(n, 0, "a4", alice, bob);
  const at = await serverTime(n);
  await createIou(n, 0, "a5", alice, bob);
  await cli(n, "down", "--json");
  const pit = await runLockstep(["restore", "plan", "--to-time", at, "--replace", "--json", ...n.cfg], {
    timeoutMs: 300_000,
  });
  assert.equal(pit.code, 0, pit.stdout + pit.stderr);
  const pitSet = readManifest(n, pit.json<{ set: string }>().set);
  for (const r of records(pitSet)) assert.equal(r.encryption?.keyFingerprint, fp2);
  t.diagnostic(`point in time ${at}: set ${pitSet.id}`);

  // The whole network back to the checkpoint, in place, from key2's encrypted repository: it then
  // archives into that repository again and goes on.
  const applied = await cli(n, "restore", "apply", "--checkpoint", "cp1", "--replace", "--yes", "--json");
  assert.match(applied.stderr, /in place/);
  await cli(n, "up", "--detach", "--json");
  for (const node of ["participant1", "participant2"]) await waitForRecovery(n, node);
  await waitFor("both participants as at the checkpoint", async () => {
    const a = await acsKeys(n, 0, alice).catch(() => []);
    const b = await acsKeys(n, 1, bob).catch(() => []);
    return JSON.stringify(a) === JSON.stringify(expected) && JSON.stringify(b) === JSON.stringify(expected)
      ? true
      : undefined;
  });
  const check = await cli(n, "backup", "check", "participant1", "--json");
  assert.equal(check.json<{ ok: boolean }>().ok, true, check.stdout);
  assert.ok(readFileSync(conf, "utf8").includes(`pgbackrest-${fp2}`));
  await cli(n, "down", "--json");

  // Retention goes through every repository.
  const expire = await cli(n, "backup", "expire", "--keep", "100", "--dry-run", "--json");
  const repositories = expire
    .json<{ pgbackrest: { repository?: string }[] }>()
    .pgbackrest.map((p) => p.repository);
  assert.ok(
    repositories.includes(`pgbackrest-${fp1}`) && repositories.includes(`pgbackrest-${fp2}`),
    expire.stdout,
  );
  assert.ok(repositories.includes(undefined), "and the plain one");

  // A damaged file of key1's repository: pgBackRest's verify (decrypting it) finds it.
  const victim = files(join(repo1, "backup", stanza)).find(
    (f) => f.includes("/pg_data/base/") && statSync(f).size > 0,
  );
  assert.ok(victim);
  const bytes = readFileSync(victim);
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
  writeFileSync(victim, bytes);
  const damaged = await runLockstep(["backup", "verify", set1.id, "--json", ...n.cfg], {
    timeoutMs: 300_000,
  });
  assert.notEqual(damaged.code, 0, `verify must fail on a damaged repository: ${damaged.stdout}`);
  assert.match(damaged.stdout + damaged.stderr, /pgbackrest verify/i);
});
