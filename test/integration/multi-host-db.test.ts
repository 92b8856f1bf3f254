import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import pg from "pg";
import { isLockstepError } from "../../src/common/errors.ts";
import { freePort } from "../../src/common/loopback.ts";
import type { Db } from "../../src/storage/db.ts";
import { createMultiHostDb } from "../../src/storage/multi-host-db.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { findClientTools } from "../../src/storage/postgres-binaries.ts";
import { createStorageDb, storageServerUrl } from "../../src/storage/storage-db.ts";
import { startReplicatedPostgres, type TestPostgresServer } from "../support/replication.ts";
import { waitFor } from "../support/wait.ts";

// The Db over a multi-host URL (multi-host-db.ts) on real streaming replication: a primary and its
// synchronous standby, the standby listed FIRST in every URL, so that only the read-write check
// sends the node to the primary. The last test stops the primary and promotes the standby, as
// Patroni would (test/scenarios/patroni-failover.test.ts does it with Patroni itself).

const repl = await startReplicatedPostgres({ replication: "sync" });
await repl.createDatabase("ledger");
const primary = repl.primary;
const standby = repl.standbys[0] as TestPostgresServer;
// A synchronous commit waits for the standby's flush, not its replay: wait until it has the database.
await waitFor("the standby to replay CREATE DATABASE", async () => {
  const client = new pg.Client({ connectionString: standby.url("ledger") });
  client.on("error", () => {});
  await client.connect();
  await client.end();
  return true;
});

function clusterUrl(
  targetSessionAttrs: string,
  hosts: { host: string; port: number }[] = [standby, primary],
) {
  const list = hosts.map((h) => `${h.host}:${h.port}`).join(",");
  return `postgresql://postgres@${list}/ledger?target_session_attrs=${targetSessionAttrs}&application_name=test-multi-host`;
}

async function serverPort(q: Pick<Db, "one">): Promise<number> {
  return (await q.one<{ port: number }>("SELECT inet_server_port() AS port")).port;
}

test("read-write and primary go to the primary though the standby is listed first; any takes the first", async () => {
  for (const mode of ["read-write", "primary"]) {
    const db = createStorageDb({ connectionString: clusterUrl(mode) });
    try {
      assert.equal(db.database, "ledger");
      assert.equal(await serverPort(db), primary.port, mode);
      const session = await db.session();
      assert.equal(await serverPort(session), primary.port, `${mode} session`);
      session.release(true);
    } finally {
      await db.close();
    }
  }
  const any = createStorageDb({ connectionString: clusterUrl("any") });
  try {
    assert.equal(await serverPort(any), standby.port);
  } finally {
    await any.close();
  }
  // Tools that need one server's URL (restore) get the primary's.
  assert.match(await storageServerUrl(clusterUrl("read-write")), new RegExp(`:${primary.port}/ledger`));
});

test("no server accepts writes: DB_CONNECTION_LOST, retryable, naming each host's problem", async () => {
  const closed = await freePort();
  const db = createMultiHostDb({
    url: clusterUrl("read-write", [standby, { host: "127.0.0.1", port: closed }]),
    open: (connectionString) => createPgDb({ connectionString }),
    leaderWaitMs: 1000,
    probeIntervalMs: 200,
  });
  try {
    await assert.rejects(db.query("SELECT 1"), (error) => {
      assert.ok(isLockstepError(error, "DB_CONNECTION_LOST"), String(error));
      assert.equal(error.retryable, true);
      assert.match(error.message, new RegExp(`${standby.port}: a standby \\(in recovery\\)`));
      assert.match(error.message, new RegExp(`${closed}: connect ECONNREFUSED`));
      return true;
    });
  } finally {
    await db.close();
  }
});

test("pg_dump takes the multi-host URL as it is and reaches the server of the Db's exported snapshot", async () => {
  // node-dump.ts exports a snapshot on a session of the node's Db and runs pg_dump --snapshot with
  // the node's URL: libpq (since 10) reads the host list and target_session_attrs itself, and the
  // snapshot can only be imported on the server that exported it, the primary.
  const db = createStorageDb({ connectionString: clusterUrl("read-write") });
  const session = await db.session();
  try {
    await db.execute("CREATE TABLE dumped (note text)");
    await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    const { snapshot } = await session.one<{ snapshot: string }>("SELECT pg_export_snapshot() AS snapshot");
    await db.execute("INSERT INTO dumped VALUES ('after the snapshot')");
    const dump = spawnSync(
      findClientTools().pgDump,
      [
        "--no-password",
        "--data-only",
        "--table=dumped",
        `--snapshot=${snapshot}`,
        `--dbname=${clusterUrl("read-write")}`,
      ],
      { encoding: "utf8" },
    );
    assert.equal(dump.status, 0, dump.stderr);
    assert.match(dump.stdout, /COPY public\.dumped/);
    assert.doesNotMatch(dump.stdout, /after the snapshot/, "the dump is the snapshot's view");
    await session.execute("COMMIT");
  } finally {
    session.release(true);
    await db.execute("DROP TABLE IF EXISTS dumped");
    await db.close();
  }
});

test("fail-over: the session on the old primary reports the loss, the in-flight transaction fails retryable, the Db follows the promoted standby", async () => {
  const db = createStorageDb({ connectionString: clusterUrl("read-write") });
  try {
    await db.execute("CREATE TABLE acknowledged (id int PRIMARY KEY)");
    // Acknowledged: committed on the primary and, synchronously, on the standby.
    await db.execute("INSERT INTO acknowledged VALUES (1)");
    const session = await db.session();
    assert.equal(
      (await session.one<{ ok: boolean }>("SELECT pg_try_advisory_lock(42) AS ok")).ok,
      true,
      "the lock on the primary",
    );
    const sessionErrors: Error[] = [];
    session.onError((error) => sessionErrors.push(error));

    let inside: () => void = () => {};
    const entered = new Promise<void>((resolve) => {
      inside = resolve;
    });
    let proceed: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      proceed = resolve;
    });
    const inFlight = db.transaction(async (tx) => {
      await tx.execute("INSERT INTO acknowledged VALUES (2)");
      inside();
      await gate;
      await tx.execute("INSERT INTO acknowledged VALUES (3)");
    });
    await entered;

    await primary.stop("immediate");
    proceed();
    await assert.rejects(inFlight, (error) => {
      assert.ok(isLockstepError(error, "DB_CONNECTION_LOST"), String(error));
      assert.equal(error.retryable, true);
      return true;
    });
    await waitFor("the session to report the lost connection", () => sessionErrors[0]);
    assert.ok(isLockstepError(sessionErrors[0], "DB_CONNECTION_LOST"), String(sessionErrors[0]));
    session.release(true);

    // Asked while no server accepts writes: answered by the promoted standby, not refused.
    const meanwhile = serverPort(db);
    const promoter = new pg.Client({ connectionString: standby.url("postgres") });
    await promoter.connect();
    try {
      await promoter.query("SELECT pg_promote()");
    } finally {
      await promoter.end();
    }
    assert.equal(await meanwhile, standby.port);

    const rows = await db.query<{ id: number }>("SELECT id FROM acknowledged ORDER BY id");
    assert.deepEqual(
      rows.map((r) => r.id),
      [1],
      "the acknowledged row survived, the in-flight one did not",
    );
    const again = await db.session();
    try {
      assert.equal(await serverPort(again), standby.port);
      assert.equal((await again.one<{ ok: boolean }>("SELECT pg_try_advisory_lock(42) AS ok")).ok, true);
    } finally {
      again.release(true);
    }
  } finally {
    await db.close();
  }
});
