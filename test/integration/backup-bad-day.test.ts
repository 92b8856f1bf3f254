import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { MANIFEST_FILE } from "../../src/backup/backup-repository.ts";
import { type Manifest, sealManifest } from "../../src/backup/manifest.ts";
import { LOCKSTEP_BIN } from "../../src/cli/self-process.ts";
import { type BackupTestNetwork, startBackupNetwork } from "../support/backup-network.ts";
import { runLockstep } from "../support/cli.ts";

// An operator's bad day against backup and restore's safety verdicts, through the real CLI on a real
// network: a CLI host whose clock is far off, the newest set damaged before anyone verified it,
// manifests that are sealed but lie, the repository's disk full, and `backup expire` run by a
// schedule while a restore reads an older set.

interface ListJson {
  sets: { id: string; nodes: string[]; safe: boolean }[];
}
interface ExpireJson {
  sets: { id: string; action: string; reason: string }[];
  deleted: string[];
}
interface ErrorJson {
  error: { code: string; message: string };
}

const LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

const n: BackupTestNetwork = await startBackupNetwork(1);
// The repository on a small filesystem of its own (root only: the disk-full case is skipped otherwise).
const repo = n.repository.dir;
mkdirSync(repo, { recursive: true, mode: 0o700 });
const tmpfs = mountTmpfs(repo, "256m");
after(async () => {
  // Before the network's own cleanup removes its folder (a mount point cannot be removed).
  if (tmpfs) execFileSync("umount", ["--lazy", repo]);
  await n.down();
  rmSync(n.net.dir, { recursive: true, force: true });
});

function mountTmpfs(dir: string, size: string): boolean {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

async function create(env: NodeJS.ProcessEnv = {}): Promise<{ set: string; stderr: string }> {
  const r = await runLockstep(["backup", "create", "--json", ...n.cfg], { env, timeoutMs: 180_000 });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return { set: r.json<{ set: string }>().set, stderr: r.stderr };
}
const listed = async () => (await n.cli("backup", "list", "--json")).json<ListJson>().sets.map((s) => s.id);
async function expire(...args: string[]): Promise<ExpireJson> {
  const r = await n.cli("backup", "expire", "--json", ...args);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.json<ExpireJson>();
}
const action = (plan: ExpireJson, id: string) => plan.sets.find((s) => s.id === id);

/** The UTC day (yyyymmdd) a set id is stamped with. */
const stampDay = (id: string) => id.slice(0, 8);
const today = () => new Date().toISOString().slice(0, 10).replace(/-/g, "");

let good: string; // a complete, safe set that later tests restore and forge from
let damaged: string;

test("a CLI host whose clock is a year off: sets are stamped with the sequencer's time, so the newest stays newest", async () => {
  assert.ok(existsSync(LIBFAKETIME), `libfaketime missing (apt-get install faketime): ${LIBFAKETIME}`);
  await n.traffic();
  const a = await create();
  const behind = await create({ LD_PRELOAD: LIBFAKETIME, FAKETIME: "-400d" });
  const ahead = await create({ LD_PRELOAD: LIBFAKETIME, FAKETIME: "+400d" });
  // libfaketime really moved the CLI's clock (else this proves nothing), and the CLI says so.
  assert.match(behind.stderr, /this host's clock is -3456\d{4} s off the sequencer's/);
  assert.match(ahead.stderr, /this host's clock is 3456\d{4} s off the sequencer's/);
  const d = await create();
  for (const s of [a, behind, ahead, d]) assert.equal(stampDay(s.set), today(), s.set);
  assert.deepEqual(await listed(), [d.set, ahead.set, behind.set, a.set]);
  // Old code: the set taken a year "ahead" was the newest forever, the one "behind" the oldest, and
  // `expire --keep 1` right after it deleted the backup just taken.
  const plan = await expire("--keep", "1", "--dry-run");
  assert.deepEqual(
    plan.sets.filter((s) => s.action === "keep").map((s) => s.id),
    [d.set],
    JSON.stringify(plan.sets),
  );
  good = ahead.set;
  damaged = d.set;
});

test("the newest set damaged before anyone verified it: expire keeps the newest good one", async () => {
  // A full disk or a careless `truncate`: the newest set's artifact is cut short, never verified.
  truncateSync(join(n.repository.setDir(damaged), "participant1.dump"), 100);
  const plan = await expire("--keep", "1", "--dry-run");
  assert.equal(action(plan, damaged)?.action, "keep", "among the newest 1");
  // Old code protected the damaged set (unverified counts as good) and deleted every other one.
  assert.equal(action(plan, good)?.action, "keep", JSON.stringify(plan.sets));
  assert.match(action(plan, good)?.reason ?? "", /never deleted/);
  const done = await expire("--keep", "1");
  assert.ok(!done.deleted.includes(good));
  assert.deepEqual(await listed(), [damaged, good]);
  const v = await n.cli("backup", "verify", damaged, "--json");
  assert.equal(v.code, 1, v.stdout + v.stderr);
  const e = v.json<ErrorJson>().error;
  assert.equal(e.code, "BACKUP_CORRUPTED");
  assert.match(e.message, /participant1\.dump: size 100/);
  const ok = await n.cli("backup", "verify", good, "--json");
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
});

/** A copy of the good set under `id` whose manifest `lie` rewrote and sealed again (checksum valid). */
function forge(id: string, lie: (m: Manifest) => void, reseal = true): string {
  const dir = join(repo, id);
  cpSync(n.repository.setDir(good), dir, { recursive: true });
  rmSync(join(dir, "verification.json"), { force: true });
  const manifest = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), "utf8")) as Manifest;
  if (reseal) manifest.id = id;
  lie(manifest);
  const { checksum: _old, ...unsigned } = manifest;
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(sealManifest(unsigned), null, 2));
  return id;
}

