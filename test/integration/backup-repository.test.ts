import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { BackupRepository } from "../../src/backup/backup-repository.ts";
import { planRetention } from "../../src/backup/backup-retention.ts";
import { type Manifest, manifestChecksum, type UnsignedManifest } from "../../src/backup/manifest.ts";
import { findForks } from "../../src/backup/order-check.ts";

// The repository's file rules (no database needed): manifest last and checksummed, incomplete
// folders never listed and cleaned once their writer is gone; retention and the fork check.

const dir = mkdtempSync(join(tmpdir(), "lockstep-backup-repo-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function unsigned(id: string, overrides: Partial<UnsignedManifest> = {}): UnsignedManifest {
  return {
    manifestVersion: 1,
    id,
    lockstepVersion: "0.1.0",
    synchronizerId: "sync1",
    mode: "ordered",
    startedAt: "2026-11-27T00:00:00.000Z",
    finishedAt: "2026-11-27T00:00:01.000Z",
    appHook: null,
    nodes: [
      {
        name: "participant1",
        kind: "participant",
        member: "participant1::1220aa",
        synchronizerId: "sync1",
        incarnation: "inc",
        writerEpoch: "1",
        format: "custom",
        artifact: "participant1.dump",
        files: [{ path: "participant1.dump", bytes: "3", sha256: "0".repeat(64) }],
        bytes: "3",
        database: "participant1",
        postgres: { version: "15.18", systemIdentifier: "1" },
        keyFingerprints: ["1220aa"],
        startedAt: "2026-11-27T00:00:00.000Z",
        finishedAt: "2026-11-27T00:00:01.000Z",
        position: {
          clean: "100",
          ledgerEnd: "2",
          lastStored: { timestamp: "100", chainHash: "1".repeat(64) },
        },
      },
    ],
    orderCheck: "checked",
    checkedAgainst: null,
    safe: true,
    unsafe: [],
    bytes: "3",
    ...overrides,
  };
}

test("a set is listed only once its manifest is written; a tampered manifest fails its checksum", async () => {
  const repo = new BackupRepository(dir);
  const id = await repo.beginSet(new Date("2026-11-27T06:50:12Z"));
  assert.match(id, /^20261127T065012Z-[0-9a-f]{6}$/);
  assert.deepEqual(await repo.listSets(), []);
  const manifest = await repo.completeSet(unsigned(id));
  assert.equal(manifest.checksum, manifestChecksum(manifest));
  assert.deepEqual(
    (await repo.listSets()).map((s) => s.id),
    [id],
  );
  const path = join(repo.setDir(id), "manifest.json");
  const text = readFileSync(path, "utf8");
  writeFileSync(path, text.replace('"ledgerEnd": "2"', '"ledgerEnd": "3"'));
  await assert.rejects(
    repo.readManifest(id),
    (e: Error & { code?: string }) => e.code === "BACKUP_CORRUPTED",
  );
  assert.deepEqual(await repo.listSets(), []);
  writeFileSync(path, text);
  await assert.rejects(repo.readManifest("20261127T000000Z-ffffff"), { code: "BACKUP_NOT_FOUND" });
});

test("incomplete folders: kept while their writer lives, removed once it is gone", async () => {
  const repo = new BackupRepository(dir);
  const live = join(dir, "20261127T070000Z-aaaaaa");
  const dead = join(dir, "20261127T070001Z-bbbbbb");
  mkdirSync(live);
  mkdirSync(dead);
  // pid 1 is alive (init); a huge pid is not.
  writeFileSync(join(live, "in-progress.json"), JSON.stringify({ pid: 1, host: hostname() }));
  writeFileSync(join(dead, "in-progress.json"), JSON.stringify({ pid: 2 ** 22 + 17, host: hostname() }));
  assert.deepEqual(await repo.cleanIncomplete(), ["20261127T070001Z-bbbbbb"]);
  assert.ok(existsSync(live));
  assert.ok(!existsSync(dead));
  rmSync(live, { recursive: true });
});

test("retention keeps the newest N and the newest safe set, with a reason for each", () => {
  const set = (id: string, safe: boolean, checkedAgainst: string | null = null) => {
    const m = { ...unsigned(id, { safe, checkedAgainst }), checksum: "" } as Manifest;
    return { id, manifest: m, verification: null };
  };
  const plan = planRetention(
    [
      set("20261127T010000Z-aaaaaa", true),
      set("20261127T020000Z-bbbbbb", true),
      set("20261127T030000Z-cccccc", false, "20261127T020000Z-bbbbbb"),
      set("20261127T040000Z-dddddd", false),
    ],
    1,
  );
  assert.deepEqual(
    plan.map((d) => [d.id.slice(-6), d.action]),
    [
      ["dddddd", "keep"],
      ["cccccc", "delete"],
      ["bbbbbb", "keep"],
      ["aaaaaa", "delete"],
    ],
  );
  assert.match(plan[2]?.reason ?? "", /newest safe set/);
  assert.match(plan[1]?.reason ?? "", /unsafe/);
});

test("fork check: a member ahead of the sequencer's record is unsafe", () => {
  const node = unsigned("20261127T000000Z-000000").nodes;
  const ok = findForks(
    node,
    { head: "200", members: { "participant1::1220aa": "150" }, pruningLowerBound: null },
    "s",
  );
  assert.deepEqual(ok, []);
  const forks = findForks(
    node,
    { head: "90", members: { "participant1::1220aa": "90" }, pruningLowerBound: null },
    "s",
  );
  assert.deepEqual(
    forks.map((f) => [f.node, f.reason, f.sequencerLastDelivered]),
    [["participant1", "fork", "90"]],
  );
  const unknown = findForks(node, { head: "90", members: {}, pruningLowerBound: null }, "s");
  assert.equal(unknown.length, 1);
});
