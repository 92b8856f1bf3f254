/**
 * Backup and restore, Lockstep beside the raw tools, on the same node database in the same run
 * (docs/performance.md "Backup"), at one or more database sizes:
 *
 *   - logical (engine pg-dump): `lockstep backup create --nodes participant1` beside a raw `pg_dump`
 *     in the same format (ratio goal ≤ 1.10, and the CLI's peak RSS, which should stay flat as the
 *     database grows: dumps are streamed); `lockstep restore apply` of that set beside a raw
 *     `pg_restore` of the raw dump into an empty database;
 *   - physical (engine pgbackrest, bench/backup-physical.ts): full and incremental backups beside
 *     `pgbackrest backup`, and the restore beside `pgbackrest restore` + recovery; then physical
 *     restore against logical restore.
 *
 *   npm run bench:backup        # BENCH_SIZES_GB=1 BENCH_ENGINES=pg-dump,pgbackrest BENCH_RUNS=3
 *   BENCH_SIZES_GB=0.25,1 BENCH_ENGINES=pg-dump npm run bench:backup  # RSS at two sizes, logical only
 *
 * BENCH_RUNS: runs of each comparison (raw and Lockstep alternating); BENCH_RESTORE_RUNS (default
 * BENCH_RUNS; 0: no restores) of each restore, the slow part at larger sizes (1 GiB: 5–40 s each;
 * the whole bench ≈ 12 min on 2 cores). BENCH_VERBOSE=1 prints each Lockstep command's progress
 * lines with their times.
 *
 * The participant database is migrated as a node would, then filled with generated rows in the
 * participant tables (updates, contracts, stored events) with generate_series, without a network:
 * the cost depends on the data, not on how it got there. The cluster is set up for pgBackRest
 * (`lockstep backup setup`: archiving on, fsync back on) before any figure, so that every backup and
 * restore runs on the same cluster as configured for production. Restores go into an empty target:
 * the node's database is dropped (untimed) before each Lockstep restore, so no --replace or --force
 * is needed and no replaced database is kept.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { embeddedClusterDir } from "../src/node/node-database.ts";
import { ensureNodeState, nodeStateMigrations } from "../src/node/node-state.ts";
import { participantNodeKind } from "../src/participant/participant-node.ts";
import { LocalPostgres } from "../src/storage/local-postgres.ts";
import { runMigrations } from "../src/storage/migrations.ts";
import { createPgDb } from "../src/storage/pg-db.ts";
import { findClientTools } from "../src/storage/postgres-binaries.ts";
import {
  atLeast,
  atMost,
  base,
  compare,
  dataDir,
  describeSteps,
  type Figure,
  FORMAT,
  LOGICAL_STEPS,
  lockstep,
  medOf,
  minOf,
  NODE,
  printFigures,
  RESTORE_RUNS,
  RUNS,
  repository,
  s,
  type Timing,
  timed,
} from "./backup-common.ts";
import {
  physicalBackups,
  physicalRestores,
  type Stanza,
  setUpPgBackRest,
  showPlan,
} from "./backup-physical.ts";

const SIZES_GB = (process.env.BENCH_SIZES_GB ?? "1").split(",").map(Number);
const ENGINES = (process.env.BENCH_ENGINES ?? "pg-dump,pgbackrest").split(",");
const LOGICAL = ENGINES.includes("pg-dump");
const PHYSICAL = ENGINES.includes("pgbackrest");
const FLAG = { custom: "c", tar: "t", directory: "d" }[FORMAT];
// Writes the CLI process's own peak RSS (kB) to $BENCH_RSS_FILE at exit (pg_dump's is not in it).
const RSS_HOOK =
  "data:text/javascript,import{writeFileSync}from'node:fs';process.on('exit',()=>writeFileSync(process.env.BENCH_RSS_FILE,String(process.resourceUsage().maxRSS)))";

// fsync off while the bench fills the database (generating the data should not take the hour);
// `lockstep backup setup` restarts the cluster as Lockstep starts it, with fsync on.
const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir), fsync: false });

async function fillTo(db: ReturnType<typeof createPgDb>, bytes: number): Promise<number> {
  const size = async () =>
    Number((await db.one<{ s: bigint }>("SELECT pg_database_size(current_database()) AS s")).s);
  let current = await size();
  let next =
    Number(
      (await db.one<{ n: bigint }>("SELECT coalesce(max(ledger_offset), 0) AS n FROM participant_updates")).n,
    ) + 1;
  const batch = 50_000;
  while (current < bytes) {
    const from = next;
    const to = next + batch - 1;
    // ~1 KiB view per update (hex of md5s compresses about 2:1, like real JSON), a contract per
    // update, and a stored event per update with a 256-byte payload.
    await db.execute(
      `INSERT INTO participant_updates (ledger_offset, update_id, request_id, record_time, ledger_time, command_id, act_as, informees, view)
       SELECT i, 'u' || i, i, i, i, 'cmd-' || i, ARRAY['alice::1220'], ARRAY['alice::1220', 'bob::1220'],
              (SELECT string_agg(md5(i::text || k::text), ',') FROM generate_series(1, 30) k)
         FROM generate_series($1::bigint, $2::bigint) i`,
      [from, to],
    );
    await db.execute(
      `INSERT INTO participant_contracts (contract_id, template, arguments, signatories, observers, created_at, salt, created_offset, archived_offset)
       SELECT md5('c' || i) || md5('d' || i), 'Iou', '{"amount":"' || i || '.00","currency":"USD","issuer":"alice::1220","owner":"bob::1220"}',
              ARRAY['alice::1220'], ARRAY['bob::1220'], i, md5('s' || i), i, CASE WHEN i % 3 = 0 THEN i + 1 END
         FROM generate_series($1::bigint, $2::bigint) i`,
      [from, to],
    );
    await db.execute(
      `INSERT INTO sequencer_client_events (timestamp, previous_timestamp, sender, message_id, recipients, payload, chain_hash, signature)
       SELECT i, i - 1, 'participant2::1220', 'm' || i, ARRAY['participant1::1220'],
              decode(repeat(md5(i::text), 8), 'hex'), sha256(i::text::bytea), decode(repeat(md5('sig' || i), 2), 'hex')
         FROM generate_series($1::bigint, $2::bigint) i`,
      [from, to],
    );
    next = to + 1;
    current = await size();
    process.stderr.write(`  filled to ${(current / 2 ** 30).toFixed(2)} GiB (${next - 1} updates)\n`);
  }
  await db.execute("UPDATE participant_ledger_end SET ledger_end = $1", [next - 1]);
  await db.execute("VACUUM ANALYZE");
  return current;
}

const wallMin = (xs: Timing[]) => minOf(xs.map((x) => x.wall));
const med = (xs: Timing[], k: "wall" | "cpu") => medOf(xs.map((x) => x[k]));
const mibOf = (path: string) =>
  Number(execFileSync("du", ["-sb", path], { encoding: "utf8" }).split("\t")[0]) / 2 ** 20;

interface LogicalBackups {
  row: string;
  figure: Figure;
  /** The last raw dump (kept for the raw pg_restore) and the last Lockstep set. */
  archive: string;
  set: string;
}

