import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { cleanStaleScratch } from "../../src/backup/pgbackrest/scratch-restore.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { isAlive } from "../../src/storage/server-process.ts";

// A physical restore or drill killed mid-way leaves its scratch cluster behind, maybe with a server
// still running on it: the next restore stops and removes it, and leaves a live process's alone.

const parent = mkdtempSync(join(tmpdir(), "lockstep-scratch-parent-"));
const servers: LocalPostgres[] = [];
after(async () => {
  for (const s of servers) await s.stop().catch(() => {});
  rmSync(parent, { recursive: true, force: true });
});

/** A pid that is certainly not running: a child that already exited. */
function deadPid(): number {
  return spawnSync("true").pid as number;
}

test("a scratch cluster whose process is gone is stopped and removed; a live one is kept", async () => {
  const stale = join(parent, "lockstep-scratch-stale");
  mkdirSync(stale);
  writeFileSync(join(stale, "owner.json"), JSON.stringify({ pid: deadPid(), host: hostname() }));
  const server = new LocalPostgres({ dir: join(stale, "postgres"), fsync: false });
  servers.push(server);
  await server.start();
  const postmaster = Number.parseInt(readFileSync(join(server.dataDir, "postmaster.pid"), "utf8"), 10);
  assert.ok(isAlive(postmaster));

  const live = join(parent, "lockstep-scratch-live");
  mkdirSync(live);
  writeFileSync(join(live, "owner.json"), JSON.stringify({ pid: process.pid, host: hostname() }));
  const unrelated = join(parent, "something-else");
  mkdirSync(unrelated);

  const removed = await cleanStaleScratch(parent, silentLogger("test"));
  assert.deepEqual(removed, [stale]);
  assert.equal(existsSync(stale), false);
  assert.equal(isAlive(postmaster), false, "its server was stopped");
  assert.equal(existsSync(live), true, "a live process's scratch cluster stays");
  assert.equal(existsSync(unrelated), true);
});
