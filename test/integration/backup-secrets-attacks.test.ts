import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  type FSWatcher,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  watch,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative } from "node:path";
import { after, test } from "node:test";
import { parse, stringify } from "yaml";
import { BackupRepository } from "../../src/backup/backup-repository.ts";
import { type Manifest, sealManifest } from "../../src/backup/manifest.ts";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { type BackupTestNetwork, startBackupNetwork } from "../support/backup-network.ts";
import { nodeStop, type PlanJson, restore } from "../support/restore-network.ts";

// "Backups are secrets" (issue 15) attacked through the real CLI on one running network: an
// operator's bad day (umask 000, a repository made 0755 by hand, a symlinked repository, key files
// with loose modes or the wrong contents, a rotated key) and a writer of the repository without the
// key (artifacts swapped between sets, a plain dump slipped in with the manifest rewritten to
// match, a key fingerprint edited). Each refusal is asserted by its code, and nothing is restored.

interface ErrorJson {
  error: { code: string; message: string; remedy?: string };
}

// The CLI and every child it starts (pg_dump, pg_restore) inherit it: nothing may depend on it.
process.umask(0o000);
const n: BackupTestNetwork = await startBackupNetwork(1);
const repoDir = n.repository.dir;
const scratchRoot = join(n.dataDir, "backup-scratch");
after(async () => {
  await n.down();
  rmSync(n.net.dir, { recursive: true, force: true });
});

function editConfig(edit: (config: ConfigInput) => void): void {
  const config = parse(readFileSync(n.net.configPath, "utf8")) as ConfigInput;
  edit(config);
  writeFileSync(n.net.configPath, stringify(config));
}

function setEncryption(
  encryption: { "key-file": string; "previous-key-files"?: string[] } | undefined,
): void {
  editConfig((c) => {
    const backup = { ...(c.backup ?? {}) };
    if (encryption) backup.encryption = encryption;
    else delete backup.encryption;
    c.backup = backup;
  });
}

/** Every directory and file under `dir` (the root followed if a link) with a mode other than owner-only. */
function notOwnerOnly(dir: string): string[] {
  const bad: string[] = [];
  const visit = (path: string, top: boolean) => {
    const st = top ? statSync(path) : lstatSync(path);
    const want = st.isDirectory() ? 0o700 : 0o600;
    if ((st.mode & 0o777) !== want) bad.push(`${path} ${(st.mode & 0o777).toString(8)}`);
    if (st.isDirectory()) for (const e of readdirSync(path)) visit(join(path, e), false);
  };
  visit(dir, true);
  return bad;
}

/**
 * Watches trees (inotify, recursive) while a command runs and looks at each path as it appears or
 * changes: `loose` collects those with any group/other bit, `exposed` those of them that others
 * could also reach (every folder from the watched root down lets group or others through).
 */
function watchModes(roots: string[]): { seen: number; loose: string[]; exposed: string[]; stop: () => void } {
  let seen = 0;
  const loose = new Set<string>();
  const exposed = new Set<string>();
  const look = (root: string, path: string) => {
    try {
      const mode = lstatSync(path).mode & 0o777;
      seen++;
      if ((mode & 0o077) === 0) return;
      loose.add(`${relative(root, path)} ${mode.toString(8)}`);
      for (let dir = dirname(path); ; dir = dirname(dir)) {
        if ((statSync(dir).mode & 0o011) === 0) return; // a folder others cannot pass
        if (dir === root) break;
      }
      exposed.add(`${relative(root, path)} ${mode.toString(8)}`);
    } catch {
      // gone already (a temp file renamed, a scratch folder removed)
    }
  };
  const watchers: FSWatcher[] = roots.map((root) => {
    mkdirSync(root, { recursive: true, mode: 0o700 });
    return watch(root, { recursive: true }, (_event, name) => {
      if (name) look(root, join(root, name.toString()));
    });
  });
  return {
    get seen() {
      return seen;
    },
    get loose() {
      return [...loose];
    },
    get exposed() {
      return [...exposed];
    },
    stop: () => {
      for (const w of watchers) w.close();
    },
  };
}

async function create(...args: string[]): Promise<string> {
  const r = await n.cli("backup", "create", "--json", ...args);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.json<{ set: string }>().set;
}

