/**
 * What bench/backup.ts and bench/backup-physical.ts share: one temp folder and config, a timed
 * command (wall and CPU under GNU time, each stderr line timestamped so a Lockstep command's steps
 * can be timed from its progress lines), the figures' summary and the table that prints them.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { stringify } from "yaml";
import { LOCKSTEP_BIN } from "../src/cli/self-process.ts";

export const RUNS = Number(process.env.BENCH_RUNS ?? 3);
/** Runs of each restore (raw and Lockstep, logical and physical): the slow part of the bench. */
export const RESTORE_RUNS = Number(process.env.BENCH_RESTORE_RUNS ?? RUNS);
export const FORMAT = (process.env.BENCH_FORMAT ?? "custom") as "custom" | "tar" | "directory";
export const NODE = "participant1";

export const base = mkdtempSync(join(tmpdir(), "lockstep-bench-backup-"));
export const dataDir = join(base, "data");
export const repository = join(base, "backups");
export const configPath = join(base, "lockstep.yaml");
writeFileSync(
  configPath,
  stringify({
    "data-dir": dataDir,
    synchronizer: {
      id: "sync1",
      sequencer: { name: "sequencer1", port: 4901 },
      mediator: { name: "mediator1", port: 4902 },
    },
    participants: [{ name: NODE, port: 4911, "ledger-api": { auth: { type: "off" } } }],
    backup: { repository, format: FORMAT, jobs: 2 },
  }),
);

export interface Timing {
  wall: number;
  /** user + sys CPU seconds of the process and the children it waited for (not a server's). */
  cpu: number;
  stdout: string;
  /** Each stderr line with its time in seconds since the command started. */
  lines: { t: number; text: string }[];
}

/**
 * Runs a command under GNU time: wall clock and CPU of the whole process tree it waits for. Dirty
 * pages are flushed first (`sync`, untimed): otherwise a command pays for the writeback of the one
 * before it (a backup's or restore's gigabyte), and whichever runs second looks slower.
 */
export function timed(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Timing> {
  execFileSync("sync");
  const timeFile = join(base, "time");
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn("/usr/bin/time", ["-f", "%e %U %S", "-o", timeFile, command, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...env },
    });
    let stdout = "";
    let stderr = "";
    let partial = "";
    const lines: Timing["lines"] = [];
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      const t = (performance.now() - started) / 1000;
      stderr = (stderr + d).slice(-4000);
      const parts = (partial + d).split("\n");
      partial = parts.pop() ?? "";
      for (const text of parts) lines.push({ t, text });
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0)
        return reject(
          new Error(`${command} ${args.join(" ")} exited ${code}: ${stdout.slice(-2000)}${stderr}`),
        );
      const [wall, user, sys] = readFileSync(timeFile, "utf8").trim().split(/\s+/).slice(-3).map(Number);
      resolve({ wall: wall ?? 0, cpu: (user ?? 0) + (sys ?? 0), stdout, lines });
    });
  });
}

/** `lockstep ARGS --config <bench config>` under timed() (a new process, as an operator runs it). */
export async function lockstep(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  nodeArgs: string[] = [],
): Promise<Timing> {
  const run = await timed(process.execPath, [...nodeArgs, LOCKSTEP_BIN, ...args, "--config", configPath], {
    LOCKSTEP_LOG_LEVEL: "warn",
    ...env,
  });
  // BENCH_VERBOSE=1: each command's progress lines with their times (where the steps' times come from).
  if (process.env.BENCH_VERBOSE) {
    console.log(`    lockstep ${args.join(" ")}: ${s(run.wall)}`);
    for (const l of run.lines) console.log(`      ${l.t.toFixed(2).padStart(7)} s  ${l.text}`);
  }
  return run;
}

/** A command as the `postgres` OS user (the cluster's owner: pgBackRest must run as it). */
export function asPostgres(command: string, args: string[]): Promise<Timing> {
  return process.getuid?.() === 0
    ? timed("runuser", ["-u", "postgres", "--", command, ...args])
    : timed(command, args);
}

