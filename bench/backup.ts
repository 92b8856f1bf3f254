/**
 * `lockstep backup create --nodes participant1` against a raw `pg_dump` of the same database in the
 * same format, in the same run, at one or more database sizes; prints each time, the ratio (goal
 * ≤ 1.10) and the CLI's peak RSS (which should stay flat as the database grows: dumps are streamed).
 *
 *   npm run bench:backup                        # BENCH_SIZES_GB=1 BENCH_FORMAT=custom BENCH_RUNS=3
 *   BENCH_SIZES_GB=0.25,1 npm run bench:backup  # RSS at two sizes
 *
 * The participant database is migrated as a node would, then filled with generated rows in the
 * participant tables (updates, contracts, stored events) with generate_series, without a network:
 * the dump's cost depends on the data, not on how it got there. Each run alternates raw and CLI.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { LOCKSTEP_BIN } from "../src/cli/self-process.ts";
import { embeddedClusterDir } from "../src/node/node-database.ts";
import { ensureNodeState, nodeStateMigrations } from "../src/node/node-state.ts";
import { participantNodeKind } from "../src/participant/participant-node.ts";
import { LocalPostgres } from "../src/storage/local-postgres.ts";
import { runMigrations } from "../src/storage/migrations.ts";
import { createPgDb } from "../src/storage/pg-db.ts";
import { findClientTools } from "../src/storage/postgres-binaries.ts";

const SIZES_GB = (process.env.BENCH_SIZES_GB ?? "1").split(",").map(Number);
const FORMAT = (process.env.BENCH_FORMAT ?? "custom") as "custom" | "tar" | "directory";
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const FLAG = { custom: "c", tar: "t", directory: "d" }[FORMAT];
// Writes the CLI process's own peak RSS (kB) to $BENCH_RSS_FILE at exit (pg_dump's is not in it).
const RSS_HOOK =
  "data:text/javascript,import{writeFileSync}from'node:fs';process.on('exit',()=>writeFileSync(process.env.BENCH_RSS_FILE,String(process.resourceUsage().maxRSS)))";

const base = mkdtempSync(join(tmpdir(), "lockstep-bench-backup-"));
const dataDir = join(base, "data");
const repository = join(base, "backups");
const configPath = join(base, "lockstep.yaml");
writeFileSync(
  configPath,
  stringify({
    "data-dir": dataDir,
    synchronizer: {
      id: "sync1",
      sequencer: { name: "sequencer1", port: 4901 },
      mediator: { name: "mediator1", port: 4902 },
    },
    participants: [{ name: "participant1", port: 4911 }],
    backup: { repository, format: FORMAT, jobs: 2 },
  }),
);
// fsync off: the bench measures dumping, and generating the data should not take the hour.
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

interface Timing {
  wall: number;
  /** user + sys CPU seconds of the process and the children it waited for (pg_dump, for the CLI). */
  cpu: number;
}

/** Runs a command under GNU time: wall clock and CPU of the whole process tree. */
function timed(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Timing> {
  const timeFile = join(base, "time");
  return new Promise((resolve, reject) => {
    const child = spawn("/usr/bin/time", ["-f", "%e %U %S", "-o", timeFile, command, ...args], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, ...env },
    });
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr = (stderr + d).slice(-4000);
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`${command} ${args.join(" ")} exited ${code}: ${stderr}`));
      const [wall, user, sys] = readFileSync(timeFile, "utf8").trim().split(/\s+/).slice(-3).map(Number);
      resolve({ wall: wall ?? 0, cpu: (user ?? 0) + (sys ?? 0) });
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const minWall = (xs: Timing[]) => Math.min(...xs.map((x) => x.wall));
const med = (xs: Timing[], k: keyof Timing) => median(xs.map((x) => x[k]));

