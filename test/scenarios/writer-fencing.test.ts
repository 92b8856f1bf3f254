import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { parse, stringify } from "yaml";
import { freePort } from "../../src/common/loopback.ts";
import { embeddedClusterDir, embeddedDatabaseName } from "../../src/node/node-database.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { runLockstep } from "../support/cli.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  allocateKnownParty,
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";
import {
  backupCreate,
  nodeLog,
  nodeStart,
  nodeStatus,
  nodeStop,
  restore,
  waitForNodeError,
} from "../support/restore-network.ts";

// Writer fencing without gaps (docs/design.md §3, docs/synchronizer.md "Writer epochs and activations"):
// two copies of one node database at the same epoch cannot both act, and a node restored while
// the sequencer was down takes exactly one epoch above the sequencer's record, no guessed margin.

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
});

async function network(): Promise<LedgerNetwork> {
  const n = await startLedgerNetwork({ participants: 1, tolerance: "5s" });
  cleanups.push(() => n.down());
  return n;
}

/** The writer epoch participant1 reports (`lockstep status --json`). */
async function nodeEpoch(n: LedgerNetwork): Promise<bigint | undefined> {
  const r = await runLockstep(["status", "--json", ...n.cfg]);
  const node = r
    .json<{ nodes: { name: string; writerEpoch: string | null }[] }>()
    .nodes.find((x) => x.name === "participant1");
  return node?.writerEpoch ? BigInt(node.writerEpoch) : undefined;
}

/** The sequencer's record of participant1 (`lockstep sequencer status --json`). */
async function sequencerRecord(n: LedgerNetwork): Promise<{ epoch: bigint; activation: string } | undefined> {
  const r = await runLockstep(["sequencer", "status", "--json", ...n.cfg]);
  if (r.code !== 0) return undefined;
  const m = r
    .json<{ members: { member: string; writerEpoch: string; writerActivation: string }[] }>()
    .members.find((x) => x.member.startsWith("participant1::"));
  return m && { epoch: BigInt(m.writerEpoch), activation: m.writerActivation };
}

/** Waits until the sequencer's record is participant1's current epoch (it subscribed with it). */
async function heardAt(n: LedgerNetwork): Promise<bigint> {
  return waitFor(
    "the sequencer to record participant1's epoch",
    async () => {
      const [epoch, record] = [await nodeEpoch(n), await sequencerRecord(n)];
      return epoch !== undefined && record?.epoch === epoch && record.activation !== "" ? epoch : undefined;
    },
    60_000,
    500,
  );
}

/** A command through this Ledger API commits (retrying while deduplication recovers after the restore). */
async function commits(clients: LedgerClients, id: string, party: string): Promise<void> {
  await waitFor(
    `${id} to commit`,
    async () => {
      const r = await clients.commands.submitAndWait(
        { commands: createIouCommand(id, party, party, { amount: "1.00" }) },
        { timeoutMs: 30_000 },
      );
      return r.offset > 0n ? true : undefined;
    },
    90_000,
    1000,
  );
}

async function latestRecovery(n: LedgerNetwork): Promise<{ epoch_unverified: boolean }> {
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(n.dataDir) });
  await cluster.start();
  const db = createPgDb({
    connectionString: cluster.connectionUrl(embeddedDatabaseName("participant1")),
    max: 1,
  });
  try {
    return await db.one("SELECT epoch_unverified FROM recovery_records ORDER BY id DESC LIMIT 1");
  } finally {
    await db.close();
  }
}

