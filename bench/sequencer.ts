/**
 * Sequencer throughput with durable commits (fsync on, synchronous_commit on): events per second
 * sequenced and delivered to two subscribers, under 64, 256 and 1024 concurrent senders, each
 * beside the single-row INSERT commits per second of the same cluster (pgbench, one client), and
 * their ratio. Group commit only pays under concurrency, hence the sweep.
 *
 *   npm run bench:sequencer          # BENCH_SECONDS=15 BENCH_SENDERS=64,256,1024 by default
 *
 * The sequencer runs in this thread; the members (senders and subscribers) in a worker thread.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, freemem, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { silentLogger } from "../src/common/logging.ts";
import { DEFAULT_SYNCHRONIZER_PARAMETERS } from "../src/crypto/topology.ts";
import { NodeServer } from "../src/node/node-server.ts";
import { Sequencer } from "../src/sequencer/sequencer.ts";
import { sequencerMigrations } from "../src/sequencer/sequencer-migrations.ts";
import { sequencerServiceRoutes } from "../src/sequencer/sequencer-service.ts";
import { LocalPostgres } from "../src/storage/local-postgres.ts";
import { runMigrations } from "../src/storage/migrations.ts";
import { createPgDb } from "../src/storage/pg-db.ts";
import { pgbenchInserts } from "./pgbench-baseline.ts";
import type { LoadResult, LoadSettings } from "./sequencer-load.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 3);
const SENDERS = (process.env.BENCH_SENDERS ?? "64,256,1024").split(",").map(Number);

const base = mkdtempSync(join(tmpdir(), "lockstep-bench-"));
const pg = new LocalPostgres({ dir: join(base, "postgres"), fsync: true });

function runLoad(settings: LoadSettings, onWindow: (edge: "start" | "end") => void): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    // A worker does not inherit tsx's loader: register it there before loading the TypeScript file.
    const bootstrap = `import(${JSON.stringify(import.meta.resolve("tsx/esm/api"))})
      .then(({ register }) => { register(); return import(${JSON.stringify(new URL("./sequencer-load.ts", import.meta.url).href)}); })`;
    const worker = new Worker(bootstrap, { eval: true, workerData: settings });
    worker.on("message", (message: { type: string; result?: LoadResult }) => {
      if (message.type === "window-start") onWindow("start");
      else if (message.type === "window-end") onWindow("end");
      else if (message.type === "result" && message.result) resolve(message.result);
    });
    worker.on("error", reject);
    worker.on("exit", (code) => code !== 0 && reject(new Error(`load worker exited with ${code}`)));
  });
}

try {
  const { port } = await pg.start();
  await pg.ensureDatabase("baseline");
  const admin = createPgDb({ connectionString: pg.connectionUrl("baseline"), max: 1 });
  const settings = await admin.query<{ name: string; setting: string }>(
    "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'server_version')",
  );
  await admin.close();
  console.log(`PostgreSQL: ${settings.map((s) => `${s.name}=${s.setting}`).join(", ")}`);
  console.log(
    `machine: ${cpus().length} cpus (${cpus()[0]?.model}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB (${(freemem() / 2 ** 30).toFixed(1)} free)`,
  );

  const insertsPerSecond = pgbenchInserts({
    binDir: pg.binaries.binDir,
    port,
    database: "baseline",
    workDir: base,
  });
  console.log(
    `baseline: pgbench, 1 client, one-row INSERT per transaction: ${insertsPerSecond.toFixed(0)} commits/s`,
  );

  await pg.ensureDatabase("sequencer");
  const db = createPgDb({ connectionString: pg.connectionUrl("sequencer"), max: 10 });
  await runMigrations(db, "sequencer", sequencerMigrations);
  const logger = silentLogger("sequencer");
  const sequencer = await Sequencer.start({
    db,
    logger,
    name: "sequencer",
    synchronizerName: "bench",
    parameters: DEFAULT_SYNCHRONIZER_PARAMETERS,
  });
  const server = new NodeServer({
    node: "sequencer",
    port: 0,
    logger,
    health: () => ({ node: "sequencer", kind: "sequencer", status: "active" }),
    routes: sequencerServiceRoutes(() => sequencer),
  });
  const serverPort = await server.start();

  console.log(
    `sequencer: 2 members subscribed, every event to both, ${SECONDS} s measured after ${WARMUP_SECONDS} s warm-up per row`,
  );
  console.log(
    "  senders | sends acked/s | delivered to both/s | events per commit | ratio to single-row INSERTs",
  );
  let failed = false;
  let best = 0;
  for (const senders of SENDERS) {
    const window: Record<"start" | "end", { batches: number; events: number; at: number }> = {
      start: { batches: 0, events: 0, at: 0 },
      end: { batches: 0, events: 0, at: 0 },
    };
    const databases = [`member_a_${senders}`, `member_b_${senders}`] as const;
    for (const database of databases) await pg.ensureDatabase(database);
    const result = await runLoad(
      {
        port: serverPort,
        seconds: SECONDS,
        warmupSeconds: WARMUP_SECONDS,
        senders,
        memberNames: [`bench-a-${senders}`, `bench-b-${senders}`],
        memberDatabaseUrls: [pg.connectionUrl(databases[0]), pg.connectionUrl(databases[1])],
      },
      (edge) => {
        window[edge] = { ...sequencer.writerStats, at: performance.now() };
      },
    );
    const elapsed = (window.end.at - window.start.at) / 1000;
    const batches = window.end.batches - window.start.batches;
    const events = window.end.events - window.start.events;
    const eventsPerSecond = Math.min(...result.deliveredInWindow) / elapsed;
    const ratio = eventsPerSecond / insertsPerSecond;
    best = Math.max(best, ratio);
    const complete = result.totalDelivered.every((n) => n === result.totalSent);
    console.log(
      `  ${String(senders).padStart(7)} | ${(result.sentInWindow / elapsed).toFixed(0).padStart(13)} | ${eventsPerSecond.toFixed(0).padStart(19)} | ${(events / Math.max(batches, 1)).toFixed(1).padStart(17)} | ${ratio.toFixed(2)}`,
    );
    console.log(
      `          check: ${result.totalSent} sent, delivered ${result.totalDelivered.join(" / ")}, ${result.failedSends} failed sends: ${complete ? "complete" : "INCOMPLETE"}`,
    );
    if (!complete || result.failedSends > 0) failed = true;
  }
  console.log(`best ratio to single-row INSERTs: ${best.toFixed(2)}`);
  await server.stop();
  await sequencer.stop();
  await db.close();
  if (failed) process.exitCode = 1;
} finally {
  await pg.stop().catch(() => {});
  rmSync(base, { recursive: true, force: true });
}