async function cliError(...args: string[]): Promise<{ code: string; message: string; exit: number }> {
  const r = await n.cli(...args, "--json");
  assert.notEqual(r.code, 0, `${args.join(" ")} succeeded: ${r.stdout}`);
  const e = r.json<ErrorJson>().error;
  return { code: e.code, message: e.message, exit: r.code };
}

const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

/**
 * What a writer of the repository can do without the key: replace files of a set and rewrite its
 * manifest to match (sizes, SHA-256, the checksum recomputed). Returns an undo.
 */
function forge(
  set: string,
  files: Record<string, Buffer>,
  edit: (m: Manifest) => void = () => {},
): () => void {
  const dir = n.repository.setDir(set);
  const manifestPath = join(dir, "manifest.json");
  const saved = new Map<string, Buffer>([[manifestPath, readFileSync(manifestPath)]]);
  const manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as Manifest;
  for (const [file, bytes] of Object.entries(files)) {
    saved.set(join(dir, file), readFileSync(join(dir, file)));
    writeFileSync(join(dir, file), bytes, { mode: 0o600 });
    for (const node of manifest.nodes)
      for (const f of node.files)
        if (f.path === file) {
          f.bytes = String(bytes.length);
          f.sha256 = sha256(bytes);
        }
  }
  edit(manifest);
  const { checksum: _old, ...unsigned } = manifest;
  writeFileSync(manifestPath, `${JSON.stringify(sealManifest(unsigned), null, 2)}\n`);
  return () => {
    for (const [path, bytes] of saved) writeFileSync(path, bytes);
  };
}

/** Drops a node's `encryption` from its engine record: the manifest then calls the artifact plain. */
const declarePlain =
  (...nodes: string[]) =>
  (m: Manifest) => {
    for (const node of m.nodes)
      if (nodes.includes(node.name) && node.engine?.name === "pg-dump") delete node.engine.encryption;
  };

function planCheck(plan: PlanJson, node: string, check: string) {
  const found = plan.checks.find((c) => c.node === node && c.check === check);
  assert.ok(found, `${node}:${check} in ${JSON.stringify(plan.checks.map((c) => `${c.node}:${c.check}`))}`);
  return found;
}

const participantDatabaseExists = async () =>
  (await new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) }).listDatabases()).includes(
    embeddedDatabaseName("participant1"),
  );

const keyFile = join(n.net.dir, "backup.key");
let fingerprint: string;
let plainSet: string;
let encrypted: string;
let encrypted2: string;
let encryptedDir: string;

test("under umask 000, a repository made 0755 by hand: backup create tightens it, and nothing is ever reachable by others", async () => {
  assert.equal(
    execFileSync("sh", ["-c", "umask"], { encoding: "utf8" }).trim(),
    "0000",
    "children inherit umask 000",
  );
  mkdirSync(join(repoDir, "notes"), { recursive: true, mode: 0o755 });
  chmodSync(repoDir, 0o755);
  chmodSync(join(repoDir, "notes"), 0o755);
  writeFileSync(join(repoDir, "notes", "README"), "who may read this", { mode: 0o644 });
  await n.traffic();
  const w = watchModes([repoDir, scratchRoot]);
  try {
    plainSet = await create();
    const dirSet = await create("--format", "directory", "--nodes", "participant1");
    // pg_dump's directory format writes its files with its own modes (0666 under umask 000) until
    // the engine tightens them; inside the set's 0700 folder nobody else can reach them meanwhile.
    for (const path of w.loose)
      assert.ok(
        path.startsWith(join(dirSet, "participant1")),
        `only pg_dump's own files are ever loose: ${path}`,
      );
  } finally {
    w.stop();
  }
  console.log(`watched ${w.seen} path events, ${w.loose.length} loose while written (none reachable)`);
  assert.ok(w.seen > 10, `the watcher saw the sets being written (${w.seen})`);
  assert.deepEqual(w.exposed, [], "no path was reachable by others while the sets were written");
  assert.deepEqual(
    notOwnerOnly(repoDir),
    [],
    "the repository, the hand-made folder and every set: owner-only",
  );
  // A key file under umask 000 too.
  const r = await n.cli("backup", "key", "create", keyFile, "--json");
  assert.equal(r.code, 0, r.stdout + r.stderr);
  fingerprint = r.json<{ fingerprint: string }>().fingerprint;
  assert.equal(statSync(keyFile).mode & 0o777, 0o600);
});