/** Raw pg_dump and `lockstep backup create` (pg-dump engine), alternating, RUNS times. */
async function logicalBackups(gb: number, size: number, url: string): Promise<LogicalBackups> {
  const tools = findClientTools();
  const raw: Timing[] = [];
  const cli: Timing[] = [];
  const rss: number[] = [];
  let archive = "";
  let set = "";
  for (let run = 0; run < RUNS; run++) {
    if (archive) rmSync(archive, { recursive: true, force: true });
    if (set) rmSync(join(repository, set), { recursive: true, force: true });
    archive = join(base, `raw-${run}.${FORMAT}`);
    const jobs = FORMAT === "directory" ? ["--jobs=2"] : [];
    raw.push(
      await timed(tools.pgDump, [`--format=${FLAG}`, ...jobs, `--file=${archive}`, `--dbname=${url}`]),
    );
    const rssFile = join(base, "rss");
    const create = ["backup", "create", "--engine", "pg-dump", "--nodes", NODE, "--json"];
    cli.push(await lockstep(create, { BENCH_RSS_FILE: rssFile }, ["--import", RSS_HOOK]));
    set = (JSON.parse(cli.at(-1)?.stdout ?? "{}") as { set: string }).set;
    rss.push(Number(readFileSync(rssFile, "utf8")) / 1024);
    const [r, c] = [raw.at(-1) as Timing, cli.at(-1) as Timing];
    console.log(
      `  ${gb} GiB run ${run + 1}: raw pg_dump ${s(r.wall)} (CPU ${s(r.cpu)}), lockstep ${s(c.wall)} (CPU ${s(c.cpu)}), CLI peak RSS ${rss.at(-1)?.toFixed(0)} MiB`,
    );
  }
  const row = `| ${(size / 2 ** 30).toFixed(2)} GiB | ${mibOf(archive).toFixed(0)} MiB | ${wallMin(raw).toFixed(2)} / ${med(raw, "wall").toFixed(2)} s | ${wallMin(cli).toFixed(2)} / ${med(cli, "wall").toFixed(2)} s | ${(wallMin(cli) / wallMin(raw)).toFixed(3)} | ${med(raw, "cpu").toFixed(2)} / ${med(cli, "cpu").toFixed(2)} s | ${(med(cli, "cpu") / med(raw, "cpu")).toFixed(3)} | ${Math.max(...rss).toFixed(0)} MiB |`;
  return { row, figure: compare(`logical backup (${FORMAT})`, raw, cli, atMost(1.1)), archive, set };
}

