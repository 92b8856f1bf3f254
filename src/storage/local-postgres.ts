import { randomBytes } from "node:crypto";
import {
  accessSync,
  appendFileSync,
  chownSync,
  constants,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { LockstepError } from "../common/errors.ts";
import { type Logger, silentLogger } from "../common/logging.ts";
import { freePort, LOOPBACK, portIsFree } from "../common/loopback.ts";
import { finishDataDirSwap } from "./data-dir-swap.ts";
import { findServerBinaries, POSTGRES_MAJOR, type ServerBinaries } from "./postgres-binaries.ts";
import { chownTree, isAlive, makeTraversable, postgresOsUser, type RunAs, run } from "./server-process.ts";

export interface LocalPostgresOptions {
  /** The cluster directory, e.g. `<data-dir>/postgres`: holds `data/` (PGDATA), `server.log`, `port`. */
  dir: string;
  /** A fixed port; by default the previously used one if still free, else any free port. */
  port?: number;
  logger?: Logger;
  /** false for tests: no fsync at initdb or at run time (data may be lost on a machine crash). */
  fsync?: boolean;
}

export interface StartedPostgres {
  host: string;
  port: number;
  /** true when a server for this directory was already running (started by another process or earlier). */
  reused: boolean;
}

const SUPERUSER = "postgres";

/**
 * Whether a setting as the server shows it is `wanted`. List settings come back with each element
 * double-quoted where it is not a plain identifier (ALTER SYSTEM stores `unix_socket_directories` as
 * `"/some/dir"`), so those compare element by element, unquoted.
 */
/** Whether a setting as SHOW prints it is `wanted` (list settings may come quoted element by element). */
export function sameSetting(shown: string, wanted: string): boolean {
  const elements = (list: string) =>
    list
      .split(",")
      .map((e) =>
        e
          .trim()
          .replace(/^"(.*)"$/, "$1")
          .replace(/""/g, '"'),
      )
      .join(",");
  return shown === wanted || elements(shown) === elements(wanted);
}
const START_ATTEMPTS = 3;

/**
 * A PostgreSQL 15 cluster under a directory of ours, run with pg_ctl. It outlives the process that
 * started it (nodes share it; `lockstep down` stops it), so `start` first looks for a running one.
 */
export class LocalPostgres {
  readonly dir: string;
  /** PGDATA. A subdirectory, so the log and port file stay out of base backups. */
  readonly dataDir: string;
  readonly logFile: string;
  private readonly portFile: string;
  private readonly logger: Logger;
  private readonly fsync: boolean;
  private readonly fixedPort: number | undefined;
  private currentPort: number | undefined;
  private resolvedBinaries: ServerBinaries | undefined;

  constructor(options: LocalPostgresOptions) {
    this.dir = resolve(options.dir);
    this.dataDir = join(this.dir, "data");
    this.logFile = join(this.dir, "server.log");
    this.portFile = join(this.dir, "port");
    this.logger = options.logger ?? silentLogger("postgres");
    this.fsync = options.fsync ?? true;
    this.fixedPort = options.port;
  }

  /** The server binaries in use; resolved on first use, so `new` never fails for lack of them. */
  get binaries(): ServerBinaries {
    this.resolvedBinaries ??= findServerBinaries();
    return this.resolvedBinaries;
  }

  /** The port of the running (or last) server, if known. */
  get port(): number | undefined {
    return this.currentPort ?? this.readPidFile()?.port ?? this.readPortFile();
  }

  async start(): Promise<StartedPostgres> {
    const binaries = this.binaries;
    const runAs = this.prepareDirectory();
    // A data directory swap a killed restore left half done, before `data` is looked at (an empty
    // cluster would otherwise be created where the restored one belongs).
    finishDataDirSwap(this.dir);
    for (let attempt = 1; ; attempt++) {
      const running = await this.runningServer();
      if (running) {
        this.currentPort = running;
        this.logger.info({ port: running, dir: this.dir }, "reusing running PostgreSQL");
        return { host: LOOPBACK, port: running, reused: true };
      }
      const port = await this.choosePort();
      await this.ensureCluster(binaries, runAs);
      const opts = [`-p ${port}`, ...(this.fsync ? [] : ["-c fsync=off", "-c full_page_writes=off"])];
      const pgCtlArgs = [
        "start",
        "-w",
        "-t",
        "60",
        "-D",
        this.dataDir,
        "-l",
        this.logFile,
        "-o",
        opts.join(" "),
      ];
      const result = await run(binaries.pgCtl, pgCtlArgs, this.dir, runAs);
      if (result.code === 0) {
        this.currentPort = port;
        writeFileSync(this.portFile, `${port}\n`);
        this.logger.info({ port, dir: this.dir, binaries: binaries.binDir }, "started PostgreSQL");
        return { host: LOOPBACK, port, reused: false };
      }
      // Another process may have started it at the same moment (PostgreSQL's postmaster.pid lock
      // lets exactly one win), or the port was taken between choosing and binding: look again.
      const tail = this.logTail();
      const bindFailed = /could not bind|address already in use/i.test(tail);
      const raced = existsSync(join(this.dataDir, "postmaster.pid"));
      if (attempt < START_ATTEMPTS && (raced || (bindFailed && this.fixedPort === undefined))) continue;
      throw this.failed(`the server did not start: ${result.output.trim()}\n${tail}`);
    }
  }

  async stop(): Promise<void> {
    if (!(await this.isRunning())) return;
    const args = ["stop", "-w", "-t", "60", "-m", "fast", "-D", this.dataDir];
    const result = await run(this.binaries.pgCtl, args, this.dir, this.serverUser());
    if (result.code !== 0 && (await this.isRunning()))
      throw this.failed(`pg_ctl stop failed: ${result.output.trim()}`);
    this.logger.info({ dir: this.dir }, "stopped PostgreSQL");
  }

  /** Stops the server (if running) and starts it again, on the same port when it is still free. */
  async restart(): Promise<StartedPostgres> {
    await this.stop();
    return this.start();
  }

  /**
   * Makes the running server use `settings` (name → value as `SHOW` prints it, e.g. `archive_mode: "on"`)
   * from now on: ALTER SYSTEM, so they live in the cluster's postgresql.auto.conf and survive restarts by
   * anyone, then a reload, or a restart when a changed setting only takes effect at server start
   * (context `postmaster`, e.g. archive_mode, wal_level). Settings already in effect are left alone, so
   * calling it again is cheap and restarts nothing. A restart drops every open connection.
   */
  async configure(settings: Record<string, string>): Promise<{ changed: string[]; restarted: boolean }> {
    const changed = await this.withAdmin(async (client) => {
      const out: { name: string; needsRestart: boolean }[] = [];
      for (const [name, value] of Object.entries(settings)) {
        const found = await client.query<{ setting: string; context: string }>(
          "SELECT current_setting(name) AS setting, context FROM pg_settings WHERE name = $1",
          [name],
        );
        const row = found.rows[0];
        if (!row) throw this.failed(`unknown server setting ${name}`);
        if (sameSetting(row.setting, value)) continue;
        // The name is a known setting (checked above), so it is safe as an identifier.
        await client.query(`ALTER SYSTEM SET ${name} = ${pg.escapeLiteral(value)}`);
        out.push({ name, needsRestart: row.context === "postmaster" });
      }
      if (out.length > 0) await client.query("SELECT pg_reload_conf()");
      return out;
    });
    const restarted = changed.some((c) => c.needsRestart);
    if (restarted) await this.restart();
    if (changed.length > 0) {
      this.logger.info(
        { dir: this.dir, changed: changed.map((c) => c.name), restarted },
        "configured PostgreSQL",
      );
    }
    return { changed: changed.map((c) => c.name), restarted };
  }

  /** Whether a server process for this directory is alive (it may still be starting or stopping). */
  async isRunning(): Promise<boolean> {
    const pid = this.readPidFile()?.pid;
    return pid !== undefined && isAlive(pid);
  }

  connectionUrl(database: string): string {
    const port = this.port;
    if (port === undefined) throw this.failed("the server has not been started, so its port is unknown");
    return `postgresql://${SUPERUSER}@${LOOPBACK}:${port}/${encodeURIComponent(database)}`;
  }

  /** Creates the database unless it exists; true when this call created it. Safe when many race. */
  async ensureDatabase(name: string): Promise<boolean> {
    return this.withAdmin(async (client) => {
      for (let attempt = 0; ; attempt++) {
        const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
        if (found.rowCount) return false;
        try {
          await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
          return true;
        } catch (error) {
          const code = (error as { code?: string }).code;
          // duplicate_database, or the pg_database unique index when both passed the check at once
          if (code === "42P04" || code === "23505") return false;
          // object_in_use: template1 briefly busy (someone connected to it); try again shortly
          if (code === "55006" && attempt < 50) {
            await sleep(100);
            continue;
          }
          throw error;
        }
      }
    });
  }

  async dropDatabase(name: string): Promise<void> {
    await this.withAdmin((client) =>
      client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`),
    );
  }

  /** The databases nodes use: neither templates nor the `postgres` maintenance database. */
  async listDatabases(): Promise<string[]> {
    return this.withAdmin(async (client) => {
      const result = await client.query<{ datname: string }>(
        "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY datname",
      );
      return result.rows.map((r) => r.datname);
    });
  }

  private async withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({
      connectionString: this.connectionUrl("postgres"),
      application_name: "lockstep",
    });
    client.on("error", () => {
      // surfaces through the failing query instead
    });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => {});
    }
  }

  /** As root, the `postgres` OS user to run the server as (PostgreSQL refuses root); else undefined. */
  private serverUser(): RunAs | undefined {
    if (process.getuid?.() !== 0) return undefined;
    const user = postgresOsUser();
    if (!user) {
      throw this.failed(
        "running as root needs an OS user `postgres` to run the server as (`useradd --system postgres`)",
      );
    }
    return user;
  }

  private failed(reason: string): LockstepError {
    return new LockstepError("POSTGRES_FAILED", { dataDir: this.dataDir, logFile: this.logFile, reason });
  }

  private notWritable(reason: string): LockstepError {
    return new LockstepError("DATA_DIR_NOT_WRITABLE", { path: this.dir, reason });
  }

  private logTail(lines = 20): string {
    try {
      return readFileSync(this.logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }

  private readPortFile(): number | undefined {
    try {
      const port = Number.parseInt(readFileSync(this.portFile, "utf8"), 10);
      return Number.isInteger(port) && port > 0 ? port : undefined;
    } catch {
      return undefined;
    }
  }

  /** postmaster.pid: line 1 the pid, line 4 the port, line 8 the status ("ready" once it accepts connections). */
  private readPidFile(): { pid: number; port: number; status: string } | undefined {
    try {
      const lines = readFileSync(join(this.dataDir, "postmaster.pid"), "utf8").split("\n");
      const pid = Number.parseInt(lines[0] ?? "", 10);
      const port = Number.parseInt(lines[3] ?? "", 10);
      if (!Number.isInteger(pid) || pid <= 0) return undefined;
      return { pid, port, status: (lines[7] ?? "").trim() };
    } catch {
      return undefined;
    }
  }

  private async accepts(port: number): Promise<boolean> {
    const client = new pg.Client({
      host: LOOPBACK,
      port,
      user: SUPERUSER,
      database: "postgres",
      connectionTimeoutMillis: 2000,
    });
    client.on("error", () => {});
    try {
      await client.connect();
      await client.query("SELECT 1");
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => {});
    }
  }

  /** The port of a live server for this directory, waiting while it starts; undefined if none runs. */
  private async runningServer(): Promise<number | undefined> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const info = this.readPidFile();
      if (!info || !isAlive(info.pid)) return undefined;
      if (info.status === "ready" && (await this.accepts(info.port))) return info.port;
      if (Date.now() > deadline) {
        throw this.failed(
          `a server (pid ${info.pid}) runs for this directory but does not accept connections`,
        );
      }
      await sleep(200);
    }
  }

  private async choosePort(): Promise<number> {
    if (this.fixedPort !== undefined) {
      if (!(await portIsFree(this.fixedPort))) {
        throw new LockstepError("PORT_IN_USE", { port: this.fixedPort, node: "embedded PostgreSQL" });
      }
      return this.fixedPort;
    }
    const previous = this.readPortFile();
    if (previous !== undefined && (await portIsFree(previous))) return previous;
    if (previous !== undefined)
      this.logger.warn({ previous }, "PostgreSQL's previous port is taken: using another");
    return freePort();
  }

  /**
   * Creates the directory and checks it is ours. As root the server runs as `postgres`, so the
   * directory is handed to that user and its parents made traversable (search permission only).
   */
  private prepareDirectory(): RunAs | undefined {
    const runAs = this.serverUser();
    try {
      // Parents with default modes; the cluster dir itself private.
      mkdirSync(dirname(this.dir), { recursive: true });
      if (!existsSync(this.dir)) mkdirSync(this.dir, { mode: 0o700 });
    } catch (error) {
      throw this.notWritable((error as Error).message);
    }
    const owner = statSync(this.dir).uid;
    if (!runAs) {
      const me = process.getuid?.();
      if (me !== undefined && owner !== me)
        throw this.notWritable(`it is owned by uid ${owner}, not the current user (uid ${me})`);
      try {
        accessSync(this.dir, constants.W_OK | constants.X_OK);
      } catch {
        throw this.notWritable("the current user cannot write to it");
      }
      return undefined;
    }
    if (owner !== 0 && owner !== runAs.uid) {
      throw this.notWritable(
        `it is owned by uid ${owner}, neither root nor the postgres user (uid ${runAs.uid})`,
      );
    }
    // Whole tree only when the top is wrong (e.g. created or restored by root), to keep restarts cheap.
    if (owner !== runAs.uid) chownTree(this.dir, runAs);
    if (existsSync(this.dataDir) && statSync(this.dataDir).uid !== runAs.uid) chownTree(this.dataDir, runAs);
    if (existsSync(this.logFile) && statSync(this.logFile).uid !== runAs.uid)
      chownSync(this.logFile, runAs.uid, runAs.gid);
    for (const dir of makeTraversable(dirname(this.dir), runAs)) {
      this.logger.info({ dir }, "made a parent directory traversable for the postgres user");
    }
    return runAs;
  }

  /**
   * initdb into a private temporary directory, renamed into place when complete: a crash or a
   * failure leaves no half-made cluster, and of two racing processes exactly one rename wins.
   */
  private async ensureCluster(binaries: ServerBinaries, runAs: RunAs | undefined): Promise<void> {
    const versionFile = join(this.dataDir, "PG_VERSION");
    if (existsSync(versionFile)) {
      const major = readFileSync(versionFile, "utf8").trim();
      if (major !== String(POSTGRES_MAJOR)) {
        throw this.failed(
          `the cluster was created by PostgreSQL ${major}, but Lockstep runs PostgreSQL ${POSTGRES_MAJOR}`,
        );
      }
      return;
    }
    if (existsSync(this.dataDir)) {
      throw this.failed(`${this.dataDir} exists but holds no cluster (no PG_VERSION); move it away`);
    }
    for (const entry of readdirSync(this.dir)) {
      const pid = /^data\.initdb-(\d+)-/.exec(entry)?.[1];
      if (pid && !isAlive(Number(pid))) rmSync(join(this.dir, entry), { recursive: true, force: true });
    }
    // Unique per call: concurrent starts may come from one process as well as from several.
    const staging = join(this.dir, `data.initdb-${process.pid}-${randomBytes(4).toString("hex")}`);
    const args = ["-D", staging, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale"];
    if (!this.fsync) args.push("--no-sync");
    this.logger.info(
      { dir: this.dir, binaries: binaries.binDir, source: binaries.source },
      "creating PostgreSQL cluster",
    );
    const result = await run(binaries.initdb, args, this.dir, runAs);
    if (result.code !== 0) {
      rmSync(staging, { recursive: true, force: true });
      throw this.failed(`initdb failed: ${result.output.trim().split("\n").slice(-10).join("\n")}`);
    }
    // TCP on localhost only: no unix socket, so no socket path-length limit and no socket dir to own.
    appendFileSync(
      join(staging, "postgresql.conf"),
      `\n# Added by Lockstep\nlisten_addresses = '${LOOPBACK}'\nunix_socket_directories = ''\n`,
    );
    try {
      renameSync(staging, this.dataDir);
    } catch (error) {
      rmSync(staging, { recursive: true, force: true });
      // Lost the race to another process creating the same cluster: use theirs.
      if (!existsSync(versionFile))
        throw this.failed(`could not put the new cluster in place: ${(error as Error).message}`);
    }
  }
}