test("key files that cannot be used refuse backup create with BACKUP_KEY_FILE_INVALID before any set is begun", async () => {
  const hex = readFileSync(keyFile, "utf8").trim();
  const bad = (name: string, text: string, mode: number) => {
    const path = join(n.net.dir, name);
    writeFileSync(path, text, { mode });
    chmodSync(path, mode);
    return name;
  };
  const cases: [string, { "key-file": string; "previous-key-files"?: string[] }, RegExp][] = [
    ["missing", { "key-file": "absent.key" }, /absent\.key.*ENOENT/],
    ["world-readable", { "key-file": bad("k644.key", hex, 0o644) }, /mode 0644.*chmod 600/],
    ["group-readable", { "key-file": bad("k640.key", hex, 0o640) }, /mode 0640/],
    ["group-writable", { "key-file": bad("k620.key", hex, 0o620) }, /mode 0620/],
    [
      "a loose previous key",
      { "key-file": "backup.key", "previous-key-files": [bad("p.key", hex, 0o604)] },
      /mode 0604/,
    ],
    ["31 bytes", { "key-file": bad("short.key", hex.slice(0, 62), 0o600) }, /64 hex digits/],
    [
      "base64",
      { "key-file": bad("b64.key", Buffer.from(hex, "hex").toString("base64"), 0o600) },
      /64 hex digits/,
    ],
  ];
  const before = readdirSync(repoDir).sort();
  try {
    for (const [what, encryption, reason] of cases) {
      setEncryption(encryption);
      const e = await cliError("backup", "create");
      assert.equal(e.code, "BACKUP_KEY_FILE_INVALID", `${what}: ${e.message}`);
      assert.match(e.message, reason, what);
      assert.deepEqual(readdirSync(repoDir).sort(), before, `${what}: no set was begun or left behind`);
    }
  } finally {
    setEncryption({ "key-file": "backup.key" });
  }
});

