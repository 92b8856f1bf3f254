import assert from "node:assert/strict";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { isLockstepError } from "../../src/common/errors.ts";
import { LocalPostgres } from "../../src/storage/local-postgres.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { waitUntil } from "../support/wait.ts";

const base = mkdtempSync(join(tmpdir(), "lockstep-localpg-"));
const clusters: LocalPostgres[] = [];

function cluster(name: string, options: { port?: number } = {}): LocalPostgres {
  const pg = new LocalPostgres({ dir: join(base, name, "postgres"), fsync: false, ...options });
  clusters.push(pg);
  return pg;
}

after(async () => {
  await Promise.allSettled(clusters.map((c) => c.stop()));
  rmSync(base, { recursive: true, force: true });
});

test("start, reuse while running, stop, restart keeps data and port", async () => {
  const pg = cluster("main");
  assert.equal(await pg.isRunning(), false);
  const first = await pg.start();
  assert.equal(first.reused, false);
  assert.equal(first.host, "127.0.0.1");
  assert.equal(await pg.isRunning(), true);

  // Another process (here: another instance) finds the running server and reuses it.
  const second = await new LocalPostgres({ dir: pg.dir }).start();
  assert.deepEqual(second, { host: "127.0.0.1", port: first.port, reused: true });

  assert.equal(await pg.ensureDatabase("ledger"), true);
  const db = createPgDb({ connectionString: pg.connectionUrl("ledger") });
  await db.execute("CREATE TABLE kept (v text)");
  await db.execute("INSERT INTO kept VALUES ('survives restart')");
  await db.close();

  await pg.stop();
  assert.equal(await pg.isRunning(), false);
  await pg.stop(); // stopping a stopped cluster is a no-op

  const restarted = await new LocalPostgres({ dir: pg.dir, fsync: false }).start();
  assert.equal(restarted.reused, false);
  assert.equal(restarted.port, first.port, "the remembered port is used again");
  const again = createPgDb({ connectionString: pg.connectionUrl("ledger") });
  assert.deepEqual(await again.query("SELECT v FROM kept"), [{ v: "survives restart" }]);
  await again.close();
});

test("ensureDatabase is safe under concurrency; list and drop", async () => {
  const pg = cluster("main");
  await pg.start();
  const created = await Promise.all(
    Array.from({ length: 10 }, () => new LocalPostgres({ dir: pg.dir }).ensureDatabase("participant1")),
  );
  assert.equal(created.filter(Boolean).length, 1, "exactly one call created it");
  assert.equal(await pg.ensureDatabase("participant1"), false);
  await Promise.all(["mediator", "sequencer"].map((n) => pg.ensureDatabase(n)));
  assert.deepEqual(await pg.listDatabases(), ["ledger", "mediator", "participant1", "sequencer"]);
  await pg.dropDatabase("mediator");
  await pg.dropDatabase("mediator"); // already gone: fine
  assert.deepEqual(await pg.listDatabases(), ["ledger", "participant1", "sequencer"]);
});

test("concurrent first starts of one directory create and start exactly one cluster", async () => {
  const dir = join(base, "racing", "postgres");
  const instances = Array.from({ length: 3 }, () => new LocalPostgres({ dir, fsync: false }));
  clusters.push(instances[0]!);
  const results = await Promise.all(instances.map((i) => i.start()));
  assert.equal(results.filter((r) => !r.reused).length, 1);
  assert.equal(new Set(results.map((r) => r.port)).size, 1);
  assert.deepEqual(await instances[1]!.listDatabases(), []);
});

test("a fixed port that is taken is refused with PORT_IN_USE", async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
  const port = (blocker.address() as { port: number }).port;
  try {
    await assert.rejects(cluster("taken", { port }).start(), (e) => isLockstepError(e, "PORT_IN_USE"));
  } finally {
    blocker.close();
  }
});

test("connectionUrl before any start names the problem", () => {
  assert.throws(
    () => cluster("never").connectionUrl("x"),
    (e) => isLockstepError(e, "POSTGRES_FAILED"),
  );
});

test("a directory of another user (or not writable) is refused with DATA_DIR_NOT_WRITABLE", async () => {
  const dir = join(base, "foreign", "postgres");
  mkdirSync(dir, { recursive: true });
  if (process.getuid?.() === 0) chownSync(dir, 4242, 4242);
  else chmodSync(dir, 0o500);
  await assert.rejects(cluster("foreign").start(), (e) => isLockstepError(e, "DATA_DIR_NOT_WRITABLE"));
  chmodSync(dir, 0o700);
});

test("configure: reload-only settings without a restart, start-only ones with one; both kept", async () => {
  const pg = cluster("configured");
  const { port } = await pg.start();
  const show = async (name: string) => {
    const db = createPgDb({ connectionString: pg.connectionUrl("postgres") });
    try {
      return (await db.query<{ value: string }>(`SELECT current_setting('${name}') AS value`))[0]?.value;
    } finally {
      await db.close();
    }
  };
  const reloaded = await pg.configure({ log_min_duration_statement: "250ms" });
  assert.deepEqual(reloaded, { changed: ["log_min_duration_statement"], restarted: false });
  await waitUntil(
    "the reload to take effect",
    async () => (await show("log_min_duration_statement")) === "250ms",
  );

  const restarted = await pg.configure({ max_connections: "42", unix_socket_directories: pg.dir });
  assert.deepEqual(restarted, { changed: ["max_connections", "unix_socket_directories"], restarted: true });
  assert.equal(pg.port, port, "a restart keeps the port");
  assert.equal(await show("max_connections"), "42");
  // Shown quoted ("<dir>") but the same: nothing to do the second time.
  assert.deepEqual(await pg.configure({ max_connections: "42", unix_socket_directories: pg.dir }), {
    changed: [],
    restarted: false,
  });

  // ALTER SYSTEM wrote them into the cluster: a plain restart by anyone keeps them.
  await new LocalPostgres({ dir: pg.dir }).restart();
  assert.equal(await show("max_connections"), "42");
  await assert.rejects(pg.configure({ no_such_setting: "1" }), /unknown server setting no_such_setting/);
});
