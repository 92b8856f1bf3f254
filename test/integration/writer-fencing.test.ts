import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { adminClient } from "../../src/node/clients.ts";
import type { NodeRuntime } from "../../src/node/node-runtime.ts";
import { fenceMac } from "../../src/node/writer-fencing.ts";
import type { Db } from "../../src/storage/db.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { startTestPostgres } from "../support/postgres.ts";
import { waitFor, waitUntil } from "../support/wait.ts";
import { startWriterRuntime } from "../support/writer-node.ts";

// Writer fencing (src/node/writer-fencing.ts, docs/operations.md): a new activation of a node on
// another copy of its database (the other site's promoted standby) tells the process of the
// activation before it that it is stale; that process stops writing and fails with
// STALE_WRITER_EPOCH. On one database (a switch-over) the old process stays a passive replica.
// The "copy" here is a second database given the first one's node_state, as replication would.

const pg = await startTestPostgres();
const [siteA, siteB] = ["fencing_site_a", "fencing_site_b"];
for (const db of [siteA, siteB]) await pg.ensureDatabase(db);
const dataDir = mkdtempSync(join(tmpdir(), "lockstep-fencing-"));
const readers = new Map<string, Db>();
const runtimes: NodeRuntime[] = [];
after(async () => {
  for (const runtime of runtimes) await runtime.stop();
  for (const reader of readers.values()) await reader.close();
  rmSync(dataDir, { recursive: true, force: true });
});

function reader(database: string): Db {
  let db = readers.get(database);
  if (!db) {
    db = createPgDb({ connectionString: pg.connectionUrl(database), max: 2 });
    readers.set(database, db);
  }
  return db;
}

async function startOn(database: string, replica?: string): Promise<NodeRuntime> {
  const logName = `participant1@${database}${replica ? `.${replica}` : ""}`;
  return startWriterRuntime({ dataDir, url: pg.connectionUrl(database), runtimes, logName, replica });
}

async function rowsOf(database: string, epoch: bigint): Promise<number> {
  const r = await reader(database).one<{ n: number }>(
    "SELECT count(*)::int AS n FROM writes WHERE epoch = $1",
    [epoch],
  );
  return r.n;
}

/** What `fencing` in the node's status says (JSON), once it has an answer. */
async function fencingAnswer(runtime: NodeRuntime): Promise<Record<string, unknown>> {
  return waitFor("the fencer's answer", async () => {
    const json = (await runtime.status()).fencingJson;
    const fencing = json ? (JSON.parse(json) as Record<string, unknown>) : undefined;
    return fencing && fencing.state !== "trying" ? fencing : undefined;
  });
}

let oldWriter: NodeRuntime;
let newWriter: NodeRuntime;

test("a new activation on a copy of the database fences the old writer: it stops writing and fails with STALE_WRITER_EPOCH", async () => {
  oldWriter = await startOn(siteA);
  assert.equal(oldWriter.currentRole, "active");
  const oldEpoch = (await oldWriter.status()).writerEpoch;
  await waitUntil("the old writer writing", async () => (await rowsOf(siteA, oldEpoch)) >= 5);

  // Site B's copy: its schema from a first start there, then site A's node_state as replication
  // would have brought it (the old activation, where it runs, the fence secret).
  const scratch = await startOn(siteB);
  await scratch.stop();
  const state = await reader(siteA).one<{
    incarnation: string;
    writer_epoch: bigint;
    writer_activation: string;
    writer_endpoint: string;
    fence_secret: Buffer;
  }>("SELECT incarnation, writer_epoch, writer_activation, writer_endpoint, fence_secret FROM node_state");
  await reader(siteB).execute(
    `UPDATE node_state SET incarnation = $1, writer_epoch = $2, writer_activation = $3, writer_endpoint = $4, fence_secret = $5`,
    [
      state.incarnation,
      state.writer_epoch,
      state.writer_activation,
      state.writer_endpoint,
      state.fence_secret,
    ],
  );

  newWriter = await startOn(siteB);
  assert.equal(newWriter.currentRole, "active");
  const newEpoch = (await newWriter.status()).writerEpoch;
  assert.equal(newEpoch, oldEpoch + 1n);
  const fencing = await fencingAnswer(newWriter);
  assert.equal(fencing.state, "fenced");
  assert.equal(fencing.previousActivation, state.writer_activation);

  const old = await oldWriter.status();
  assert.equal(old.role, "failed");
  assert.equal(old.lastError?.code, "STALE_WRITER_EPOCH", old.lastError?.message);
  assert.equal(oldWriter.health().status, "failed");

  // It stopped writing when it answered (at most one commit was already on its way).
  const atFence = await rowsOf(siteA, oldEpoch);
  const written = await rowsOf(siteB, newEpoch);
  await waitUntil("the new writer writing on", async () => (await rowsOf(siteB, newEpoch)) >= written + 20);
  assert.ok((await rowsOf(siteA, oldEpoch)) <= atFence + 1, "no write by the old writer after it was fenced");
  // Fenced for good: it does not take its (free) lock again.
  assert.equal(oldWriter.currentRole, "failed");
});

test("a fence notice not made with the node's fence secret is refused and changes nothing", async () => {
  const target = await startOn(siteA, "second"); // site A's lock is free: the fenced writer let go
  await waitUntil("active", () => target.currentRole === "active");
  const status = await target.status();
  const client = adminClient(target.port);
  const notice = {
    node: "participant1",
    targetActivation: (
      await reader(siteA).one<{ a: string }>("SELECT writer_activation AS a FROM node_state")
    ).a,
    writerEpoch: status.writerEpoch + 10n,
    writerActivation: "forged",
    writerEndpoint: "127.0.0.1:1",
  };
  const refused = await client.fenceWriter({ ...notice, mac: fenceMac(Buffer.alloc(32, 7), notice) }).then(
    () => "answered",
    (error: unknown) => fromConnectError(error)?.code,
  );
  assert.equal(refused, "WRITER_FENCE_REJECTED");
  assert.equal(target.currentRole, "active");

  // With the secret but for another activation: not this process's business.
  const { fence_secret: secret } = await reader(siteA).one<{ fence_secret: Buffer }>(
    "SELECT fence_secret FROM node_state",
  );
  const other = { ...notice, targetActivation: "someone-else" };
  const answer = await client.fenceWriter({ ...other, mac: fenceMac(secret, other) });
  assert.equal(answer.outcome, "not-that-activation");
  assert.equal(target.currentRole, "active");
  await target.stop();
});

test("a switch-over on one database: the new activation's notice finds the old process on the same database, and it stays passive", async () => {
  const replica = await startOn(siteB, "replica");
  assert.equal(replica.currentRole, "passive");
  await newWriter.switchOver();
  await waitUntil("the replica active", () => replica.currentRole === "active", 10_000, 10);
  const fencing = await fencingAnswer(replica);
  assert.equal(fencing.state, "same-database");
  assert.equal(newWriter.currentRole, "passive");
  assert.equal((await newWriter.status()).lastError, undefined);
});
