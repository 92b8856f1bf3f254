import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { BackupRepository } from "../../src/backup/backup-repository.ts";
import {
  MANIFEST_VERSION,
  manifestChecksum,
  manifestSchema,
  nodeEngine,
  type UnsignedManifest,
} from "../../src/backup/manifest.ts";
import { unsignedManifest } from "../support/manifest-fixture.ts";

// Manifest v3 names each node's engine; v1 and v2 manifests (pg_dump only, `format` per node) are
// read as written, and nodeEngine reads their format as the pg-dump engine's record.

const dir = mkdtempSync(join(tmpdir(), "lockstep-manifest-engine-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const SET = "20260101T000000Z-abcdef";

/** The fixture at `version`, its node naming its engine by `fields` instead of the v1 `format`. */
function manifest(version: 1 | 2 | 3, fields: Record<string, unknown>): UnsignedManifest {
  const base = unsignedManifest(SET, { manifestVersion: version });
  const nodes = base.nodes.map(({ format: _v1, ...node }) => ({ ...node, ...fields }));
  return { ...base, nodes } as UnsignedManifest;
}

/** A fresh folder for the set. */
function freshSet(repo: BackupRepository): string {
  rmSync(repo.setDir(SET), { recursive: true, force: true });
  mkdirSync(repo.setDir(SET), { recursive: true });
  return repo.setDir(SET);
}

test("a v2 manifest, without engine, is read as written; its format is the pg-dump engine's", async () => {
  const repo = new BackupRepository(dir);
  const setDir = freshSet(repo);
  // As a v2 build wrote it: its own JSON and checksum.
  const v2 = manifest(2, { format: "directory", artifact: "participant1" });
  const text = `${JSON.stringify({ ...v2, checksum: manifestChecksum(v2) }, null, 2)}\n`;
  writeFileSync(join(setDir, "manifest.json"), text);
  const read = await repo.readManifest(SET); // its checksum verifies
  assert.equal(read.manifestVersion, 2);
  const node = read.nodes[0];
  assert.ok(node);
  assert.equal(node.engine, undefined);
  assert.deepEqual(nodeEngine(node), { name: "pg-dump", format: "directory" });
  assert.deepEqual(repo.artifact(SET, node), {
    setDir,
    name: "participant1",
    record: { name: "pg-dump", format: "directory" },
  });
  // Tampering with the format is still caught by the checksum.
  writeFileSync(join(setDir, "manifest.json"), text.replace('"directory"', '"tar"'));
  await assert.rejects(repo.readManifest(SET), { code: "BACKUP_CORRUPTED" });
});

test("a v3 manifest records the engine and its options and reads back the same", async () => {
  const repo = new BackupRepository(dir);
  freshSet(repo);
  const engine = { name: "pg-dump", format: "directory", jobs: 4 };
  const written = await repo.completeSet(manifest(MANIFEST_VERSION, { engine }));
  assert.equal(MANIFEST_VERSION, 3);
  const read = await repo.readManifest(SET);
  assert.deepEqual(read, written);
  assert.deepEqual(read.nodes[0] && nodeEngine(read.nodes[0]), engine);
});

test("a node names its engine one way: engine (v3) or format (v1/v2), not both, not neither", () => {
  const issue = (fields: Record<string, unknown>) =>
    manifestSchema.safeParse({ ...manifest(3, fields), checksum: "0".repeat(64) }).error?.issues[0];
  assert.match(
    issue({ engine: { name: "pg-dump", format: "tar" }, format: "tar" })?.message ?? "",
    /format is part of engine/,
  );
  assert.match(issue({})?.message ?? "", /names no engine/);
  assert.ok(issue({ engine: { name: "pg_dump", format: "tar" } }), "an unknown engine name is refused");
  assert.equal(issue({ engine: { name: "pg-dump", format: "custom" } }), undefined);
});