test("encrypted sets under umask 000: ciphertext only, the directory format's plaintext only in an owner-only scratch folder", async () => {
  await n.traffic();
  const w = watchModes([repoDir, scratchRoot]);
  try {
    encrypted = await create();
    encrypted2 = await create();
    encryptedDir = await create("--format", "directory", "--nodes", "participant1");
  } finally {
    w.stop();
  }
  console.log(`watched ${w.seen} path events, ${w.loose.length} loose while written (none reachable)`);
  assert.ok(w.seen > 10, `the watcher saw the sets being written (${w.seen})`);
  assert.deepEqual(w.exposed, [], "no path was reachable by others while the sets were written");
  // Loose at all: only pg_dump's plaintext files in the scratch folder (0700, removed afterwards).
  for (const path of w.loose) assert.match(path, /^backup-\d+-\w+\/dump\//, path);
  assert.deepEqual(existsSync(scratchRoot) ? readdirSync(scratchRoot) : [], []);
  assert.deepEqual(notOwnerOnly(repoDir), []);
  for (const set of [encrypted, encrypted2]) {
    const head = readFileSync(join(n.repository.setDir(set), "participant1.dump")).subarray(0, 8);
    assert.equal(head.toString("latin1"), "LKSTPENC");
  }
});

test("a symlinked repository path: its target is tightened by backup create, and verify sees and tightens loose files in it", async () => {
  const target = join(n.net.dir, "elsewhere");
  const link = join(n.net.dir, "backups-link");
  mkdirSync(target, { mode: 0o755 });
  chmodSync(target, 0o755);
  symlinkSync(target, link);
  editConfig((c) => {
    c.backup = { ...c.backup, repository: "backups-link" };
  });
  try {
    const set = await create("--nodes", "participant1");
    assert.equal(statSync(target).mode & 0o777, 0o700, "the link's target made owner-only");
    assert.ok(lstatSync(link).isSymbolicLink(), "the link itself left alone");
    const dump = join(target, set, "participant1.dump");
    chmodSync(dump, 0o644);
    chmodSync(target, 0o755);
    const v = await n.cli("backup", "verify", set, "--json");
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.match(v.stderr, /2 path\(s\) .* were readable by others than their owner.*made owner-only/);
    assert.deepEqual(notOwnerOnly(link), []);
    // A link inside the repository is never followed: what it points at is not the repository's.
    const outside = join(n.net.dir, "not-a-backup");
    writeFileSync(outside, "x", { mode: 0o644 });
    chmodSync(outside, 0o644);
    symlinkSync(outside, join(target, set, "stray-link"));
    assert.equal((await n.cli("backup", "verify", set, "--json")).code, 0);
    assert.equal(statSync(outside).mode & 0o777, 0o644, "not followed");
    rmSync(join(target, set, "stray-link"));
    assert.equal(new BackupRepository(link).setDir(set), join(link, set));
  } finally {
    editConfig((c) => {
      c.backup = { ...c.backup, repository: "backups" };
    });
  }
});

test("pgBackRest under umask 000: its encrypted repository keeps its own modes (nothing for others), Lockstep's files owner-only", async () => {
  // Archiving on restarts the embedded cluster: with the nodes down, as `backup setup` asks.
  for (const args of [["down"], ["backup", "setup", "participant1"], ["up", "--detach"]]) {
    const r = await n.cli(...args, "--json");
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
  }
  const w = watchModes([repoDir]);
  let set: string;
  try {
    set = await create("--engine", "pgbackrest", "--nodes", "participant1");
  } finally {
    w.stop();
  }
  const repo = join(repoDir, `pgbackrest-${fingerprint}`);
  assert.ok(existsSync(join(repo, "backup")), "the key's own encrypted repository");
  // pgBackRest runs as the cluster's user and gives its files 0640 / folders 0750 (its group may
  // read them: docs/security.md), whatever the umask; others get nothing anywhere, but the root's
  // search bit, through which that user reaches its folder (search lists nothing).
  const forOthers: string[] = [];
  const visit = (path: string) => {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) return;
    const others = st.mode & 0o007 & (path === repoDir ? 0o006 : 0o007);
    const group = st.mode & 0o070 & (path === repoDir ? 0o060 : 0o070);
    if (others !== 0 || (group !== 0 && !path.startsWith(`${repoDir}/pgbackrest`)))
      forOthers.push(`${relative(repoDir, path)} ${(st.mode & 0o777).toString(8)}`);
    if (st.isDirectory()) for (const e of readdirSync(path)) visit(join(path, e));
  };
  visit(repoDir);
  assert.deepEqual(forOthers, []);
  for (const path of w.exposed)
    assert.ok(path.startsWith("pgbackrest"), `exposed while written outside pgBackRest's folders: ${path}`);
  assert.deepEqual(notOwnerOnly(n.repository.setDir(set)), [], "the set's own folder and descriptor files");
  assert.equal((await n.cli("backup", "verify", set, "--json")).code, 0);
  // Its record declared plain (pointing at the plain pgBackRest repository): refused as a downgrade.
  const undo = forge(set, {}, (m) => {
    for (const node of m.nodes) if (node.engine?.name === "pgbackrest") delete node.engine.encryption;
  });
  try {
    const plan = await restore(n, "plan", set, ["--nodes", "participant1"]);
    assert.equal(plan.code, 3, plan.stdout + plan.stderr);
    const check = planCheck(plan.json<PlanJson>(), "participant1", "encryption");
    assert.deepEqual([check.verdict, check.code], ["refuse", "BACKUP_NOT_ENCRYPTED"]);
  } finally {
    undo();
  }
});

