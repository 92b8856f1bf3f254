/**
 * The pgBackRest part of bench/backup.ts (issue 14): on the same node database, in the same run,
 *
 *   - full backup: `lockstep backup create --engine pgbackrest --type full --nodes participant1`
 *     beside `pgbackrest backup --type=full` of the same stanza, run by hand as the cluster's owner
 *     with the config file Lockstep wrote; also pgBackRest's own time for each (its log);
 *   - incremental after ~1 % of the rows changed: before each incremental (raw or Lockstep) a fresh
 *     1 % of the rows of the three big tables is updated (rows whose key % 100 = k, a new k each time,
 *     so each incremental sees the same amount of change), then `--type incr` beside
 *     `pgbackrest backup --type=incr`; and the incremental's time as a share of the full's;
 *   - restore: `lockstep restore apply SET --nodes participant1 --yes` of the last Lockstep full set,
 *     into an empty target (the participant database is dropped first, untimed), beside the raw
 *     `pgbackrest restore` with the options Lockstep passes (that set's label, its restore point as
 *     the target, `--db-include` of the node's database) into an empty directory plus starting a
 *     server on it until it promoted itself. Lockstep restores both
 *     ways it can: in place (the embedded cluster holds nothing else) and through a scratch cluster
 *     and a logical copy (another database beside it); each broken down from its progress lines.
 */
