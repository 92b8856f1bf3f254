import { execFileSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LOOPBACK } from "../src/common/loopback.ts";

/** How long the baseline runs (BENCH_BASELINE_SECONDS, 10 s by default). */
export const BASELINE_SECONDS = Number(process.env.BENCH_BASELINE_SECONDS ?? 10);

export interface BaselineTarget {
  /** The cluster's binaries (pgbench, psql); falls back to those on PATH. */
  binDir: string;
  port: number;
  /** An existing database of the cluster; the baseline creates its table there. */
  database: string;
  /** A scratch directory for the pgbench script. */
  workDir: string;
}

/**
 * Single-row INSERT commits per second: pgbench, one client, autocommit, on the cluster the
 * benchmark measures. Every benchmark prints its ratio to this number, so they all measure it
 * here, the same way.
 */
export function pgbenchInserts(target: BaselineTarget): number {
  const tool = (name: string) => {
    const path = join(target.binDir, name);
    return existsSync(path) ? path : name;
  };
  const env = {
    ...process.env,
    PGHOST: LOOPBACK,
    PGPORT: String(target.port),
    PGUSER: "postgres",
    PGDATABASE: target.database,
  };
  execFileSync(
    tool("psql"),
    ["-q", "-c", "CREATE TABLE IF NOT EXISTS bench_insert (id bigserial PRIMARY KEY, v int)"],
    {
      env,
    },
  );
  const script = join(target.workDir, "insert.sql");
  writeFileSync(script, "INSERT INTO bench_insert (v) VALUES (1);\n");
  const out = execFileSync(
    tool("pgbench"),
    ["-n", "-c", "1", "-j", "1", "-T", String(BASELINE_SECONDS), "-f", script],
    { encoding: "utf8", env },
  );
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(out)?.[1];
  if (!tps) throw new Error(`cannot read pgbench output:\n${out}`);
  return Number(tps);
}