test("manifests that are sealed but lie: each refused by verify and restore plan, never listed nor deleted", async () => {
  const p1 = (m: Manifest) => m.nodes.find((x) => x.name === "participant1") as Manifest["nodes"][number];
  const lies: { id: string; code: string; message: RegExp }[] = [
    {
      // Ids from the far future: were they listed, they would be "the newest".
      id: forge("29991231T000001Z-twice", (m) => m.nodes.push(structuredClone(p1(m)))),
      code: "BACKUP_CORRUPTED",
      message: /node participant1 is listed twice/,
    },
    {
      id: forge("29991231T000002Z-hidden", (m) => {
        const seq = m.nodes.find((x) => x.kind === "sequencer");
        const member = p1(m).member as string;
        assert.ok(seq?.kind === "sequencer" && seq.position.memberEvents?.[member]);
        seq.position.memberEvents[member].chainHash = "f".repeat(64);
      }),
      code: "BACKUP_CORRUPTED",
      message: /participant1's last stored event is not its sequencer's in the set/,
    },
    {
      id: forge("29991231T000003Z-safe", (m) => {
        m.safe = false;
      }),
      code: "BACKUP_CORRUPTED",
      message: /safe is false with 0 unsafe finding/,
    },
    {
      id: forge("29991231T000005Z-moved", () => {}, false),
      code: "BACKUP_CORRUPTED",
      message: new RegExp(`names set ${good}`),
    },
    {
      id: forge("29991231T000006Z-future", (m) => {
        (m as { manifestVersion: number }).manifestVersion = 4;
        m.lockstepVersion = "9.0.0";
      }),
      code: "BACKUP_VERSION_UNSUPPORTED",
      message: /written by a newer Lockstep \(9\.0\.0, manifest version 4\)/,
    },
  ];
  for (const lie of lies) {
    const v = await n.cli("backup", "verify", lie.id, "--json");
    assert.equal(v.code, 1, `verify ${lie.id}: ${v.stdout}${v.stderr}`);
    const e = v.json<ErrorJson>().error;
    assert.equal(e.code, lie.code, e.message);
    assert.match(e.message, lie.message);
    // restore plan: its first preflight check refuses (safety, exit 3), nothing else is looked at.
    const p = await n.cli("restore", "plan", lie.id, "--json");
    assert.equal(p.code, 3, `plan ${lie.id}: ${p.stdout}${p.stderr}`);
    const checks = p.json<{ checks: { check: string; verdict: string; code: string; message: string }[] }>()
      .checks;
    assert.deepEqual(
      checks.map((c) => [c.check, c.verdict, c.code]),
      [["manifest", "refuse", lie.code]],
    );
    assert.match(checks[0]?.message ?? "", lie.message);
  }
  const list = await n.cli("backup", "list", "--json");
  assert.deepEqual(
    list.json<ListJson>().sets.map((s) => s.id),
    [damaged, good],
  );
  for (const lie of lies) assert.match(list.stderr, new RegExp(`ignored ${lie.id}`));
  // A node left out is a partial set, not a lie: restoring that node from it is refused by name.
  const partial = forge("29991231T000007Z-partial", (m) => {
    m.nodes = m.nodes.filter((x) => x.name !== "mediator1");
  });
  const r = await n.cli("restore", "plan", partial, "--nodes", "mediator1", "--json");
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.equal(r.json<ErrorJson>().error.code, "INVALID_ARGUMENT");
  assert.match(r.json<ErrorJson>().error.message, /holds no node mediator1/);
  // Retention never counts the partial set as the one a disaster needs, nor deletes what it cannot read.
  const plan = await expire("--keep", "0");
  assert.equal(action(plan, good)?.action, "keep", JSON.stringify(plan.sets));
  assert.ok(plan.deleted.includes(damaged) && !plan.deleted.includes(good), JSON.stringify(plan.sets));
  for (const lie of lies) assert.ok(existsSync(join(repo, lie.id, MANIFEST_FILE)), lie.id);
  for (const id of [...lies.map((l) => l.id), partial])
    rmSync(join(repo, id), { recursive: true, force: true });
});

