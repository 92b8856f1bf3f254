import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { LockstepError } from "../../src/common/errors.ts";
import type { FenceWriterRequest } from "../../src/gen/lockstep/admin/v1/admin_pb.ts";
import type { NodeRuntime } from "../../src/node/node-runtime.ts";
import { type FenceNotice, fenceMac } from "../../src/node/writer-fencing.ts";
import { createPgDb } from "../../src/storage/pg-db.ts";
import { startTestPostgres } from "../support/postgres.ts";
import { waitUntil } from "../support/wait.ts";
import { startWriterRuntime } from "../support/writer-node.ts";

// Fail-over attacked like an operator on a bad day (issue 12): two processes of one node started at
// the same instant, the node's PostgreSQL restarted under its active process, FenceWriter notices
// forged, tampered with and replayed. Each case: one writer at a time (every row of an epoch precedes
// the first row of the next), nothing written by a process after it was superseded, and the codes.

const pg = await startTestPostgres();
const dataDir = mkdtempSync(join(tmpdir(), "lockstep-failover-attacks-"));
const runtimes: NodeRuntime[] = [];
const readers: { close(): Promise<void> }[] = [];
after(async () => {
  for (const runtime of runtimes) await runtime.stop().catch(() => {});
  for (const reader of readers) await reader.close();
  rmSync(dataDir, { recursive: true, force: true });
});

async function freshDatabase(name: string) {
  await pg.ensureDatabase(name);
  const reader = createPgDb({ connectionString: pg.connectionUrl(name), max: 2 });
  readers.push(reader);
  const start = (replica?: string) =>
    startWriterRuntime({
      dataDir,
      url: pg.connectionUrl(name),
      runtimes,
      logName: `participant1${replica ? `.${replica}` : ""}`,
      ...(replica ? { replica } : {}),
    });
  /** Per epoch: its rows' count and id range, in epoch order. */
  const epochs = () =>
    reader.query<{ epoch: bigint; n: number; first: bigint; last: bigint }>(
      "SELECT epoch, count(*)::int AS n, min(id) AS first, max(id) AS last FROM writes GROUP BY epoch ORDER BY epoch",
    );
  /** No two epochs' rows interleave: each epoch's last row precedes the next epoch's first. */
  const assertOneWriterAtATime = async () => {
    const rows = await epochs();
    for (let i = 1; i < rows.length; i++) {
      const [prev, next] = [rows[i - 1], rows[i]] as [(typeof rows)[0], (typeof rows)[0]];
      assert.ok(
        prev.last < next.first,
        `epoch ${prev.epoch} wrote row ${prev.last} after epoch ${next.epoch}'s first row ${next.first}`,
      );
    }
    return rows;
  };
  return { reader, start, epochs, assertOneWriterAtATime };
}

const roles = (list: NodeRuntime[]) => list.map((r) => r.currentRole).sort();

test("two processes of one node started at the same instant: one active, one passive, one epoch bump", async () => {
  const db = await freshDatabase("attack_race");
  const [x, y] = await Promise.all([db.start(), db.start("b")]);
  assert.deepEqual(roles([x, y]), ["active", "passive"]);
  const active = x.currentRole === "active" ? x : y;
  const { writer_epoch } = await db.reader.one<{ writer_epoch: bigint }>(
    "SELECT writer_epoch FROM node_state",
  );
  assert.equal(writer_epoch, (await active.status()).writerEpoch, "the database's epoch is the active one's");
  await waitUntil("the active one writing", async () => ((await db.epochs())[0]?.n ?? 0) >= 5);
  const rows = await db.epochs();
  assert.deepEqual(
    rows.map((r) => r.epoch),
    [writer_epoch],
    "only the active process's epoch wrote",
  );
  for (const r of [x, y]) await r.stop();
});

test("the node's PostgreSQL restarted under its active process: one writer after, epochs never interleave", async (t) => {
  const db = await freshDatabase("attack_restart");
  const a = await db.start();
  const b = await db.start("b");
  assert.deepEqual([a.currentRole, b.currentRole], ["active", "passive"]);
  const before = (await a.status()).writerEpoch;
  await waitUntil("a writing", async () => ((await db.epochs())[0]?.n ?? 0) >= 5);

  const restarted = performance.now();
  await pg.restart();
  // The restart frees the lock; whichever process takes it bumps the epoch and writes on it.
  await waitUntil(
    "a newer epoch writing",
    async () => (await db.epochs()).some((r) => r.epoch > before && r.n >= 5),
    20_000,
    20,
  );
  t.diagnostic(`restart → a new activation writing: ${Math.round(performance.now() - restarted)} ms`);
  assert.deepEqual(roles([a, b]), ["active", "passive"], "exactly one active process after the restart");
  const active = a.currentRole === "active" ? a : b;
  const now = (await active.status()).writerEpoch;
  assert.ok(now > before, `a new activation after the restart (${before} → ${now})`);
  const rows = await db.assertOneWriterAtATime();
  // Only the current epoch is still writing: the count of every older one stands still.
  const frozen = rows.filter((r) => r.epoch !== now);
  await waitUntil("the current epoch writes on", async () => {
    const latest = (await db.epochs()).find((r) => r.epoch === now);
    return (latest?.n ?? 0) >= (rows.find((r) => r.epoch === now)?.n ?? 0) + 10;
  });
  const later = await db.assertOneWriterAtATime();
  for (const old of frozen) {
    assert.equal(later.find((r) => r.epoch === old.epoch)?.n, old.n, `epoch ${old.epoch} stopped writing`);
  }
  for (const r of [a, b]) await r.stop();
});

