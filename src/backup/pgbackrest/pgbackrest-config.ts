/**
 * pgBackRest's configuration for one PostgreSQL cluster, as text: pure functions, no I/O.
 *
 * One stanza per cluster. pgBackRest keeps its repository (backups and archived WAL) in a folder of
 * its own inside Lockstep's backup repository (`<repository>/pgbackrest`, or with backup.encryption
 * `<repository>/pgbackrest-<key fingerprint>`, encrypted: pgbackrest-repo.ts), and its lock, log and spool
 * folders plus this config file in a "state" folder the cluster's owner (the `postgres` OS user when
 * Lockstep runs as root) can write: pgBackRest always runs as that user (docs/backup.md: as root it
 * cannot read the data directory, and it warns on every command when it cannot open its log).
 *
 * Fixed choices, measured on this kind of machine (docs/backup.md, "pgBackRest: measured facts"):
 * - `start-fast=y`: without an immediate checkpoint a backup waits for the next scheduled one (minutes).
 * - `compress-type=zst`, `process-max=2`.
 * - `archive-async=n`: archive-push copies each WAL segment before archive_command returns, so a
 *   segment PostgreSQL considers archived is in the repository (simple to reason about in restores).
 * - `expire-auto=n` and `repo1-retention-full` at its maximum: retention is Lockstep's decision (holds,
 *   drills), so pgBackRest never expires on its own after a backup; `expire` is explicit.
 * - pgBackRest reaches PostgreSQL over a Unix socket only (`pg1-socket-path` must be a directory), so the
 *   server needs `unix_socket_directories` to name one (see postgresSettings).
 */
import { join } from "node:path";
import { LockstepError } from "../../common/errors.ts";

export type CompressType = "zst" | "gz" | "lz4" | "bz2" | "none";

/** The PostgreSQL cluster pgBackRest backs up (its `pg1-*` options). */
export interface PgBackRestCluster {
  /** PGDATA. */
  dataDir: string;
  port: number;
  /** The directory of the server's Unix socket (one of its unix_socket_directories). */
  socketDir: string;
  /** The database superuser pgBackRest connects as; default `postgres`. */
  user?: string;
}

export interface PgBackRestConfigInput {
  /** The stanza: pgBackRest's name for this cluster in its repository. */
  stanza: string;
  /** pgBackRest's repository folder (`repo1-path`), e.g. pgBackRestRepoPath(backupRepository). */
  repoPath: string;
  /**
   * The repository's passphrase (`repo1-cipher-pass`, with `repo1-cipher-type=aes-256-cbc`):
   * pgbackrest-repo.ts derives it from the backup key. Absent: a plain repository. The file then
   * holds a secret: PgBackRest.prepare writes it owner-only.
   */
  cipherPass?: string;
  /** Folder for this config file and pgBackRest's lock, log and spool folders; the cluster owner's. */
  stateDir: string;
  cluster: PgBackRestCluster;
  /** Default `zst`. */
  compressType?: CompressType;
  /** Parallel processes for compression and transfer; default 2. */
  processMax?: number;
}

/** The paths of pgBackRest's own files under a state folder. */
export interface PgBackRestPaths {
  configFile: string;
  lockPath: string;
  logPath: string;
  spoolPath: string;
}

/** pgBackRest's largest accepted `repo1-retention-full`: "keep every full backup" without a warning. */
export const RETENTION_FULL_MAX = 9_999_999;

/** pgBackRest's plain repository inside Lockstep's backup repository folder (encrypted ones: pgbackrest-repo.ts). */
export function pgBackRestRepoPath(backupRepository: string): string {
  return join(backupRepository, "pgbackrest");
}

export function pgBackRestPaths(stateDir: string): PgBackRestPaths {
  return {
    configFile: join(stateDir, "pgbackrest.conf"),
    lockPath: join(stateDir, "lock"),
    logPath: join(stateDir, "log"),
    spoolPath: join(stateDir, "spool"),
  };
}

function invalid(details: string): LockstepError {
  return new LockstepError("CONFIG_INVALID", { details: `pgBackRest: ${details}` });
}

/** Stanza names become folder names and command-line values: keep them plain. */
export function checkStanza(stanza: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(stanza)) {
    throw invalid(`stanza ${JSON.stringify(stanza)} must be letters, digits, '_', '.' or '-' (at most 64)`);
  }
  return stanza;
}

/** Config values are one line each and paths are absolute. */
function checkPath(what: string, path: string): string {
  if (!path.startsWith("/")) throw invalid(`${what} must be an absolute path, not ${JSON.stringify(path)}`);
  if (/[\n\r\0]/.test(path)) throw invalid(`${what} must not contain line breaks`);
  return path;
}

/**
 * A Unix socket path is at most 107 bytes (sun_path) and PostgreSQL appends `/.s.PGSQL.<port>` to the
 * directory, so a deep directory cannot hold the socket at all: say so rather than let the server fail.
 */