test("a plain dump slipped into an encrypted set, its manifest rewritten to match: verify and restore plan refuse", async () => {
  const plainDump = readFileSync(join(n.repository.setDir(plainSet), "participant1.dump"));
  const undo = forge(encrypted, { "participant1.dump": plainDump }, declarePlain("participant1"));
  try {
    const v = await cliError("backup", "verify", encrypted);
    assert.equal(v.code, "BACKUP_CORRUPTED");
    assert.match(
      v.message,
      /participant1\.dump is stored in plain while the set's other artifacts are encrypted/,
    );
    const plan = await restore(n, "plan", encrypted, ["--nodes", "participant1"]);
    assert.equal(plan.code, 3, plan.stdout + plan.stderr);
    const check = planCheck(plan.json<PlanJson>(), "participant1", "encryption");
    assert.deepEqual([check.verdict, check.code], ["refuse", "BACKUP_CORRUPTED"]);
    // Not a decision an operator can take: --force encryption does not lift it.
    const forced = await restore(n, "plan", encrypted, ["--nodes", "participant1", "--force", "encryption"]);
    assert.equal(forced.code, 3);
    assert.equal(planCheck(forced.json<PlanJson>(), "participant1", "encryption").verdict, "refuse");
  } finally {
    undo();
  }
  // The manifest calls the artifacts plain, the files are still ciphertext: pg_restore cannot read them.
  const undo2 = forge(encrypted, {}, declarePlain("participant1", "mediator1", "sequencer1"));
  try {
    const v = await n.cli("backup", "verify", encrypted, "--json");
    assert.equal(v.code, 1, v.stdout + v.stderr);
    assert.equal(v.json<ErrorJson>().error.code, "BACKUP_CORRUPTED");
    const plan = await restore(n, "plan", encrypted, ["--nodes", "participant1"]);
    assert.equal(plan.code, 3);
    const check = planCheck(plan.json<PlanJson>(), "participant1", "encryption");
    assert.deepEqual([check.verdict, check.code], ["refuse", "BACKUP_NOT_ENCRYPTED"]);
  } finally {
    undo2();
  }
  assert.equal((await n.cli("backup", "verify", encrypted, "--json")).code, 0, "the set, put back, verifies");
});

test("an artifact of another set, or a key fingerprint edited in the manifest, fails verify by its code", async () => {
  // The same node's artifact of another set under the same key: bound to its own set's name.
  const undo = forge(encrypted, {
    "participant1.dump": readFileSync(join(n.repository.setDir(encrypted2), "participant1.dump")),
  });
  try {
    const v = await cliError("backup", "verify", encrypted);
    assert.equal(v.code, "BACKUP_AUTHENTICATION_FAILED");
    assert.match(
      v.message,
      new RegExp(`the file is ${encrypted2}/participant1\\.dump, not ${encrypted}/participant1\\.dump`),
    );
  } finally {
    undo();
  }
  // A directory-format file put under another's name in the same artifact.
  const files = readdirSync(join(n.repository.setDir(encryptedDir), "participant1")).filter((f) =>
    /^\d+\.dat/.test(f),
  );
  const data = files[0] as string;
  const setDir = n.repository.setDir(encryptedDir);
  const undo2 = forge(encryptedDir, {
    [`participant1/${data}`]: readFileSync(join(setDir, "participant1", "toc.dat")),
  });
  try {
    const v = await cliError("backup", "verify", encryptedDir);
    assert.equal(v.code, "BACKUP_AUTHENTICATION_FAILED");
    assert.match(
      v.message,
      new RegExp(`participant1/toc\\.dat, not .*participant1/${data.replace(".", "\\.")}`),
    );
  } finally {
    undo2();
  }
  // A data file deleted with its manifest entry: every remaining file authenticates, but the
  // table of contents (toc.dat, authenticated too) names it.
  const manifestPath = join(setDir, "manifest.json");
  const savedManifest = readFileSync(manifestPath);
  const savedData = readFileSync(join(setDir, "participant1", data));
  try {
    rmSync(join(setDir, "participant1", data));
    const manifest = JSON.parse(savedManifest.toString("utf8")) as Manifest;
    for (const node of manifest.nodes)
      node.files = node.files.filter((f) => f.path !== `participant1/${data}`);
    const { checksum: _old, ...unsigned } = manifest;
    writeFileSync(manifestPath, `${JSON.stringify(sealManifest(unsigned), null, 2)}\n`);
    const v = await cliError("backup", "verify", encryptedDir);
    assert.equal(v.code, "BACKUP_CORRUPTED");
    assert.match(v.message, new RegExp(`names data files it lacks: ${data.split(".")[0]}\\.dat`));
  } finally {
    writeFileSync(join(setDir, "participant1", data), savedData, { mode: 0o600 });
    writeFileSync(manifestPath, savedManifest);
  }
  assert.equal((await n.cli("backup", "verify", encryptedDir, "--json")).code, 0, "put back, it verifies");
  // The fingerprint edited to another configured key's (a rotation's): that key does not open it.
  const other = join(n.net.dir, "other.key");
  const made = await n.cli("backup", "key", "create", other, "--json");
  const otherFingerprint = made.json<{ fingerprint: string }>().fingerprint;
  setEncryption({ "key-file": "other.key", "previous-key-files": ["backup.key"] });
  const renamed = (to: string) => (m: Manifest) => {
    for (const node of m.nodes)
      if (node.engine?.name === "pg-dump" && node.engine.encryption)
        node.engine.encryption.keyFingerprint = to;
  };
  try {
    const undo3 = forge(encrypted, {}, renamed(otherFingerprint));
    try {
      const v = await cliError("backup", "verify", encrypted);
      assert.equal(v.code, "BACKUP_AUTHENTICATION_FAILED");
      assert.match(
        v.message,
        new RegExp(`encrypted under backup key ${fingerprint}, not ${otherFingerprint}`),
      );
    } finally {
      undo3();
    }
    const undo4 = forge(encrypted, {}, renamed("0123456789abcdef"));
    try {
      const v = await cliError("backup", "verify", encrypted);
      assert.equal(v.code, "BACKUP_KEY_MISMATCH");
      assert.match(v.message, /0123456789abcdef/);
      const plan = await restore(n, "plan", encrypted, ["--nodes", "participant1"]);
      const check = planCheck(plan.json<PlanJson>(), "participant1", "artifact");
      assert.deepEqual([check.verdict, check.code], ["refuse", "BACKUP_KEY_MISMATCH"]);
    } finally {
      undo4();
    }
    // The key rotated between backup and restore: the old one as a previous key opens the set.
    assert.equal((await n.cli("backup", "verify", encrypted, "--json")).code, 0);
    setEncryption({ "key-file": "other.key" });
    const e = await cliError("backup", "verify", encrypted);
    assert.equal(e.code, "BACKUP_KEY_MISMATCH");
    assert.match(e.message, new RegExp(fingerprint));
  } finally {
    setEncryption({ "key-file": "backup.key" });
  }
});

