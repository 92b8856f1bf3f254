/**
 * Runs pgBackRest for one stanza: the commands Lockstep needs, each with a time limit and an
 * AbortSignal, their results typed (pgbackrest-info.ts), their failures as LockstepErrors carrying the
 * tool's own words (its stderr: `ERROR: [040]: unable to restore … HINT: …`).
 *
 * pgBackRest runs as the cluster's owner: the `postgres` OS user when Lockstep runs as root (as
 * LocalPostgres runs the server), else the current user. `prepare()` makes the folders it writes
 * (state and repository) that user's and writes the config file; call it before the first command and
 * again whenever the cluster's port changed (the config names it).
 *
 * Typical first use on a cluster: prepare → (archiving on: embedded-archiving.ts) → stanzaCreate →
 * check → backup("full").
 */
import { chmodSync, chownSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { formatDuration } from "../../common/duration.ts";
import { LockstepError } from "../../common/errors.ts";
import { type Logger, silentLogger } from "../../common/logging.ts";
import {
  makeTraversable,
  postgresOsUser,
  type RunAs,
  type RunResult,
  run,
} from "../../storage/server-process.ts";
import {
  checkStanza,
  type PgBackRestCluster,
  type PgBackRestConfigInput,
  type PgBackRestPaths,
  pgBackRestConfig,
  pgBackRestPaths,
} from "./pgbackrest-config.ts";
import {
  type PgBackRestBackup,
  type PgBackRestBackupType,
  type PgBackRestStanzaInfo,
  parseInfo,
  parseVerify,
  type VerifyReport,
} from "./pgbackrest-info.ts";

export interface PgBackRestOptions {
  config: PgBackRestConfigInput;
  /** Default `pgbackrest` (found on PATH). */
  executable?: string;
  /** Who runs pgBackRest; default the `postgres` OS user when we are root, else the current user. */
  runAs?: RunAs;
  /** A command's time limit unless the call names one; default 30 minutes. */
  timeoutMs?: number;
  logger?: Logger;
}

export interface CommandOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** Where recovery stops (pgBackRest's restore `--type` and `--target`). */
export type RestoreTarget =
  /** Replay all the archived WAL (the latest state the repository has). */
  | { type: "default" }
  /** Stop as soon as the backup is consistent: the state at the end of the backup set. */
  | { type: "immediate" }
  /**
   * Stop after the last commit at or before `time` (`exclusive`: before it). A string is passed on as
   * PostgreSQL reads timestamps (e.g. `clock_timestamp()::text`, keeping microseconds); a Date is UTC.
   */
  | { type: "time"; time: string | Date; exclusive?: boolean }
  /**
   * Stop at a restore point made with `pg_create_restore_point(name)`, following `timeline` (the
   * one it was written on) rather than the newest.
   */
  | { type: "name"; name: string; timeline?: number };

export interface RestoreRequest {
  /** The data directory to restore into: missing or empty (unless `delta`); its parent writable by runAs. */
  dataDir: string;
  /** The backup set (label); default the latest one pgBackRest deems fit for the target. */
  set?: string;
  /** Default `{ type: "default" }`. */
  target?: RestoreTarget;
  /** What the server does on reaching a target other than default; default `promote`. */
  targetAction?: "promote" | "pause" | "shutdown";
  /**
   * Restore only these databases (pgBackRest `--db-include`; the system databases always come along).
   * The others are left as zeroed files that cannot be used: drop them once the server is up.
   */
  databases?: string[];
  /** Reuse what is in dataDir and fix only what differs (`--delta`). */
  delta?: boolean;
}

/** Which backups `expire` removes: one set (and the backups that depend on it), or by retention. */
export type ExpireRequest =
  | { set: string }
  | { retentionFull: number; retentionFullType?: "count" | "time"; retentionDiff?: number };

const DEFAULT_TIMEOUT_MS = 30 * 60_000;
/** How much of the tool's output goes into an error message. */
const MESSAGE_CHARS = 2000;

/** PostgreSQL's timestamp syntax, which pgBackRest also parses to choose a backup set for a time target. */
function targetTime(time: string | Date): string {
  return typeof time === "string" ? time : time.toISOString().replace("T", " ").replace("Z", "+00");
}

/** pgBackRest's restore options for a request. */
export function restoreArgs(request: RestoreRequest): string[] {
  const target = request.target ?? { type: "default" };
  const args = [`--pg1-path=${request.dataDir}`, `--type=${target.type}`];
  if (request.set !== undefined) args.push(`--set=${request.set}`);
  if (target.type === "time") {
    args.push(`--target=${targetTime(target.time)}`);
    if (target.exclusive) args.push("--target-exclusive");
  }
  if (target.type === "name") {
    args.push(`--target=${target.name}`);
    if (target.timeline) args.push(`--target-timeline=${target.timeline}`);
  }
  if (target.type !== "default") args.push(`--target-action=${request.targetAction ?? "promote"}`);
  for (const db of request.databases ?? []) args.push(`--db-include=${db}`);
  if (request.delta) args.push("--delta");
  return args;
}

/** pgBackRest's expire options for a request. */
export function expireArgs(request: ExpireRequest): string[] {
  if ("set" in request) return [`--set=${request.set}`];
  const args = [`--repo1-retention-full=${request.retentionFull}`];
  if (request.retentionFullType) args.push(`--repo1-retention-full-type=${request.retentionFullType}`);
  if (request.retentionDiff !== undefined) args.push(`--repo1-retention-diff=${request.retentionDiff}`);
  return args;
}

/** The OS user the cluster's server runs as: `postgres` when we are root, else undefined (ourselves). */
export function clusterOwner(): RunAs | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const user = postgresOsUser();
  if (!user) {
    throw new LockstepError("PGBACKREST_NOT_INSTALLED", {
      executable: "pgbackrest",
      reason: "as root it runs as the OS user `postgres`, and there is none (`useradd --system postgres`)",
    });
  }
  return user;
}

export class PgBackRest {
  readonly stanza: string;
  readonly paths: PgBackRestPaths;
  readonly runAs: RunAs | undefined;
  private config: PgBackRestConfigInput;
  private readonly executable: string;
  private readonly timeoutMs: number;
  private readonly logger: Logger;

  constructor(options: PgBackRestOptions) {
    this.config = options.config;
    this.stanza = checkStanza(options.config.stanza);
    this.paths = pgBackRestPaths(options.config.stateDir);
    this.executable = options.executable ?? "pgbackrest";
    this.runAs = options.runAs ?? clusterOwner();
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.logger = options.logger ?? silentLogger("pgbackrest");
  }

  get configFile(): string {
    return this.paths.configFile;
  }

  get repoPath(): string {
    return this.config.repoPath;
  }

  /** Whether its repository is encrypted (repo1-cipher-type; pgbackrest-repo.ts). */
  get encrypted(): boolean {
    return this.config.cipherPass !== undefined;
  }

  /** The cluster the config names (its PGDATA, port and socket directory). */
  get cluster(): PgBackRestCluster {
    return this.config.cluster;
  }

  /**
   * Creates the state and repository folders for runAs and (re)writes the config file. Idempotent.
   * `cluster`: the cluster's settings when they changed since construction (a restart moved its port).
   */
  prepare(cluster?: PgBackRestCluster): void {
    if (cluster) this.config = { ...this.config, cluster };
    const { lockPath, logPath, spoolPath, configFile } = this.paths;
    for (const dir of [this.config.stateDir, lockPath, logPath, spoolPath, this.config.repoPath]) {
      mkdirSync(dir, { recursive: true, mode: 0o750 });
      this.own(dir);
    }
    // Whole or not at all: archive_command may read it at any moment. Owner-only (the cluster
    // owner's, who runs pgBackRest): an encrypted repository's passphrase is in it.
    const staging = `${configFile}.${process.pid}.tmp`;
    writeFileSync(staging, pgBackRestConfig(this.config), { mode: 0o600 });
    chmodSync(staging, 0o600);
    this.own(staging);
    renameSync(staging, configFile);
    if (this.runAs) {
      makeTraversable(dirname(this.config.stateDir), this.runAs);
      makeTraversable(dirname(this.config.repoPath), this.runAs);
    }
  }

  /** pgBackRest's version, e.g. "2.45"; PGBACKREST_NOT_INSTALLED when it cannot be run. */
  async version(options: CommandOptions = {}): Promise<string> {
    const result = await this.exec("version", [], { ...options, noStanza: true });
    return /pgBackRest (\S+)/.exec(result.stdout)?.[1] ?? result.stdout.trim();
  }

  /** Creates the stanza in the repository (idempotent); the server must be running. */
  async stanzaCreate(options: CommandOptions = {}): Promise<void> {
    await this.exec("stanza-create", [], options);
  }

  /** Checks the configuration and that WAL archiving works: forces a WAL switch and waits for the segment. */
  async check(options: CommandOptions = {}): Promise<void> {
    await this.exec("check", [], options);
  }

  /** The stanza's backups (oldest first) and archived WAL; with `set`, that backup only, with its databases. */
  async info(options: CommandOptions & { set?: string } = {}): Promise<PgBackRestStanzaInfo> {
    const args = ["--output=json", ...(options.set ? [`--set=${options.set}`] : [])];
    const result = await this.exec("info", args, options);
    return parseInfo(result.stdout, this.stanza);
  }

  /** Takes a backup; returns it as `info` describes it (label, LSNs, the backup it references, …). */
  async backup(type: PgBackRestBackupType, options: CommandOptions = {}): Promise<PgBackRestBackup> {
    const started = Date.now();
    // The label from the backup's own output (INFO "new backup label = …"): one `info` fewer than
    // diffing the list before and after, and right even when another process backs up just after.
    const result = await this.exec("backup", [`--type=${type}`, "--log-level-console=info"], options);
    const label = /new backup label = (\S+)/.exec(result.stdout)?.[1];
    const backup =
      label === undefined
        ? undefined
        : (await this.info({ ...options, set: label })).backups.find((b) => b.label === label);
    if (!backup) {
      throw this.failed(
        "backup",
        0,
        `the backup succeeded, but \`info\` does not list it (${label ?? "no label printed"})`,
      );
    }
    this.logger.info(
      { stanza: this.stanza, label: backup.label, type, ms: Date.now() - started },
      "pgBackRest backup taken",
    );
    return backup;
  }

  /** Restores a backup set into a data directory (see RestoreRequest). Start a server on it to recover. */
  async restore(request: RestoreRequest, options: CommandOptions = {}): Promise<void> {
    await this.exec("restore", restoreArgs(request), options);
  }

  /**
   * Reads every file of the repository and checks it against the backups' manifests and the WAL
   * checksums. pgBackRest exits 0 whatever it finds: read `ok` (and `backups`, `problems`).
   */
  async verify(options: CommandOptions = {}): Promise<VerifyReport> {
    // Console at info (findings are INFO lines of the workers), everything on stdout.
    const args = ["--output=text", "--verbose", "--log-level-console=info", "--log-level-stderr=off"];
    const result = await this.exec("verify", args, options);
    return parseVerify(result.stdout);
  }

  /** Removes a backup set (and those that depend on it), or what a retention policy no longer keeps. */
  async expire(request: ExpireRequest, options: CommandOptions = {}): Promise<void> {
    await this.exec("expire", expireArgs(request), options);
  }

  /**
   * Runs one pgBackRest command with this stanza's config, as runAs. Rejects with the signal's reason
   * when aborted, PGBACKREST_TIMEOUT past the time limit, PGBACKREST_FAILED on a non-zero exit.
   */
  async exec(
    command: string,
    args: string[],
    options: CommandOptions & { noStanza?: boolean } = {},
  ): Promise<RunResult> {
    options.signal?.throwIfAborted();
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    const common = options.noStanza ? [] : [`--config=${this.paths.configFile}`, `--stanza=${this.stanza}`];
    const started = Date.now();
    // cwd "/": pgBackRest uses absolute paths only, and "/" exists before prepare() and for any user.
    const result = await run(this.executable, [...common, ...args, command], "/", this.runAs, { signal });
    this.logger.debug({ command, args, code: result.code, ms: Date.now() - started }, "pgbackrest");
    if (result.errorCode === "ENOENT" || result.errorCode === "EACCES") {
      throw new LockstepError("PGBACKREST_NOT_INSTALLED", {
        executable: this.executable,
        reason: result.stderr.trim(),
      });
    }
    if (options.signal?.aborted) throw options.signal.reason;
    if (timeout.aborted) {
      throw new LockstepError("PGBACKREST_TIMEOUT", {
        command,
        timeout: formatDuration(timeoutMs),
        logPath: this.paths.logPath,
      });
    }
    if (result.code !== 0) {
      const said = result.stderr.trim() || result.stdout.trim() || "(no output)";
      throw this.failed(command, result.code, said.slice(-MESSAGE_CHARS));
    }
    return result;
  }

  private failed(command: string, exitCode: number, reason: string): LockstepError {
    return new LockstepError("PGBACKREST_FAILED", { command, exitCode, reason, logPath: this.paths.logPath });
  }

  private own(path: string): void {
    if (this.runAs) chownSync(path, this.runAs.uid, this.runAs.gid);
  }
}