async function main(): Promise<void> {
  const tools = findClientTools();
  const { port } = await cluster.start();
  await cluster.ensureDatabase("participant1");
  const url = cluster.connectionUrl("participant1");
  const db = createPgDb({ connectionString: url, max: 1 });
  await runMigrations(db, "participant", [...nodeStateMigrations, ...participantNodeKind.migrations]);
  await ensureNodeState(db, "participant1", "participant");
  console.log(
    `backup bench: format ${FORMAT}, ${RUNS} run(s) per size; ${cpus().length} CPUs, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM; pg_dump ${tools.version}; cluster port ${port}`,
  );
  // The CLI's fixed cost (node + tsx start-up, config): what a one-off command costs at any size.
  const startup = await timed(process.execPath, [LOCKSTEP_BIN, "backup", "list", "--config", configPath]);
  console.log(
    `  CLI start-up (lockstep backup list): ${startup.wall.toFixed(2)} s wall, ${startup.cpu.toFixed(2)} s CPU`,
  );
  const rows: string[] = [];
  for (const gb of SIZES_GB) {
    const size = await fillTo(db, gb * 2 ** 30);
    const raw: Timing[] = [];
    const cli: Timing[] = [];
    const rss: number[] = [];
    let dumpBytes = 0;
    for (let run = 0; run < RUNS; run++) {
      const out = join(base, `raw-${run}.${FORMAT}`);
      const jobs = FORMAT === "directory" ? ["--jobs=2"] : [];
      raw.push(await timed(tools.pgDump, [`--format=${FLAG}`, ...jobs, `--file=${out}`, `--dbname=${url}`]));
      dumpBytes = Number(execFileSync("du", ["-sb", out], { encoding: "utf8" }).split("\t")[0]);
      rmSync(out, { recursive: true, force: true });
      const rssFile = join(base, "rss");
      const args = [
        "--import",
        RSS_HOOK,
        LOCKSTEP_BIN,
        "backup",
        "create",
        "--nodes",
        "participant1",
        "--config",
        configPath,
      ];
      cli.push(await timed(process.execPath, args, { BENCH_RSS_FILE: rssFile, LOCKSTEP_LOG_LEVEL: "warn" }));
      rss.push(Number(readFileSync(rssFile, "utf8")) / 1024);
      rmSync(repository, { recursive: true, force: true });
      const [r, c] = [raw.at(-1) as Timing, cli.at(-1) as Timing];
      console.log(
        `  ${gb} GiB run ${run + 1}: raw pg_dump ${r.wall.toFixed(2)} s (CPU ${r.cpu.toFixed(2)} s), lockstep ${c.wall.toFixed(2)} s (CPU ${c.cpu.toFixed(2)} s), CLI peak RSS ${rss.at(-1)?.toFixed(0)} MiB`,
      );
    }
    rows.push(
      `| ${(size / 2 ** 30).toFixed(2)} GiB | ${(dumpBytes / 2 ** 20).toFixed(0)} MiB | ${minWall(raw).toFixed(2)} / ${med(raw, "wall").toFixed(2)} s | ${minWall(cli).toFixed(2)} / ${med(cli, "wall").toFixed(2)} s | ${(minWall(cli) / minWall(raw)).toFixed(3)} | ${med(raw, "cpu").toFixed(2)} / ${med(cli, "cpu").toFixed(2)} s | ${(med(cli, "cpu") / med(raw, "cpu")).toFixed(3)} | ${Math.max(...rss).toFixed(0)} MiB |`,
    );
  }
  console.log(
    `\n| database | dump (${FORMAT}) | raw pg_dump wall, min / median | lockstep wall, min / median | wall ratio (min; goal ≤ 1.10) | CPU raw / lockstep (median) | CPU ratio | CLI peak RSS |`,
  );
  console.log("|---|---|---|---|---|---|---|---|");
  for (const row of rows) console.log(row);
  await db.close();
}

try {
  await main();
} finally {
  await cluster.stop().catch(() => undefined);
  if (!process.env.BENCH_KEEP) rmSync(base, { recursive: true, force: true });
}
