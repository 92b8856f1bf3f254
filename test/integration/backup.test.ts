import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { hashFile } from "../../src/backup/file-hash.ts";
import { LOCKSTEP_BIN } from "../../src/cli/self-process.ts";
import { backupsTaken } from "../../src/storage/backups-taken.ts";
import { type BackupTestNetwork, startBackupNetwork } from "../support/backup-network.ts";

// Backup sets of a whole network (`lockstep up --detach`), through the real CLI: order, positions,
// checksums, verification, subsets, the order check, crash safety and retention.

interface CreateJson {
  set: string;
  safe: boolean;
  orderCheck: string;
  checkedAgainst: string | null;
  unsafe: { node: string; reason: string; clean: string | null; sequencerLastDelivered: string | null }[];
  nodes: { name: string; kind: string; position: Record<string, unknown>; bytes: string }[];
}
interface ListJson {
  sets: { id: string; nodes: string[]; safe: boolean; verified: { ok: boolean; level: string } | null }[];
}
interface ErrorJson {
  error: { code: string; message: string };
}

const n: BackupTestNetwork = await startBackupNetwork(1);
after(async () => {
  await n.down();
  rmSync(n.net.dir, { recursive: true, force: true });
});

async function create(...args: string[]): Promise<CreateJson> {
  const r = await n.cli("backup", "create", "--json", ...args);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.json<CreateJson>();
}

let first: CreateJson;

test("create: every node, sequencer last, positions read in the dump's snapshot, files hashed, registered in each node", async () => {
  await n.traffic();
  first = await create();
  assert.equal(first.safe, true);
  assert.equal(first.orderCheck, "checked");
  assert.deepEqual(first.nodes.map((x) => x.name).sort(), ["mediator1", "participant1", "sequencer1"]);
  const manifest = await n.repository.readManifest(first.set); // verifies the manifest checksum
  const [p1, seq] = ["participant1", "sequencer1"].map((name) => manifest.nodes.find((x) => x.name === name));
  assert.ok(p1?.kind === "participant" && seq?.kind === "sequencer");
  assert.equal(p1.position.ledgerEnd, "1");
  assert.ok(p1.position.clean !== null && p1.member !== null);
  assert.ok(BigInt(p1.position.clean) <= BigInt(seq.position.members[p1.member] ?? "0"));
  // The sequencer is dumped after the members.
  assert.ok(seq.startedAt >= p1.finishedAt);
  for (const node of manifest.nodes) {
    assert.ok(node.keyFingerprints.length >= 2, `${node.name} keys`);
    assert.match(node.postgres.systemIdentifier, /^\d+$/);
    for (const f of node.files) {
      const h = await hashFile(join(n.repository.setDir(first.set), f.path));
      assert.equal(h.sha256, f.sha256);
      assert.equal(h.bytes.toString(), f.bytes);
    }
    const taken = await backupsTaken(n.nodeDb(node.name));
    assert.equal(taken[0]?.setId, first.set, `${node.name} records the set`);
    assert.deepEqual([...(taken[0]?.keyFingerprints ?? [])], node.keyFingerprints);
  }
});

test("list and verify: the set is listed, checksums and archive listing pass, verification recorded", async () => {
  const v = await n.cli("backup", "verify", first.set, "--json");
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const list = (await n.cli("backup", "list", "--json")).json<ListJson>();
  const entry = list.sets.find((s) => s.id === first.set);
  assert.deepEqual(entry?.verified && { ok: entry.verified.ok, level: entry.verified.level }, {
    ok: true,
    level: "checksums",
  });
});

test("verify --drill restores every node into scratch databases and checks ledger invariants", async () => {
  const v = await n.cli("backup", "verify", first.set, "--drill", "--json");
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const r = v.json<{ level: string; drill: { node: string; checks: string[] }[] }>();
  assert.equal(r.level, "drill");
  const p1 = r.drill.find((d) => d.node === "participant1");
  assert.ok(
    p1?.checks.some((c) => c.startsWith("ACS of 1 contracts")),
    JSON.stringify(p1),
  );
});

test("verify names the corrupted file and the truncated file (exit 1, BACKUP_CORRUPTED)", async () => {
  const set = (await create("--format", "tar")).set;
  const dir = n.repository.setDir(set);
  const flip = join(dir, "participant1.tar");
  const fd = Buffer.from("corrupt!");
  writeFileSync(flip, fd, { flag: "r+" });
  let v = await n.cli("backup", "verify", set, "--json");
  assert.equal(v.code, 1, v.stdout);
  let e = v.json<ErrorJson>().error;
  assert.equal(e.code, "BACKUP_CORRUPTED");
  assert.match(e.message, /participant1\.tar: SHA-256/);
  truncateSync(join(dir, "mediator1.tar"), 100);
  v = await n.cli("backup", "verify", set, "--json");
  e = v.json<ErrorJson>().error;
  assert.match(e.message, /mediator1\.tar: size 100/);
  const list = (await n.cli("backup", "list", "--json")).json<ListJson>();
  assert.equal(list.sets.find((s) => s.id === set)?.verified?.ok, false);
});

