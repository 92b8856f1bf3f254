import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { LockstepError } from "../../src/common/errors.ts";
import type { NodeRuntime } from "../../src/node/node-runtime.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { startTestPostgres } from "../support/postgres.ts";
import { waitFor, waitUntil } from "../support/wait.ts";
import { startWriterRuntime, writerKind } from "../support/writer-node.ts";

// Single writer (docs/design.md §3) with a node kind that does nothing but write: rows tagged with the
// writer epoch of the activation that wrote them, in a bigserial order. However the active process
// goes (its connections cut, a switch-over), every row of its epoch comes before the first row of
// the next: it stopped writing before the other process started.

const pg = await startTestPostgres();
const database = "single_writer";
await pg.ensureDatabase(database);
const dataDir = mkdtempSync(join(tmpdir(), "lockstep-single-writer-"));
/**
 * A TCP proxy to PostgreSQL whose cut() is a network partition seen from the node's side: the server's
 * end of every connection closes (the server frees the node's lock at once, the worst case), while the
 * node's end stays open and silent, with no RST, so only its own lock check can tell.
 */
class CuttableProxy {
  private readonly pairs = new Set<{ client: net.Socket; upstream?: net.Socket }>();
  private cutOff = false;
  private readonly server = net.createServer((client) => {
    const pair: { client: net.Socket; upstream?: net.Socket } = { client };
    this.pairs.add(pair);
    client.on("error", () => {});
    if (this.cutOff) return; // accepted, never answered
    const upstream = net.connect(this.target.port, this.target.host);
    upstream.on("error", () => client.destroy());
    pair.upstream = upstream;
    client.pipe(upstream);
    upstream.pipe(client);
  });

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return (this.server.address() as net.AddressInfo).port;
  }

  cut(): void {
    this.cutOff = true;
    for (const { client, upstream } of this.pairs) {
      client.unpipe();
      client.pause();
      upstream?.unpipe();
      upstream?.destroy();
    }
  }

  /** Ends the partition the hard way: the node's ends close too, so whatever hung there fails. */
  close(): void {
    for (const { client } of this.pairs) client.destroy();
    this.server.close();
  }
}
const reader = createPgDb({ connectionString: pg.connectionUrl(database), max: 2 });
const runtimes: NodeRuntime[] = [];
after(async () => {
  for (const runtime of runtimes) await runtime.stop();
  await reader.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/** How long the writer kind takes to stop: longer than a passive process takes to take over. */
const STOP_TAKES_MS = 1500;

async function startProcess(replica: string | undefined, created: { count: number }): Promise<NodeRuntime> {
  return startWriterRuntime({
    dataDir,
    url: pg.connectionUrl(database),
    runtimes,
    logName: `participant1${replica ? `.${replica}` : ""}`,
    replica,
    kind: writerKind({ created, stopTakesMs: STOP_TAKES_MS }),
  });
}

async function epochOf(runtime: NodeRuntime): Promise<bigint> {
  return (await runtime.status()).writerEpoch;
}

async function rowsOf(epoch: bigint): Promise<{ n: number; first: bigint | null; last: bigint | null }> {
  return reader.one(
    "SELECT count(*)::int AS n, min(id) AS first, max(id) AS last FROM writes WHERE epoch = $1",
    [epoch],
  );
}

/** Every row of `before` precedes every row of `next`, and `next` has written. */
async function assertHandedOver(before: bigint, next: bigint): Promise<void> {
  await waitUntil(`epoch ${next} writing`, async () => (await rowsOf(next)).n >= 5);
  const [old, fresh] = [await rowsOf(before), await rowsOf(next)];
  assert.ok(old.n > 0, `epoch ${before} wrote`);
  assert.ok(
    (old.last as bigint) < (fresh.first as bigint),
    `the last row of epoch ${before} (${old.last}) precedes the first of epoch ${next} (${fresh.first})`,
  );
}

const createdA = { count: 0 };
const createdB = { count: 0 };
let a: NodeRuntime;
let b: NodeRuntime;

test("the process that loses its database connection stops writing before the passive one takes over", async (t) => {
  a = await startProcess(undefined, createdA);
  b = await startProcess("b", createdB);
  assert.equal(a.currentRole, "active");
  assert.equal(b.currentRole, "passive");
  assert.equal(b.health().status, "passive");
  const epochA = await epochOf(a);
  await waitUntil("a writing", async () => (await rowsOf(epochA)).n >= 5);

  const cut = performance.now();
  const { n } = await reader.one<{ n: number }>(
    "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1",
    ["lockstep-participant1"],
  );
  assert.ok(n >= 2, "a's lock session and pool connections");
  await waitUntil("b active", () => b.currentRole === "active", 10_000, 10);
  t.diagnostic(`connections cut → the other process active: ${Math.round(performance.now() - cut)} ms`);
  assert.equal(a.currentRole, "passive");
  assert.equal((await a.status()).lastError, undefined, "lost its lock: passive, not failed");
  await assertHandedOver(epochA, await epochOf(b));
});

test("switch-over: the active one stops writing and releases; the passive one takes over with a fresh kind", async () => {
  await assert.rejects(a.switchOver(), (e) => e instanceof LockstepError && e.code === "NODE_PASSIVE");
  const epochB = await epochOf(b);
  const { writerEpoch } = await b.switchOver();
  assert.equal(writerEpoch, epochB);
  assert.equal(b.currentRole, "passive");
  const written = (await rowsOf(epochB)).n;
  await waitUntil("a active again", () => a.currentRole === "active", 10_000, 10);
  await assertHandedOver(epochB, await epochOf(a));
  assert.equal((await rowsOf(epochB)).n, written, "nothing written by b after the switch-over answered");
  // An instance of a kind runs once: a's second activation runs a new one.
  assert.equal(createdA.count, 2);
});

test("a passive process whose lock session breaks reconnects and stays passive", async () => {
  const { n } = await reader.one<{ n: number }>(
    "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1",
    ["lockstep-participant1.b"],
  );
  assert.ok(n >= 1);
  await waitFor("b's new lock session", async () => {
    const r = await reader.maybeOne("SELECT 1 FROM pg_stat_activity WHERE application_name = $1", [
      "lockstep-participant1.b",
    ]);
    return r ? true : undefined;
  });
  assert.equal(b.currentRole, "passive");
  assert.equal(a.currentRole, "active");
});

test("an active process cut off by a silent network notices through its lock check and goes passive", async (t) => {
  const cutDatabase = "single_writer_cut";
  await pg.ensureDatabase(cutDatabase);
  const direct = new URL(pg.connectionUrl(cutDatabase));
  const proxy = new CuttableProxy({ host: direct.hostname, port: Number(direct.port) });
  const proxied = new URL(direct);
  proxied.port = String(await proxy.start());
  const start = (url: string, replica?: string) =>
    startWriterRuntime({ dataDir, url, runtimes, logName: "participant1-cut", replica });
  const c = await start(proxied.toString());
  const d = await start(direct.toString(), "d");
  try {
    assert.deepEqual([c.currentRole, d.currentRole], ["active", "passive"]);
    const cut = performance.now();
    proxy.cut();
    await waitUntil("d active", () => d.currentRole === "active", 10_000, 10);
    t.diagnostic(`cut → the other process active: ${Math.round(performance.now() - cut)} ms`);
    // c hears nothing: no error, no closed socket. Its check goes unanswered and fences it.
    await waitUntil("c passive", () => c.currentRole === "passive", 10_000, 10);
    const noticed = performance.now() - cut;
    t.diagnostic(
      `cut → the cut-off process passive (its lock check went unanswered): ${Math.round(noticed)} ms`,
    );
    // The check's deadline is 2 s (writer-lock.ts), below the ~4 s a server takes to free a silent client's lock.
    assert.ok(noticed < 5000, `noticed after ${Math.round(noticed)} ms`);
    assert.equal((await c.status()).lastError, undefined);
  } finally {
    proxy.close();
  }
});