/** Raw pg_restore of the raw dump into an empty database, and `lockstep restore apply` of the set. */
async function logicalRestores(backups: LogicalBackups): Promise<{ raw: Timing[]; cli: Timing[] }> {
  const tools = findClientTools();
  const raw: Timing[] = [];
  const cli: Timing[] = [];
  for (let run = 0; run < RESTORE_RUNS; run++) {
    await cluster.ensureDatabase("bench_pg_restore");
    const args = [
      "--no-owner",
      "--no-privileges",
      "--exit-on-error",
      ...(FORMAT === "tar" ? [] : ["--jobs=2"]),
    ];
    const url = cluster.connectionUrl("bench_pg_restore");
    raw.push(await timed(tools.pgRestore, [`--dbname=${url}`, ...args, backups.archive]));
    await cluster.dropDatabase("bench_pg_restore");
    await cluster.dropDatabase(NODE); // an empty target: no --replace, nothing kept
    if (run === 0) await showPlan(backups.set);
    cli.push(await lockstep(["restore", "apply", backups.set, "--nodes", NODE, "--yes"]));
    const [r, c] = [raw.at(-1) as Timing, cli.at(-1) as Timing];
    console.log(
      `  logical restore run ${run + 1}: raw pg_restore ${s(r.wall)} (CPU ${s(r.cpu)}), lockstep ${s(c.wall)} (CPU ${s(c.cpu)}: ${describeSteps(c, LOGICAL_STEPS)})`,
    );
  }
  return { raw, cli };
}

