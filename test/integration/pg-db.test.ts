import assert from "node:assert/strict";
import { test } from "node:test";
import { isLockstepError } from "../../src/common/errors.ts";
import { lockIdForDatabase, SessionLock } from "../../src/storage/advisory-lock.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { createTestDb, startTestPostgres } from "../support/postgres.ts";
import { waitUntil } from "../support/wait.ts";

const pg = await startTestPostgres();
const db = await createTestDb(pg, "pgdb");

function waitFor<T>(promise: Promise<T>, ms = 5000): Promise<T> {
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error("timed out")), ms).unref()),
  ]);
}

test("int8 round-trips as bigint, in arrays and in json parameters", async () => {
  const max = 2n ** 63n - 1n;
  const row = await db.one<{ a: bigint; b: bigint; arr: bigint[]; j: { n: string } }>(
    "SELECT $1::int8 AS a, $2::int8 AS b, $3::int8[] AS arr, $4::jsonb AS j",
    [max, -42n, [1n, 2n ** 40n], { n: 2n ** 60n }],
  );
  assert.equal(row.a, max);
  assert.equal(row.b, -42n);
  assert.deepEqual(row.arr, [1n, 2n ** 40n]);
  assert.deepEqual(row.j, { n: (2n ** 60n).toString() });
  const counted = await db.one<{ n: bigint; i: number }>("SELECT count(*) AS n, 1::int4 AS i");
  assert.equal(counted.n, 1n);
  assert.equal(counted.i, 1);
});

test("one() insists on exactly one row; maybeOne and execute", async () => {
  await db.execute("CREATE TABLE items (id int8 PRIMARY KEY, name text)");
  assert.equal(await db.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')"), 2);
  await assert.rejects(
    db.one("SELECT * FROM items"),
    (e) => isLockstepError(e, "INTERNAL_ERROR") && /got 2/.test(e.message),
  );
  await assert.rejects(db.one("SELECT * FROM items WHERE id = 9"), /got 0/);
  assert.equal(await db.maybeOne("SELECT * FROM items WHERE id = 9"), undefined);
  assert.deepEqual(await db.maybeOne("SELECT * FROM items WHERE id = $1", [2n]), { id: 2n, name: "b" });
});

test("a transaction rolls back when its function throws, and commits otherwise", async () => {
  await db.execute("CREATE TABLE tx_test (v int)");
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.execute("INSERT INTO tx_test VALUES (1)");
      throw new Error("boom");
    }),
    /boom/,
  );
  assert.equal((await db.one<{ n: bigint }>("SELECT count(*) AS n FROM tx_test")).n, 0n);
  const result = await db.transaction(async (tx) => {
    await tx.execute("INSERT INTO tx_test VALUES (2)");
    return "done";
  });
  assert.equal(result, "done");
  assert.equal((await db.one<{ n: bigint }>("SELECT count(*) AS n FROM tx_test")).n, 1n);
  // A Tx used after its transaction ended is refused instead of silently running outside it.
  let leaked: { execute(sql: string): Promise<number> } | undefined;
  await db.transaction(async (tx) => {
    leaked = tx;
  });
  await assert.rejects(leaked!.execute("INSERT INTO tx_test VALUES (3)"), /after it ended/);
});

test("transaction options: isolation, read only", async () => {
  const isolation = await db.transaction(
    (tx) => tx.one<{ transaction_isolation: string }>("SHOW transaction_isolation"),
    {
      isolation: "serializable",
    },
  );
  assert.equal(isolation.transaction_isolation, "serializable");
  await assert.rejects(
    db.transaction((tx) => tx.execute("CREATE TABLE ro_test (v int)"), { readOnly: true }),
    (e) => (e as { code?: string }).code === "25006",
  );
});