import { appendFileSync, chownSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { type PgBackRestBackup, parseInfo } from "../src/backup/pgbackrest/pgbackrest-info.ts";
import { waitForPromotion } from "../src/backup/pgbackrest/scratch-restore.ts";
import { LocalPostgres } from "../src/storage/local-postgres.ts";
import { createPgDb } from "../src/storage/pg-db.ts";
import { makeTraversable, postgresOsUser } from "../src/storage/server-process.ts";
import {
  asPostgres,
  atMost,
  base,
  compare,
  describeSteps,
  type Figure,
  lockstep,
  medOf,
  minOf,
  NODE,
  RESTORE_RUNS,
  RUNS,
  repository,
  type Steps,
  s,
  stepAt,
  stepTimes,
  type Timing,
} from "./backup-common.ts";

export interface Stanza {
  stanza: string;
  configFile: string;
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/** `lockstep backup setup participant1` (archiving on: restarts the cluster once; the stanza). */
export async function setUpPgBackRest(): Promise<Stanza> {
  const run = await lockstep(["backup", "setup", NODE, "--json"]);
  const json = JSON.parse(run.stdout) as Stanza & { restarted: boolean };
  console.log(
    `  lockstep backup setup ${NODE}: stanza ${json.stanza}, ${json.restarted ? "cluster restarted" : "no restart"} (${s(run.wall)})`,
  );
  return { stanza: json.stanza, configFile: json.configFile };
}

/** pgBackRest by hand, as the cluster's owner, with the config file Lockstep wrote. */
function pgbackrest(stanza: Stanza, args: string[]): Promise<Timing> {
  return asPostgres("pgbackrest", [`--config=${stanza.configFile}`, `--stanza=${stanza.stanza}`, ...args]);
}

/**
 * How long pgBackRest's own `backup` (of `label`) or latest `restore` command took, as its log says
 * (`… command end: completed successfully (Nms)`): the same figure for a raw and a Lockstep run,
 * without process start-ups around it.
 */
function loggedSeconds(stanza: Stanza, command: "backup" | "restore", label?: string): number | undefined {
  const log = join(dirname(stanza.configFile), "log", `${stanza.stanza}-${command}.log`);
  const lines = readFileSync(log, "utf8").split("\n");
  const from = label ? lines.findIndex((l) => l.includes(`new backup label = ${label}`)) : 0;
  const ends = lines
    .slice(Math.max(from, 0))
    .map((l) => /command end: completed successfully \((\d+)ms\)/.exec(l)?.[1])
    .filter((ms): ms is string => ms !== undefined);
  const ms = label ? ends[0] : ends.at(-1);
  return ms === undefined ? undefined : Number(ms) / 1000;
}

/** The stanza's newest backup, and how long `pgbackrest info` took (Lockstep runs it 3 times per backup). */
async function newest(stanza: Stanza): Promise<PgBackRestBackup & { infoWall: number }> {
  const info = await pgbackrest(stanza, ["--output=json", "info"]);
  const backup = parseInfo(info.stdout, stanza.stanza).backups.at(-1);
  if (!backup) throw new Error(`pgBackRest lists no backup in stanza ${stanza.stanza}`);
  return { ...backup, infoWall: info.wall };
}

const copied = (b: PgBackRestBackup) =>
  `${b.label} copied ${mib(b.size.delta)} of ${mib(b.size.database)} (${mib(b.size.repositoryDelta)} in the repository)`;

/** Where the time of a Lockstep pgBackRest backup went, from its progress lines. */
function backupSteps(run: Timing): string {
  const start = stepAt(run, /pgBackRest (full|incr|diff) backup of/);
  const done = stepAt(run, /pgBackRest backup \S+ \(\w+\) in/);
  if (start === undefined || done === undefined) return "";
  return `: ${s(start)} to the backup, ${s(done - start)} pgbackrest backup, ${s(run.wall - done)} after (restore point, WAL archived, manifest)`;
}

/** Updates 1 % of the rows of the three big tables: those whose key % 100 = k. */
async function changeOnePercent(url: string, k: number): Promise<number> {
  const db = createPgDb({ connectionString: url, max: 1 });
  try {
    let rows = 0;
    for (const sql of [
      "UPDATE participant_updates SET command_id = command_id || '-r' WHERE ledger_offset % 100 = $1",
      "UPDATE participant_contracts SET archived_offset = created_offset + 1 WHERE created_offset % 100 = $1",
      "UPDATE sequencer_client_events SET message_id = message_id || '-r' WHERE timestamp % 100 = $1",
    ]) {
      rows += await db.execute(sql, [k]);
    }
    return rows;
  } finally {
    await db.close();
  }
}

/** pgBackRest's own times (its log) raw and under Lockstep, min / median and the ratio of the minima. */
function ownFigure(what: string, raw: number[], cli: number[]): Figure {
  return {
    what,
    baseline: `${minOf(raw).toFixed(2)} / ${medOf(raw).toFixed(2)} s`,
    figure: `${minOf(cli).toFixed(2)} / ${medOf(cli).toFixed(2)} s`,
    ratio: minOf(cli) / minOf(raw),
  };
}

export interface PhysicalBackups {
  figures: Figure[];
  /** The last Lockstep full set: what the restore part restores. */
  fullSet: string;
}

export async function physicalBackups(stanza: Stanza, url: string): Promise<PhysicalBackups> {
  const create = (type: string) =>
    lockstep(["backup", "create", "--engine", "pgbackrest", "--type", type, "--nodes", NODE, "--json"]);
  const raw: Record<"full" | "incr", Timing[]> = { full: [], incr: [] };
  const cli: Record<"full" | "incr", Timing[]> = { full: [], incr: [] };
  // pgBackRest's own backup command, as its log times it (raw and under Lockstep).
  const own: Record<"raw" | "cli", Record<"full" | "incr", number[]>> = {
    raw: { full: [], incr: [] },
    cli: { full: [], incr: [] },
  };
  let fullSet = "";
  for (const type of ["full", "incr"] as const) {
    for (let run = 0; run < RUNS; run++) {
      // Raw first in even runs, Lockstep first in odd ones: neither always runs on the other's heels.
      const changed = type === "incr" ? await changeOnePercent(url, 2 * run) : 0;
      let r: Timing | undefined;
      let rb: Awaited<ReturnType<typeof newest>> | undefined;
      let c: Timing | undefined;
      let cb: typeof rb;
      const rawBackup = async () => {
        r = await pgbackrest(stanza, ["backup", `--type=${type}`]);
        rb = await newest(stanza);
      };
      const cliBackup = async () => {
        c = await create(type);
        cb = await newest(stanza);
      };
      const [one, two] = run % 2 === 0 ? [rawBackup, cliBackup] : [cliBackup, rawBackup];
      await one();
      if (type === "incr") await changeOnePercent(url, 2 * run + 1);
      await two();
      if (!r || !rb || !c || !cb) throw new Error("a backup of the run did not run");
      raw[type].push(r);
      cli[type].push(c);
      // The full set restores come from: the last Lockstep full.
      if (type === "full") fullSet = (JSON.parse(c.stdout) as { set: string }).set;
      own.raw[type].push(loggedSeconds(stanza, "backup", rb.label) ?? Number.NaN);
      own.cli[type].push(loggedSeconds(stanza, "backup", cb.label) ?? Number.NaN);
      console.log(
        `  ${type} run ${run + 1}${changed ? ` (${changed} rows updated before each)` : ""}: raw pgbackrest ${s(r.wall)} (CPU ${s(r.cpu)}; ${copied(rb)}), lockstep ${s(c.wall)} (CPU ${s(c.cpu)}; ${copied(cb)})${backupSteps(c)}; pgBackRest's log: raw ${s(own.raw[type].at(-1))}, under lockstep ${s(own.cli[type].at(-1))}; pgbackrest info ${s(cb.infoWall)}`,
      );
    }
  }
  const share = (incr: Timing[], full: Timing[]) =>
    minOf(incr.map((x) => x.wall)) / minOf(full.map((x) => x.wall));
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  return {
    fullSet,
    figures: [
      compare("pgBackRest full backup", raw.full, cli.full, atMost(1.1)),
      ownFigure("… pgBackRest's own backup command (its log), full", own.raw.full, own.cli.full),
      {
        what: "… lockstep's time beyond it, full (median of wall − own)",
        baseline: "-",
        figure: s(medOf(cli.full.map((c, i) => c.wall - (own.cli.full[i] ?? Number.NaN)))),
        ratio: undefined,
      },
      compare("pgBackRest incr backup (1 % of rows changed)", raw.incr, cli.incr),
      ownFigure("… pgBackRest's own backup command (its log), incr", own.raw.incr, own.cli.incr),
      {
        what: "incr time as % of full (min / min)",
        baseline: `raw ${pct(share(raw.incr, raw.full))}`,
        figure: `lockstep ${pct(share(cli.incr, cli.full))}`,
        ratio: share(cli.incr, cli.full),
        ratioText: pct(share(cli.incr, cli.full)),
        target: atMost(0.15, "≤ 15 %"),
      },
    ],
  };
}

/** Appended to the restored postgresql.auto.conf, as Lockstep's scratch restore does (scratch-restore.ts). */
const SCRATCH_SETTINGS = "\narchive_mode = 'off'\nunix_socket_directories = ''\n";

/**
 * The raw physical restore, run by hand with the options Lockstep's restore passes (issue 14: "the
 * raw tool with the same options"): `pgbackrest restore --set=<label> --type=name --target=<the set's
 * restore point> --target-timeline=<its timeline> --target-action=promote --db-include=<the node's
 * database>` into an empty directory, then a server started on it (pg_ctl start -w) until recovery
 * ended and it promoted. With fsync on, as an operator's restore of a live cluster runs (Lockstep's
 * in-place restore does; its scratch cluster runs with fsync off). Archiving off in the copy: it
 * would otherwise push its new timeline into the stanza.
 */
interface RawTarget {
  label: string;
  restorePoint: string;
  timeline?: number;
}

async function rawRestore(stanza: Stanza, target: RawTarget): Promise<Timing & { restore: number }> {
  const dir = join(base, "raw-restore");
  const owner = postgresOsUser();
  mkdirSync(dir, { mode: 0o700 });
  if (process.getuid?.() === 0 && owner) {
    chownSync(dir, owner.uid, owner.gid);
    makeTraversable(base, owner);
  }
  const cluster = new LocalPostgres({ dir });
  try {
    const started = performance.now();
    const restore = await pgbackrest(stanza, [
      "restore",
      `--set=${target.label}`,
      "--type=name",
      `--target=${target.restorePoint}`,
      ...(target.timeline ? [`--target-timeline=${target.timeline}`] : []),
      "--target-action=promote",
      `--db-include=${NODE}`,
      `--pg1-path=${cluster.dataDir}`,
    ]);
    appendFileSync(join(cluster.dataDir, "postgresql.auto.conf"), SCRATCH_SETTINGS);
    await cluster.start();
    // The raw baseline waits as Lockstep's scratch restore does: until the server promoted itself.
    await waitForPromotion(cluster, Date.now() + 30 * 60_000);
    const wall = (performance.now() - started) / 1000;
    return { wall, cpu: restore.cpu, stdout: "", lines: [], restore: restore.wall };
  } finally {
    await cluster.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** pgbackrest engine, the node's database restored alone: a scratch cluster, then a logical copy. */
const SCRATCH_STEPS: Steps = [
  ["start-up, plan, staging db", /: pgBackRest restore of \S+ from/],
  ["scratch restore + recovery", /: copying .* from the scratch cluster/],
  ["copy (pg_dump → pg_restore) + scratch stop", /: bringing the schema up/],
  ["stamp, rename, exit", undefined],
];
/** pgbackrest engine, the embedded cluster holds only the restored nodes: its data dir replaced in place. */
const IN_PLACE_STEPS: Steps = [
  ["start-up, plan", /: pgBackRest restore of the embedded cluster/],
  ["pgbackrest restore", /: stopping the embedded cluster/],
  ["stop + swap", /: recovering to/],
  ["recovery, promotion, archiving on", /: bringing the schema up/],
  ["stamp, exit", undefined],
];

export interface PhysicalRestores {
  raw: Timing[];
  /** Lockstep's restore of the database alone in its cluster (in place), and beside another (scratch + copy). */
  inPlace: Timing[];
  scratch: Timing[];
  figures: Figure[];
}

/**
 * Raw pgBackRest restore beside `lockstep restore apply` of the last Lockstep full set, both ways
 * Lockstep restores (docs/restore.md "How a physical restore runs"): with the embedded cluster
 * holding nothing but the node's database (this bench's layout: in place), and with another
 * database beside it (`bench_other`, standing for the other nodes' databases of a shared embedded
 * cluster: a scratch cluster, then a logical copy).
 */
export async function physicalRestores(
  stanza: Stanza,
  fullSet: string,
  live: LocalPostgres,
): Promise<PhysicalRestores> {
  const descriptor = JSON.parse(
    readFileSync(join(repository, fullSet, `${NODE}.pgbackrest.json`), "utf8"),
  ) as {
    record: { label: string; target: { name: string; timeline?: number } };
  };
  const label = descriptor.record.label;
  const target: RawTarget = {
    label,
    restorePoint: descriptor.record.target.name,
    timeline: descriptor.record.target.timeline,
  };
  const raw: (Timing & { restore: number })[] = [];
  const inPlace: Timing[] = [];
  const scratch: Timing[] = [];
  // The target empty (no --replace, nothing kept); a restore in place may have moved the port.
  const dropTarget = async () => {
    await live.start();
    await live.dropDatabase(NODE);
  };
  const apply = () => lockstep(["restore", "apply", fullSet, "--nodes", NODE, "--yes"]);
  for (let run = 0; run < RESTORE_RUNS; run++) {
    const r = await rawRestore(stanza, target);
    raw.push(r);
    const rawOwn = loggedSeconds(stanza, "restore");
    await dropTarget();
    if (run === 0) await showPlan(fullSet);
    const a = await apply();
    inPlace.push(a);
    const inPlaceOwn = loggedSeconds(stanza, "restore");
    await dropTarget();
    await live.ensureDatabase("bench_other");
    const b = await apply();
    scratch.push(b);
    const scratchOwn = loggedSeconds(stanza, "restore");
    await live.dropDatabase("bench_other");
    console.log(
      `  physical restore run ${run + 1} (${label}): raw ${s(r.wall)} (pgbackrest restore ${s(r.restore)}, CPU ${s(r.cpu)}; start + recovery + promotion ${s(r.wall - r.restore)})`,
    );
    console.log(`    lockstep in place ${s(a.wall)} (CPU ${s(a.cpu)}: ${describeSteps(a, IN_PLACE_STEPS)})`);
    console.log(
      `    lockstep scratch + copy ${s(b.wall)} (CPU ${s(b.cpu)}: ${describeSteps(b, SCRATCH_STEPS)})`,
    );
    console.log(
      `    pgBackRest's log, restore command: raw ${s(rawOwn)}, in place ${s(inPlaceOwn)}, scratch ${s(scratchOwn)}`,
    );
  }
  const step = (runs: Timing[], steps: Steps, k: string) =>
    minOf(runs.map((c) => stepTimes(c, steps)[k] ?? Number.NaN));
  const rawMin = minOf(raw.map((r) => r.wall));
  const rawRestoreMin = minOf(raw.map((r) => r.restore));
  const scratchPart = step(scratch, SCRATCH_STEPS, "scratch restore + recovery");
  const copyPart = step(scratch, SCRATCH_STEPS, "copy (pg_dump → pg_restore) + scratch stop");
  const inPlaceRestore = step(inPlace, IN_PLACE_STEPS, "pgbackrest restore");
  return {
    raw,
    inPlace,
    scratch,
    figures: [
      compare("physical restore, in place (the cluster holds only this node)", raw, inPlace, atMost(1.1)),
      {
        what: "… its pgbackrest restore step vs raw pgbackrest restore",
        baseline: s(rawRestoreMin),
        figure: s(inPlaceRestore),
        ratio: inPlaceRestore / rawRestoreMin,
      },
      compare(
        "physical restore, scratch + copy (another database in the cluster)",
        raw,
        scratch,
        atMost(1.1),
      ),
      {
        what: "… its scratch restore + recovery vs raw restore + recovery",
        baseline: s(rawMin),
        figure: s(scratchPart),
        ratio: scratchPart / rawMin,
      },
      {
        what: "… its copy into the live cluster (pg_dump → pg_restore) + scratch stop",
        baseline: "-",
        figure: s(copyPart),
        ratio: undefined,
      },
    ],
  };
}

/** `lockstep restore plan` once before the first apply: its warnings (none may refuse). */
export async function showPlan(set: string): Promise<void> {
  const plan = await lockstep(["restore", "plan", set, "--nodes", NODE, "--json"]);
  const checks = (JSON.parse(plan.stdout) as { checks: { check: string; verdict: string; code: string }[] })
    .checks;
  const notPassed = checks
    .filter((c) => c.verdict !== "pass")
    .map((c) => `${c.check} ${c.verdict} (${c.code})`);
  console.log(`  restore plan ${set}: ok${notPassed.length ? `; ${notPassed.join(", ")}` : ""}`);
}