test("FenceWriter notices forged, tampered with or replayed never fence the current writer", async () => {
  const db = await freshDatabase("attack_fence");
  const a = await db.start();
  const b = await db.start("b");
  const state = () =>
    db.reader.one<{ writer_epoch: bigint; writer_activation: string; fence_secret: Buffer }>(
      "SELECT writer_epoch, writer_activation, fence_secret FROM node_state",
    );
  const first = await state();
  const notice = (target: string, epoch: bigint): FenceNotice => ({
    node: "participant1",
    targetActivation: target,
    writerEpoch: epoch,
    writerActivation: "forged-activation",
    writerEndpoint: "127.0.0.1:1",
  });
  const request = (n: FenceNotice, mac: Uint8Array) => ({ ...n, mac }) as unknown as FenceWriterRequest;
  const rejected = (e: unknown) => e instanceof LockstepError && e.code === "WRITER_FENCE_REJECTED";

  // Forged: the right target, an epoch far ahead, a MAC under a guessed secret.
  const forged = notice(first.writer_activation, first.writer_epoch + 100n);
  await assert.rejects(a.fenceWriter(request(forged, fenceMac(randomBytes(32), forged))), rejected);
  // Tampered: a genuine MAC for one epoch, sent with another.
  const genuine = notice(first.writer_activation, first.writer_epoch + 1n);
  const mac = fenceMac(first.fence_secret, genuine);
  await assert.rejects(
    a.fenceWriter(request({ ...genuine, writerEpoch: genuine.writerEpoch + 5n }, mac)),
    rejected,
  );
  // For another node: the same secret would not hold, and the node name is bound in the MAC.
  await assert.rejects(a.fenceWriter(request({ ...genuine, node: "participant2" }, mac)), rejected);
  assert.equal(a.currentRole, "active");

  // A genuine notice whose epoch this database already carries (a takeover on one database): the
  // lock decides, not the notice.
  const same = notice(first.writer_activation, first.writer_epoch);
  assert.deepEqual(await a.fenceWriter(request(same, fenceMac(first.fence_secret, same))), {
    outcome: "same-database",
  });
  assert.equal(a.currentRole, "active");

  // Hand over to b, then back to a: a's activation is newer than the one the notice names.
  await a.switchOver();
  await waitUntil("b active", () => b.currentRole === "active", 10_000, 10);
  await b.switchOver();
  await waitUntil("a active again", () => a.currentRole === "active", 10_000, 10);
  const second = await state();
  assert.notEqual(second.writer_activation, first.writer_activation);
  // Replayed: an old, genuine notice naming a's earlier activation, even with an epoch ahead of now.
  const replay = notice(first.writer_activation, second.writer_epoch + 10n);
  const replayed = await a.fenceWriter(request(replay, fenceMac(first.fence_secret, replay)));
  assert.deepEqual(replayed, { outcome: "not-that-activation" });
  // b (passive, its activation superseded) is not fenced by a replay of the notice naming it either.
  assert.equal(a.currentRole, "active");
  await waitUntil("a writes on", async () => {
    const rows = await db.epochs();
    return (rows.find((r) => r.epoch === second.writer_epoch)?.n ?? 0) >= 5;
  });
  await db.assertOneWriterAtATime();

  // A genuine notice from a newer epoch than this database's (another site's promoted copy) fences
  // the current activation: it fails with STALE_WRITER_EPOCH and writes not one row after answering.
  const newer = notice(second.writer_activation, second.writer_epoch + 1n);
  assert.deepEqual(await a.fenceWriter(request(newer, fenceMac(first.fence_secret, newer))), {
    outcome: "fenced",
  });
  const { n } = await db.reader.one<{ n: number }>("SELECT count(*)::int AS n FROM writes WHERE epoch = $1", [
    second.writer_epoch,
  ]);
  assert.equal(a.currentRole, "failed");
  assert.equal((await a.status()).lastError?.code, "STALE_WRITER_EPOCH");
  // b takes the lock a's dropped session freed, and writes on a newer epoch; a wrote nothing more.
  await waitUntil("b active", () => b.currentRole === "active", 10_000, 10);
  const third = (await b.status()).writerEpoch;
  await waitUntil("b writing", async () => {
    const rows = await db.epochs();
    return (rows.find((r) => r.epoch === third)?.n ?? 0) >= 5;
  });
  const after = await db.assertOneWriterAtATime();
  assert.equal(
    after.find((r) => r.epoch === second.writer_epoch)?.n,
    n,
    "a wrote nothing after it was fenced",
  );
  for (const r of [a, b]) await r.stop();
});