test("synchronousCommit sets synchronous_commit = on for the transaction only", async () => {
  const name = db.database;
  await db.execute(`ALTER DATABASE "${name}" SET synchronous_commit TO off`);
  // A fresh pool: the per-database setting applies to new connections.
  const fresh = createPgDb({ connectionString: pg.connectionUrl(name) });
  try {
    const show = (options?: { synchronousCommit?: boolean }) =>
      fresh.transaction((tx) => tx.one<{ synchronous_commit: string }>("SHOW synchronous_commit"), options);
    assert.equal((await show()).synchronous_commit, "off");
    assert.equal((await show({ synchronousCommit: true })).synchronous_commit, "on");
    assert.equal((await show()).synchronous_commit, "off", "SET LOCAL does not outlive the transaction");
  } finally {
    await fresh.close();
    await db.execute(`ALTER DATABASE "${name}" RESET synchronous_commit`);
  }
});

test("session: LISTEN/NOTIFY delivers payloads until unsubscribed", async () => {
  const session = await db.session();
  try {
    const received: string[] = [];
    let notify: (() => void) | undefined;
    const unsubscribe = await session.listen("ledger-events", (payload) => {
      received.push(payload);
      notify?.();
    });
    const arrived = new Promise<void>((resolve) => {
      notify = resolve;
    });
    await db.execute("SELECT pg_notify('ledger-events', 'offset-7')");
    await waitFor(arrived);
    assert.deepEqual(received, ["offset-7"]);
    await unsubscribe();
    await db.execute("SELECT pg_notify('ledger-events', 'offset-8')");
    await session.query("SELECT 1"); // a round trip, by which a notification would have arrived
    assert.deepEqual(received, ["offset-7"]);
  } finally {
    session.release();
  }
});

test("session: onError fires when the connection breaks", async () => {
  const session = await db.session();
  const { pid } = await session.one<{ pid: number }>("SELECT pg_backend_pid() AS pid");
  const broke = new Promise<Error>((resolve) => session.onError(resolve));
  await db.execute("SELECT pg_terminate_backend($1)", [pid]);
  const error = await waitFor(broke);
  assert.ok(error instanceof Error);
  session.release(true);
  await assert.rejects(session.query("SELECT 1"), /after release/);
});

test("SessionLock: a second session cannot acquire until the first releases", async () => {
  const id = lockIdForDatabase(db.database);
  const first = await db.session();
  const second = await db.session();
  try {
    const a = new SessionLock(first, id);
    const b = new SessionLock(second, id);
    assert.equal(await a.tryAcquire(), true);
    assert.equal(await a.tryAcquire(), true, "idempotent while held");
    assert.equal(await a.verify(), true);
    assert.equal(await b.tryAcquire(), false);
    let bGotIt = false;
    // Count b's attempts: "passive while the first holds it" is proven by attempts that failed, not
    // by a wait that hopes to have seen some.
    let tries = 0;
    const tryAcquire = b.tryAcquire.bind(b);
    b.tryAcquire = async () => {
      tries++;
      return tryAcquire();
    };
    const waiting = b.waitUntilAcquired(50).then(() => {
      bGotIt = true;
    });
    await waitUntil("b tried three times", () => tries >= 3);
    assert.equal(bGotIt, false, "passive while the first holds the lock");
    await a.release();
    await waitFor(waiting);
    assert.equal(b.acquired, true);
    assert.equal(await a.tryAcquire(), false);
    await b.release();
  } finally {
    first.release();
    second.release();
  }
});

test("SessionLock: the lock frees when the holder's session closes; waiting can be aborted", async () => {
  const id = lockIdForDatabase(db.database);
  const holder = await db.session();
  const other = await db.session();
  try {
    assert.equal(await new SessionLock(holder, id).tryAcquire(), true);
    const waiter = new SessionLock(other, id);
    const controller = new AbortController();
    const aborted = waiter.waitUntilAcquired(50, controller.signal);
    setTimeout(() => controller.abort(new Error("stopping")), 150);
    await assert.rejects(aborted, /stopping/);
    holder.release(); // e.g. the active process died: its connection and lock go with it
    await waitFor(waiter.waitUntilAcquired(50));
    assert.equal(await waiter.verify(), true);
  } finally {
    holder.release();
    other.release();
  }
});

test("lock ids are stable, positive, and differ per database", () => {
  const id = lockIdForDatabase("participant1");
  assert.equal(id, lockIdForDatabase("participant1"));
  assert.notEqual(id, lockIdForDatabase("participant2"));
  assert.ok(id > 0n && id < 2n ** 31n);
});