test("restore apply refuses the forged sets and restores nothing; a trusted plain set needs --force encryption", async () => {
  await nodeStop(n, "participant1");
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  await cluster.start();
  await cluster.dropDatabase(embeddedDatabaseName("participant1"));
  const plainDump = readFileSync(join(n.repository.setDir(plainSet), "participant1.dump"));
  // One plain dump among encrypted ones: a tampered set, refused whatever --force says.
  const undo = forge(encrypted, { "participant1.dump": plainDump }, declarePlain("participant1"));
  try {
    const r = await restore(n, "apply", encrypted, ["--nodes", "participant1", "--force", "encryption"]);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    const e = r.json<ErrorJson>().error;
    assert.equal(e.code, "RESTORE_REFUSED");
    assert.match(e.message, /participant1:encryption \(BACKUP_CORRUPTED\)/);
    assert.equal(await participantDatabaseExists(), false, "nothing restored");
  } finally {
    undo();
  }
  // Every artifact swapped for a plain one and declared plain: nothing in the repository tells it
  // from a set made before encryption was on, so it is refused until the operator vouches for it.
  const swapped: Record<string, Buffer> = {};
  for (const node of ["participant1", "mediator1", "sequencer1"])
    swapped[`${node}.dump`] = readFileSync(join(n.repository.setDir(plainSet), `${node}.dump`));
  const undo2 = forge(encrypted2, swapped, declarePlain("participant1", "mediator1", "sequencer1"));
  try {
    const v = await n.cli("backup", "verify", encrypted2, "--json");
    assert.equal(v.code, 0, "verify cannot tell it from an older plain set");
    assert.match(v.stderr, /participant1: WARNING: stored in plain, though backup\.encryption is configured/);
    const r = await restore(n, "apply", encrypted2, ["--nodes", "participant1"]);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    const e = r.json<ErrorJson>().error;
    assert.equal(e.code, "RESTORE_REFUSED");
    assert.match(e.message, /participant1:encryption \(BACKUP_NOT_ENCRYPTED\)/);
    assert.equal(await participantDatabaseExists(), false, "nothing restored");
  } finally {
    undo2();
  }
  // The genuine older plain set, vouched for: restored, the override printed and recorded.
  const r = await restore(n, "apply", plainSet, [
    "--nodes",
    "participant1",
    "--force",
    "encryption",
    "--jobs",
    "1",
  ]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stderr, /--force overrides the refused check participant1:encryption/);
  assert.equal(await participantDatabaseExists(), true);
});