test("switch-over asked twice at once: one answers, the other is refused NODE_PASSIVE; one writer after", async () => {
  const db = await freshDatabase("attack_switch");
  const a = await db.start();
  const b = await db.start("b");
  const before = (await a.status()).writerEpoch;
  await waitUntil("a writing", async () => ((await db.epochs())[0]?.n ?? 0) >= 5);
  const results = await Promise.allSettled([a.switchOver(), a.switchOver()]);
  const answered = results.filter((r) => r.status === "fulfilled");
  const refused = results.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
  assert.equal(answered.length, 1);
  assert.deepEqual(answered[0]?.value, { writerEpoch: before });
  assert.ok(refused[0] instanceof LockstepError && refused[0].code === "NODE_PASSIVE", String(refused[0]));
  const written = (await db.epochs()).find((r) => r.epoch === before)?.n;
  await waitUntil("b active", () => b.currentRole === "active", 10_000, 10);
  const next = (await b.status()).writerEpoch;
  await waitUntil("b writing", async () => ((await db.epochs()).find((r) => r.epoch === next)?.n ?? 0) >= 5);
  assert.equal(a.currentRole, "passive");
  const rows = await db.assertOneWriterAtATime();
  assert.equal(
    rows.find((r) => r.epoch === before)?.n,
    written,
    "a wrote nothing after its switch-over answered",
  );
  for (const r of [a, b]) await r.stop();
});

/**
 * A TCP proxy to PostgreSQL that can cut one connection silently: the server's end closes (the
 * server frees what that session held at once), the node's end stays open and hears nothing.
 */
class OneCutProxy {
  private readonly pairs: { client: net.Socket; upstream: net.Socket }[] = [];
  private readonly server = net.createServer((client) => {
    const upstream = net.connect(this.port, "127.0.0.1");
    client.on("error", () => {});
    upstream.on("error", () => client.destroy());
    this.pairs.push({ client, upstream });
    client.pipe(upstream);
    upstream.pipe(client);
  });
  constructor(private readonly port: number) {}
  async start(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return (this.server.address() as net.AddressInfo).port;
  }
  /** Cuts the connection whose server side is the backend seen at `clientPort`. */
  cut(clientPort: number): void {
    const pair = this.pairs.find((p) => p.upstream.localPort === clientPort);
    assert.ok(pair, `a proxied connection from port ${clientPort}`);
    pair.client.unpipe();
    pair.client.pause();
    pair.upstream.unpipe();
    pair.upstream.destroy();
  }
  close(): void {
    for (const { client } of this.pairs) client.destroy();
    this.server.close();
  }
}

test("only the lock session cut, silently: the stale process's open writes cannot commit after the new epoch", async () => {
  const name = "attack_lock_cut";
  const db = await freshDatabase(name);
  const direct = new URL(pg.connectionUrl(name));
  const proxy = new OneCutProxy(Number(direct.port));
  const proxied = new URL(direct);
  proxied.port = String(await proxy.start());
  try {
    const a = await startWriterRuntime({
      dataDir,
      url: proxied.toString(),
      runtimes,
      logName: "participant1-a",
    });
    const b = await db.start("b");
    const before = (await a.status()).writerEpoch;
    await waitUntil("a writing", async () => ((await db.epochs())[0]?.n ?? 0) >= 5);
    // The backend holding the node's lock: its session is cut; a's pool connections stay up, and a
    // hears nothing until its lock check goes unanswered (2 s), while b takes the lock at once.
    const { port } = await db.reader.one<{ port: number }>(
      `SELECT a.client_port AS port FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.locktype = 'advisory' AND l.granted AND a.datname = $1`,
      [name],
    );
    proxy.cut(port);
    await waitUntil("b active", () => b.currentRole === "active", 10_000, 10);
    await waitUntil("a passive", () => a.currentRole === "passive", 10_000, 10);
    const next = (await b.status()).writerEpoch;
    assert.ok(next > before);
    await waitUntil(
      "b writing",
      async () => ((await db.epochs()).find((r) => r.epoch === next)?.n ?? 0) >= 5,
    );
    await db.assertOneWriterAtATime();
    for (const r of [a, b]) await r.stop();
  } finally {
    proxy.close();
  }
});