export function checkSocketDir(socketDir: string): string {
  checkPath("the socket directory", socketDir);
  // unix_socket_directories is a comma-separated list: keep the one entry free of list syntax.
  if (/[,\s"'\\]/.test(socketDir))
    throw invalid(`the socket directory ${socketDir} must not contain , " ' \\ or spaces`);
  const longest = Buffer.byteLength(`${socketDir}/.s.PGSQL.65535`);
  if (longest > 107) {
    throw invalid(`the socket directory ${socketDir} is too long for a Unix socket (${longest} > 107 bytes)`);
  }
  return socketDir;
}

/** pgBackRest's repository encryption: a passphrase that is one plain INI value. */
function cipherLines(pass: string | undefined): string[] {
  if (pass === undefined) return [];
  if (!/^[A-Za-z0-9+/=_-]{32,}$/.test(pass))
    throw invalid("the repository passphrase must be 32 or more base64 or hex characters");
  return ["repo1-cipher-type=aes-256-cbc", `repo1-cipher-pass=${pass}`];
}

/** The text of pgbackrest.conf for one stanza. */
export function pgBackRestConfig(input: PgBackRestConfigInput): string {
  const stanza = checkStanza(input.stanza);
  const paths = pgBackRestPaths(checkPath("the state folder", input.stateDir));
  const { cluster } = input;
  const processMax = input.processMax ?? 2;
  if (!Number.isInteger(processMax) || processMax < 1 || processMax > 999) {
    throw invalid(`process-max must be an integer from 1 to 999, not ${processMax}`);
  }
  if (!Number.isInteger(cluster.port) || cluster.port < 1 || cluster.port > 65535) {
    throw invalid(`the PostgreSQL port must be from 1 to 65535, not ${cluster.port}`);
  }
  const user = cluster.user ?? "postgres";
  if (!/^[A-Za-z_][A-Za-z0-9_$-]*$/.test(user))
    throw invalid(`pg1-user ${JSON.stringify(user)} is not plain`);
  const lines = [
    "# Written by Lockstep (src/backup/pgbackrest/pgbackrest-config.ts); it is rewritten, do not edit.",
    "[global]",
    `repo1-path=${checkPath("the repository", input.repoPath)}`,
    `repo1-retention-full=${RETENTION_FULL_MAX}`,
    ...cipherLines(input.cipherPass),
    `lock-path=${paths.lockPath}`,
    `log-path=${paths.logPath}`,
    `spool-path=${paths.spoolPath}`,
    // Console quiet: stdout carries only what a command outputs (info's JSON); WARN and ERROR go to
    // stderr, which becomes the message of a failure. Each command's full log is in log-path.
    "log-level-console=off",
    "log-level-stderr=warn",
    "log-level-file=info",
    "start-fast=y",
    `compress-type=${input.compressType ?? "zst"}`,
    `process-max=${processMax}`,
    "archive-async=n",
    "expire-auto=n",
    "",
    `[${stanza}]`,
    `pg1-path=${checkPath("the data directory", cluster.dataDir)}`,
    `pg1-port=${cluster.port}`,
    `pg1-socket-path=${checkSocketDir(cluster.socketDir)}`,
    `pg1-user=${user}`,
  ];
  return `${lines.join("\n")}\n`;
}

/** Quotes a word for /bin/sh (PostgreSQL runs archive_command through it). */
function shellWord(word: string): string {
  return /^[A-Za-z0-9_./=:@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** PostgreSQL's archive_command: pgBackRest pushes each finished WAL segment (`%p`) to the repository. */
export function archiveCommand(configFile: string, stanza: string, executable = "pgbackrest"): string {
  const config = shellWord(`--config=${checkPath("the config file", configFile)}`);
  return `${shellWord(executable)} ${config} --stanza=${checkStanza(stanza)} archive-push %p`;
}

/**
 * The server settings pgBackRest needs, as `SHOW` prints them (LocalPostgres.configure compares so):
 * WAL archiving through archive_command (archive_mode only takes effect at server start) at least
 * every minute, a WAL level that backups can be restored from, and a Unix socket for pgBackRest to
 * connect through.
 */
export function postgresSettings(options: {
  configFile: string;
  stanza: string;
  socketDir: string;
  executable?: string;
}): Record<string, string> {
  return {
    wal_level: "replica",
    archive_mode: "on",
    archive_command: archiveCommand(options.configFile, options.stanza, options.executable),
    // A WAL segment is archived when full; on a quiet cluster that can take hours, and a machine
    // lost meanwhile loses the commits in it. At most a minute's commits then (the RPO of a loss).
    archive_timeout: "1min",
    unix_socket_directories: checkSocketDir(options.socketDir),
  };
}
