import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { BackupRepository } from "../../src/backup/backup-repository.ts";
import { planRetention } from "../../src/backup/backup-retention.ts";
import { type Manifest, manifestChecksum } from "../../src/backup/manifest.ts";
import { findForks } from "../../src/backup/order-check.ts";
import { unsignedManifest as unsigned } from "../support/manifest-fixture.ts";

// The repository's file rules (no database needed): manifest last and checksummed, incomplete
// folders never listed and cleaned once their writer is gone; retention and the fork check.

const dir = mkdtempSync(join(tmpdir(), "lockstep-backup-repo-"));
after(() => rmSync(dir, { recursive: true, force: true }));

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

const SEQUENCER_NODE = {
  ...(unsigned("x").nodes[0] as object),
  name: "sequencer1",
  kind: "sequencer",
  member: "sequencer1::1220bb",
  position: { head: "200", members: {}, pruningLowerBound: null },
} as Manifest["nodes"][number];

test("retention never deletes the newest complete, safe, verified set; partial, unsafe and failed sets do not count", () => {
  const set = (id: string, o: { safe?: boolean; full?: boolean; failed?: boolean; version?: 1 | 2 } = {}) => {
    const unsafe =
      o.safe === false
        ? [
            {
              node: "participant1",
              reason: "fork" as const,
              member: "participant1::1220aa",
              clean: "5",
              lastStored: "5",
              sequencerLastDelivered: "4",
              sequencerSet: id,
            },
          ]
        : [];
    const base = unsigned(id, { safe: o.safe ?? true, unsafe, manifestVersion: o.version ?? 2 });
    const nodes = o.full === false ? base.nodes : [...base.nodes, SEQUENCER_NODE];
    const m = { ...base, nodes, checksum: "" } as Manifest;
    const verification = o.failed
      ? {
          set: id,
          verifiedAt: "2026-11-27T09:00:00.000Z",
          level: "drill" as const,
          ok: false,
          problems: ["x"],
          durationMs: 1,
        }
      : null;
    return { id, manifest: m, verification };
  };
  const config = ["sequencer1", "participant1"];
  const plan = planRetention(
    [
      set("20261127T010000Z-aaaaaa"),
      set("20261127T015000Z-a2a2a2", { version: 1 }),
      set("20261127T020000Z-bbbbbb", { failed: true }),
      set("20261127T030000Z-cccccc", { full: false }),
      set("20261127T040000Z-dddddd", { safe: false }),
      set("20261127T050000Z-eeeeee", { full: false }),
    ],
    1,
    config,
  );
  assert.deepEqual(
    plan.map((d) => [d.id.slice(-6), d.action]),
    [
      ["eeeeee", "keep"],
      ["dddddd", "keep"],
      ["cccccc", "delete"],
      ["bbbbbb", "delete"],
      ["a2a2a2", "delete"],
      ["aaaaaa", "keep"],
    ],
  );
  const reason = (suffix: string) => plan.find((d) => d.id.endsWith(suffix))?.reason ?? "";
  assert.match(reason("aaaaaa"), /never deleted/);
  // Unsafe for participant1 (its fork), yet the newest backup of sequencer1: a rotation of the
  // sequencer's key is held there only, so it stays (the set a disaster needs is still aaaaaa).
  assert.match(reason("dddddd"), /newest safe backup of sequencer1/);
  assert.match(reason("eeeeee"), /among the newest 1/);
  assert.match(reason("cccccc"), /partial \(lacks sequencer1\)/);
  assert.match(reason("bbbbbb"), /failed verification/);
  assert.match(reason("a2a2a2"), /older build/);
  // The newest backup of a node stays however old: it is the only one with the node's newest keys.
  const newestOfNode = planRetention(
    [set("20261127T030000Z-cccccc", { full: false }), set("20261127T020000Z-ffffff", { full: false })],
    0,
    config,
  );
  assert.deepEqual(
    newestOfNode.map((d) => [d.id.slice(-6), d.action]),
    [
      ["cccccc", "keep"],
      ["ffffff", "delete"],
    ],
  );
  assert.match(newestOfNode[0]?.reason ?? "", /newest safe backup of participant1/);
  // Nothing qualifies: every other set beyond N goes, and the plan says why.
  assert.match(newestOfNode[1]?.reason ?? "", /no set qualifies/);
});

test("fork check: the member's last stored event must be the sequencer's, by chain hash, not by timestamp", () => {
  const node = unsigned("20261127T000000Z-000000").nodes;
  const member = "participant1::1220aa";
  const view = (known: boolean, chainHash: string | null, timestamp = "100") => ({
    [member]: { timestamp, known, chainHash },
  });
  assert.deepEqual(findForks(node, view(true, "1".repeat(64)), "s"), []);
  // Same timestamp, another history: the timestamps-only check called this safe.
  const forked = findForks(node, view(true, "2".repeat(64)), "s");
  assert.deepEqual(
    forked.map((f) => [f.node, f.reason, f.storedHash?.[0], f.sequencerHash?.[0]]),
    [["participant1", "fork", "1", "2"]],
  );
  // No event for the member there (the sequencer is behind, or its later events are a new history).
  assert.equal(findForks(node, view(true, null), null)[0]?.sequencerHash, null);
  assert.equal(findForks(node, view(false, null), "s").length, 1);
  assert.equal(findForks(node, {}, "s").length, 1);
});

test("a checkpoint's set is kept and a point-in-time set deleted, neither counting among the newest N", () => {
  const set = (id: string, mode: Manifest["mode"], pointInTime?: Manifest["pointInTime"]) => {
    const base = unsigned(id, { safe: true, unsafe: [], manifestVersion: 2 });
    const m = {
      ...base,
      mode,
      ...(pointInTime ? { pointInTime } : {}),
      nodes: [...base.nodes, SEQUENCER_NODE],
      checksum: "",
    } as Manifest;
    return { id, manifest: m, verification: null };
  };
  const plan = planRetention(
    [
      set("20261127T010000Z-aaaaaa", "ordered"),
      set("20261127T020000Z-bbbbbb", "checkpoint", { checkpoint: "before-deploy" }),
      set("20261127T030000Z-cccccc", "point-in-time", {
        time: "2026-11-27 01:30:00+00",
        sequencerTime: "2026-11-27 01:30:00+00",
      }),
      set("20261127T040000Z-dddddd", "ordered"),
    ],
    1,
    ["sequencer1", "participant1"],
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
  assert.match(plan.find((d) => d.id.endsWith("bbbbbb"))?.reason ?? "", /checkpoint before-deploy/);
});