test("--nodes participant1 makes its own set, checked against the live sequencer", async () => {
  const sub = await create("--nodes", "participant1");
  assert.deepEqual(
    sub.nodes.map((x) => x.name),
    ["participant1"],
  );
  assert.equal(sub.orderCheck, "checked-against-live-sequencer");
  assert.match(sub.checkedAgainst ?? "", /^sequencer1::/);
  assert.equal(sub.safe, true, JSON.stringify(sub.unsafe));
});

test("sets taken apart: each member set is checked against the live sequencer, never an older set's", async () => {
  // Old code compared participant1 with the sequencer-only set by timestamp and called it a fork;
  // its history is a prefix of the live sequencer's, so restoring it against that sequencer is safe.
  const seqOnly = await create("--nodes", "sequencer1");
  await n.traffic();
  const late = await create("--nodes", "participant1");
  assert.equal(late.safe, true, JSON.stringify(late.unsafe));
  assert.notEqual(late.checkedAgainst, seqOnly.set);
  assert.equal(late.orderCheck, "checked-against-live-sequencer");
});

test("--quiesce: intake paused, all dumped in parallel, intake resumed (traffic works after)", async () => {
  const q = await create("--quiesce");
  assert.equal(q.safe, true);
  const manifest = await n.repository.readManifest(q.set);
  assert.equal(manifest.mode, "quiesced");
  // The sequencer's side of the order check is read even though all were dumped in parallel.
  const seq = manifest.nodes.find((x) => x.kind === "sequencer");
  const p1 = manifest.nodes.find((x) => x.name === "participant1");
  assert.ok(seq?.kind === "sequencer" && p1?.kind === "participant" && p1.member);
  assert.equal(seq.position.memberEvents?.[p1.member]?.chainHash, p1.position.lastStored?.chainHash);
  await n.traffic();
});

test("SIGKILL during create: the incomplete set is never listed, and the next run removes it", async () => {
  const before = new Set(readdirSync(n.repository.dir));
  const child = spawn(process.execPath, [LOCKSTEP_BIN, "backup", "create", "--config", n.net.configPath], {
    stdio: "ignore",
  });
  let partial: string | undefined;
  const deadline = Date.now() + 30_000;
  while (!partial && Date.now() < deadline) {
    partial = readdirSync(n.repository.dir).find((d) => !before.has(d));
    if (!partial) await new Promise((resolve) => setTimeout(resolve, 10));
  }
  child.kill("SIGKILL");
  await new Promise((resolve) => child.on("close", resolve));
  assert.ok(partial, "the run created its set folder");
  const dir = join(n.repository.dir, partial);
  assert.equal(existsSync(join(dir, "manifest.json")), false, "killed before the manifest");
  const list = (await n.cli("backup", "list", "--json")).json<ListJson>();
  assert.ok(!list.sets.some((s) => s.id === partial));
  const next = await n.cli("backup", "create", "--json");
  assert.equal(next.code, 0, next.stderr);
  assert.equal(existsSync(dir), false, "cleaned up by the next run");
  assert.match(next.stderr, /removed incomplete backup set/);
});

test("expire --dry-run explains each keep and delete, never deletes the newest safe set", async () => {
  const list = (await n.cli("backup", "list", "--json")).json<ListJson>();
  const r = await n.cli("backup", "expire", "--keep", "1", "--dry-run", "--json");
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const plan = r.json<{ sets: { id: string; action: string; reason: string }[] }>();
  assert.equal(plan.sets.length, list.sets.length);
  assert.equal(plan.sets[0]?.action, "keep");
  assert.match(plan.sets[0]?.reason ?? "", /newest 1/);
  assert.ok(
    plan.sets.slice(1).some((s) => s.action === "delete" && /older than the newest 1/.test(s.reason)),
  );
  for (const s of plan.sets) assert.ok(s.reason.length > 0);
  // dry run: nothing deleted
  assert.equal((await n.cli("backup", "list", "--json")).json<ListJson>().sets.length, list.sets.length);
  // A partial newest set: the newest complete, safe set is kept beyond --keep, the others go.
  const newestFull = list.sets.find((s) => s.nodes.length === 3 && s.safe && s.verified?.ok !== false);
  assert.ok(newestFull, "a complete set exists");
  const partial = await create("--nodes", "participant1");
  const r2 = (await n.cli("backup", "expire", "--keep", "1", "--json")).json<{
    sets: { id: string; action: string; reason: string }[];
    deleted: string[];
  }>();
  const kept = r2.sets.find((s) => s.id === newestFull.id);
  assert.equal(kept?.action, "keep", JSON.stringify(r2.sets));
  assert.match(kept?.reason ?? "", /never deleted/);
  const after = (await n.cli("backup", "list", "--json")).json<ListJson>();
  assert.deepEqual(after.sets.map((s) => s.id).sort(), [newestFull.id, partial.set].sort());
});