function applyOk(r: Awaited<ReturnType<typeof restore>>, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.stdout}${r.stderr}`);
}

test("two copies restored from one set: the second to connect is refused at the equal epoch", async (t) => {
  const n = await network();
  const alice = await allocateKnownParty(n, 0, "alice");
  await commits(n.clients[0] as LedgerClients, "before-backup", alice);
  const set = await backupCreate(n);
  t.diagnostic(`backup set ${set}`);

  // A second config: identical, but its own data dir and another port for participant1.
  const copyPort = await freePort();
  const config = parse(readFileSync(n.net.configPath, "utf8")) as {
    "data-dir": string;
    participants: { name: string; port: number }[];
  };
  config["data-dir"] = "data-copy";
  (config.participants[0] as { port: number }).port = copyPort;
  // The operator restoring the copy holds the network's admin token (the sequencer's checks need it).
  (config as { admin?: unknown }).admin = { "token-file": join(n.dataDir, "admin-token") };
  const copyConfig = join(n.net.dir, "lockstep-copy.yaml");
  writeFileSync(copyConfig, stringify(config));
  const copy: LedgerNetwork = { ...n, cfg: ["--config", copyConfig], dataDir: join(n.net.dir, "data-copy") };
  cleanups.push(async () => void (await runLockstep(["down", ...copy.cfg])));

  await nodeStop(n, "participant1");
  applyOk(await restore(n, "apply", set, ["--nodes", "participant1", "--replace"]), "restore (first copy)");
  applyOk(await restore(copy, "apply", set, ["--nodes", "participant1"]), "restore (second copy)");

  await nodeStart(n, "participant1");
  const epoch = await heardAt(n);
  await nodeStart(copy, "participant1");
  // Old code: the second copy's equal epoch was accepted and both copies acted as participant1.
  const refused = await waitForNodeError(copy, "participant1", ["STALE_WRITER_EPOCH"]).catch((error) => {
    throw new Error(`${error}\n${nodeLog(copy, "participant1")}`);
  });
  t.diagnostic(refused.lastError?.message ?? "");
  assert.equal(await nodeEpoch(copy), epoch, "both copies bumped to the same epoch");
  assert.equal((await sequencerRecord(n))?.epoch, epoch);

  // The first copy keeps working.
  await commits(n.clients[0] as LedgerClients, "after-both-started", alice);
  const first = await nodeStatus(n, "participant1");
  assert.deepEqual([first.role, first.lastError], ["active", null]);
});

test("restored while the sequencer is down: the epoch becomes exactly the sequencer's record + 1", async (t) => {
  const n = await network();
  const alice = await allocateKnownParty(n, 0, "alice");
  await commits(n.clients[0] as LedgerClients, "before-backup", alice);
  const set = await backupCreate(n);
  const backupEpoch = await heardAt(n);

  // Activations after the backup raise the sequencer's record above the backup's epoch.
  for (let i = 0; i < 2; i++) {
    await nodeStop(n, "participant1");
    await nodeStart(n, "participant1");
  }
  const prior = await heardAt(n);
  assert.equal(prior, backupEpoch + 2n);

  await nodeStop(n, "participant1");
  await nodeStop(n, "sequencer1");
  const plan = await restore(n, "plan", set, ["--nodes", "participant1", "--replace"]);
  // Live checks that could not run are overridden explicitly (restore.md), as an operator would.
  const unchecked = plan
    .json<{ checks: { node: string; check: string; verdict: string }[] }>()
    .checks.filter((c) => c.node === "participant1" && c.verdict === "refuse")
    .map((c) => c.check);
  t.diagnostic(`refused with the sequencer down: ${unchecked.join(", ") || "none"}`);
  const force = unchecked.length > 0 ? ["--force", unchecked.map((c) => `participant1:${c}`).join(",")] : [];
  applyOk(await restore(n, "apply", set, ["--nodes", "participant1", "--replace", ...force]), "restore");
  assert.equal((await latestRecovery(n)).epoch_unverified, true, "the restore could not verify the epoch");

  // Started before its sequencer: it waits (retrying) and acts on no unverified epoch meanwhile.
  await nodeStart(n, "participant1");
  await waitFor(
    "participant1 to find its sequencer unreachable",
    async () => (/sequencer unavailable/.test(nodeLog(n, "participant1")) ? true : undefined),
    60_000,
    500,
  );
  assert.equal((await latestRecovery(n)).epoch_unverified, true, "still unverified while unreachable");

  await nodeStart(n, "sequencer1");
  // Old code: backup epoch + 1000 at the restore, + 1 at the start.
  const settled = await waitFor(
    "participant1 to settle its writer epoch",
    async () => ((await nodeEpoch(n)) === prior + 1n ? true : undefined),
    60_000,
    500,
  ).catch(async (error) => {
    throw new Error(`${error}; epoch ${await nodeEpoch(n)}, prior ${prior}\n${nodeLog(n, "participant1")}`);
  });
  assert.ok(settled);
  assert.equal(await heardAt(n), prior + 1n, "the sequencer's record is the prior one + 1");
  assert.equal((await latestRecovery(n)).epoch_unverified, false, "the flag is cleared");
  await commits(n.clients[0] as LedgerClients, "after-restore", alice);
  assert.equal(await nodeEpoch(n), prior + 1n);
});