test("the repository's disk full mid-write: the run fails, no set is listed nor left, older sets intact", async (t) => {
  if (!tmpfs) return t.skip("mounting a tmpfs needs root");
  const before = await listed();
  const used = Number(execFileSync("du", ["-sk", repo]).toString().split("\t")[0]);
  execFileSync("mount", ["-o", `remount,size=${used + 48}k`, repo]);
  const r = await n.cli("backup", "create", "--json");
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.equal(r.json<ErrorJson>().error.code, "BACKUP_FAILED", r.stdout);
  assert.match(r.json<ErrorJson>().error.message, /ENOSPC|No space left/i);
  assert.deepEqual(await listed(), before);
  assert.deepEqual(readdirSync(repo).sort(), [...before].sort(), "the truncated set's folder is removed");
  assert.equal((await n.cli("backup", "verify", good, "--json")).code, 0);
  execFileSync("mount", ["-o", "remount,size=256m", repo]);
  await n.traffic();
  const next = await create();
  assert.deepEqual(await listed(), [next.set, ...before]);
});

test("backup expire during a restore of an older set: the set outlives the restore", async () => {
  const newest = await create();
  const stopped = await n.cli("node", "stop", "participant1");
  assert.equal(stopped.code, 0, stopped.stdout + stopped.stderr);
  const child = spawn(
    process.execPath,
    [
      LOCKSTEP_BIN,
      "restore",
      "apply",
      good,
      "--nodes",
      "participant1",
      "--replace",
      "--yes",
      "--json",
      ...n.cfg,
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LOCKSTEP_LOG_LEVEL: "warn" } },
  );
  let stderr = "";
  let stdout = "";
  child.stdout.on("data", (b: Buffer) => {
    stdout += b.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
  // Frozen once it restores into staging: it holds the set, as a long pg_restore would. Once only:
  // what it writes after SIGCONT must not stop it again.
  let frozen = false;
  await new Promise<void>((resolve, reject) => {
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
      if (!frozen && /creating staging database/.test(stderr)) {
        frozen = child.kill("SIGSTOP");
        resolve();
      }
    });
    exited.then(() => reject(new Error(`restore apply ended first: ${stdout}${stderr}`)));
  });
  try {
    const plan = await expire("--keep", "1");
    assert.equal(action(plan, good)?.action, "keep", JSON.stringify(plan.sets));
    assert.match(action(plan, good)?.reason ?? "", /in use by restore apply \(pid \d+/);
    assert.equal(action(plan, newest.set)?.action, "keep");
    assert.ok(!plan.deleted.includes(good) && existsSync(join(repo, good, MANIFEST_FILE)));
  } finally {
    child.kill("SIGCONT");
  }
  assert.equal(await exited, 0, stdout + stderr);
  // The restore is over: the older set goes now.
  const plan = await expire("--keep", "1");
  assert.deepEqual(plan.deleted, [good], JSON.stringify(plan.sets));
  assert.deepEqual(await listed(), [newest.set]);
});

test("a repository this host may only read (a DR site's read-only mount): restore apply goes on without its in-use mark", async (t) => {
  if (!tmpfs) return t.skip("remounting read-only needs root");
  const [newest] = await listed();
  assert.ok(newest);
  await n.cli("node", "stop", "participant1"); // stopped already after the restore before
  execFileSync("mount", ["-o", "remount,ro", repo]);
  try {
    const applied = await n.cli(
      "restore",
      "apply",
      newest,
      "--nodes",
      "participant1",
      "--replace",
      "--yes",
      "--json",
    );
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    assert.match(applied.stderr, /restoring without the mark/);
  } finally {
    execFileSync("mount", ["-o", "remount,rw", repo]);
  }
  assert.equal((await n.cli("node", "start", "participant1", "--detach")).code, 0);
});