async function main(): Promise<void> {
  const tools = findClientTools();
  const { port } = await cluster.start();
  await cluster.ensureDatabase(NODE);
  const db = createPgDb({ connectionString: cluster.connectionUrl(NODE), max: 1 });
  await runMigrations(db, "participant", [...nodeStateMigrations, ...participantNodeKind.migrations]);
  await ensureNodeState(db, NODE, "participant");
  await db.close();
  const pgbackrest = PHYSICAL ? execFileSync("pgbackrest", ["version"], { encoding: "utf8" }).trim() : "";
  console.log(
    `backup bench: engines ${ENGINES.join(",")}, format ${FORMAT}, ${RUNS} run(s) per backup and ${RESTORE_RUNS} per restore; ${cpus().length} CPUs, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM; pg_dump ${tools.version}${pgbackrest ? `, ${pgbackrest}` : ""}; cluster port ${port}`,
  );
  // The CLI's fixed cost (Node start-up and loading the bundle, config): what a one-off command costs at any size.
  const startup = await lockstep(["backup", "list"]);
  console.log(`  CLI start-up (lockstep backup list): ${s(startup.wall)} wall, ${s(startup.cpu)} CPU`);
  const rows: string[] = [];
  let stanza: Stanza | undefined;
  for (const gb of SIZES_GB) {
    // A restart (setup) or a restore may have moved the port or replaced the database: look again.
    await cluster.start();
    const fill = createPgDb({ connectionString: cluster.connectionUrl(NODE), max: 1 });
    const size = await fillTo(fill, gb * 2 ** 30);
    await fill.close();
    if (PHYSICAL && !stanza) {
      stanza = await setUpPgBackRest();
      await cluster.start();
    }
    const url = cluster.connectionUrl(NODE);
    const figures: Figure[] = [];
    const logical = LOGICAL ? await logicalBackups(gb, size, url) : undefined;
    if (logical) {
      rows.push(logical.row);
      figures.push(logical.figure);
    }
    const physical = stanza ? await physicalBackups(stanza, url) : undefined;
    if (physical) figures.push(...physical.figures);
    // BENCH_RESTORE_RUNS=0: backups only.
    const logicalRestore = logical && RESTORE_RUNS > 0 ? await logicalRestores(logical) : undefined;
    if (logicalRestore) figures.push(compare("logical restore", logicalRestore.raw, logicalRestore.cli));
    const physicalRestore =
      stanza && physical && RESTORE_RUNS > 0
        ? await physicalRestores(stanza, physical.fullSet, cluster)
        : undefined;
    if (physicalRestore) figures.push(...physicalRestore.figures);
    if (logicalRestore && physicalRestore) {
      // Speed-up of physical over logical restore: logical time / physical time (min / min).
      const speedup = (
        what: string,
        logicalRuns: Timing[],
        physicalRuns: Timing[],
        target?: Figure["target"],
      ) => {
        const x = wallMin(logicalRuns) / wallMin(physicalRuns);
        figures.push({
          what,
          baseline: `${s(wallMin(logicalRuns))} logical`,
          figure: `${s(wallMin(physicalRuns))} physical`,
          ratio: x,
          ratioText: `${x.toFixed(2)}×`,
          ...(target ? { target } : {}),
        });
      };
      const threeTimes = atLeast(3, "≥ 3×");
      speedup(
        "physical over logical restore, lockstep in place",
        logicalRestore.cli,
        physicalRestore.inPlace,
        threeTimes,
      );
      speedup(
        "physical over logical restore, lockstep scratch + copy",
        logicalRestore.cli,
        physicalRestore.scratch,
        threeTimes,
      );
      speedup("physical over logical restore, raw tools", logicalRestore.raw, physicalRestore.raw);
    }
    printFigures(`${(size / 2 ** 30).toFixed(2)} GiB database: wall times`, figures);
  }
  if (rows.length > 0) {
    console.log(
      `\n| database | dump (${FORMAT}) | raw pg_dump wall, min / median | lockstep wall, min / median | wall ratio (min; goal ≤ 1.10) | CPU raw / lockstep (median) | CPU ratio | CLI peak RSS |`,
    );
    console.log("|---|---|---|---|---|---|---|---|");
    for (const row of rows) console.log(row);
  }
}

try {
  await main();
} finally {
  await cluster.stop().catch(() => undefined);
  if (!process.env.BENCH_KEEP) rmSync(base, { recursive: true, force: true });
}