/** The time of the first stderr line matching `re` (the command's step), else undefined. */
export function stepAt(timing: Timing, re: RegExp): number | undefined {
  return timing.lines.find((l) => re.test(l.text))?.t;
}

/** A restore's steps: each named by the progress line that ends it (undefined: the end). */
export type Steps = [string, RegExp | undefined][];

/** pg-dump engine: pg_restore into the staging database. */
export const LOGICAL_STEPS: Steps = [
  ["start-up, plan, staging db", /: pg_restore of/],
  ["pg_restore", /: bringing the schema up/],
  ["stamp, rename, exit", undefined],
];
/** Each step's seconds, from the times of the progress lines that end them. */
export function stepTimes(run: Timing, steps: Steps): Record<string, number | undefined> {
  const out: Record<string, number | undefined> = {};
  let from: number | undefined = 0;
  for (const [name, ends] of steps) {
    const at = ends ? stepAt(run, ends) : run.wall;
    out[name] = at !== undefined && from !== undefined ? at - from : undefined;
    from = at;
  }
  return out;
}

export const describeSteps = (run: Timing, steps: Steps) =>
  Object.entries(stepTimes(run, steps))
    .map(([k, v]) => `${k} ${s(v)}`)
    .join(", ");

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
export const minOf = (xs: number[]) => Math.min(...xs);
export const medOf = median;
export const s = (x: number | undefined) => (x === undefined ? "-" : `${x.toFixed(2)} s`);

/** One line of the summary: Lockstep beside its baseline, or a derived ratio, against a target. */
export interface Figure {
  what: string;
  baseline: string;
  figure: string;
  ratio: number | undefined;
  /** Median CPU seconds, baseline / Lockstep (of the processes timed, not the servers'). */
  cpu?: string;
  /** How to print the ratio, when not as a plain number (e.g. a percentage). */
  ratioText?: string;
  /** e.g. "≤ 1.10"; undefined: no target, printed for the reader. */
  target?: { text: string; met: (ratio: number) => boolean };
}

export const atMost = (limit: number, text = `≤ ${limit.toFixed(2)}`) => ({
  text,
  met: (r: number) => r <= limit,
});

export const atLeast = (limit: number, text = `≥ ${limit.toFixed(2)}`) => ({
  text,
  met: (r: number) => r >= limit,
});

/** Lockstep's runs beside the baseline's: min / median wall, ratio of the minima. */
export function compare(what: string, raw: Timing[], cli: Timing[], target?: Figure["target"]): Figure {
  const r = raw.map((x) => x.wall);
  const c = cli.map((x) => x.wall);
  return {
    what,
    baseline: `${minOf(r).toFixed(2)} / ${median(r).toFixed(2)} s`,
    figure: `${minOf(c).toFixed(2)} / ${median(c).toFixed(2)} s`,
    ratio: minOf(c) / minOf(r),
    cpu: `${median(raw.map((x) => x.cpu)).toFixed(2)} / ${median(cli.map((x) => x.cpu)).toFixed(2)} s`,
    ...(target ? { target } : {}),
  };
}

export function printFigures(title: string, figures: Figure[]): void {
  console.log(`\n${title}\n`);
  console.log(
    "| figure | baseline wall (min / median) | lockstep wall (min / median) | ratio (min / min) | target | | CPU baseline / lockstep (median) |",
  );
  console.log("|---|---|---|---|---|---|---|");
  for (const f of figures) {
    const ratio = f.ratioText ?? (f.ratio === undefined ? "-" : f.ratio.toFixed(3));
    const verdict =
      f.target && f.ratio !== undefined ? (f.target.met(f.ratio) ? "**met**" : "**missed**") : "";
    console.log(
      `| ${f.what} | ${f.baseline} | ${f.figure} | ${ratio} | ${f.target?.text ?? "-"} | ${verdict} | ${f.cpu ?? "-"} |`,
    );
  }
}
