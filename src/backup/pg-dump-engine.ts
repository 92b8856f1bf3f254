import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { join, relative } from "node:path";
import { pipeline } from "node:stream/promises";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { Queryable } from "../storage/db.ts";
import { type ClientTools, findClientTools } from "../storage/postgres-binaries.ts";
import { createStorageDb } from "../storage/storage-db.ts";
import type {
  Artifact,
  BackupEngine,
  BackupRequest,
  BackupResult,
  RestoreOptions,
  RestoreTargetOf,
  VerifyTier,
} from "./backup-engine.ts";
import { directoryBytes, fsyncPath, hashDirectory, hashingStream } from "./file-hash.ts";
import type { BackupFormat, ManifestFile, PgDumpRecord } from "./manifest.ts";

const PG_DUMP_FORMAT = { tar: "t", custom: "c", directory: "d" } as const;
const PROGRESS_EVERY_BYTES = 16n * 1024n * 1024n;

/** The pg-dump engine's options (config `backup.format`, `backup.jobs`; `backup create --format/--jobs`). */
export interface PgDumpOptions {
  format: BackupFormat;
  /** Parallel pg_dump jobs (directory format only). */
  jobs: number;
}

/** Where a node's artifact goes in its set: `<node>.tar`, `<node>.dump`, or the directory `<node>`. */
function artifactName(node: string, format: BackupFormat): string {
  if (format === "tar") return `${node}.tar`;
  if (format === "custom") return `${node}.dump`;
  return node;
}

/** The tail of a child's stderr, for error messages (never its whole output in memory). */
class StderrTail {
  private text = "";
  push(chunk: Buffer | string): void {
    this.text = (this.text + chunk.toString()).slice(-4000);
  }
  toString(): string {
    return this.text.trim();
  }
}

function exitPromise(
  child: ReturnType<typeof spawn>,
  stderr: StderrTail,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  child.stderr?.on("data", (d: Buffer) => stderr.push(d));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal }));
  });
}

/** Keeps a password out of what we print: postgres://user:secret@… → postgres://user@…. */
function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1@");
}

/** One pg_dump run: the request, the artifact it writes, and its arguments (the snapshot among them). */
interface DumpRun {
  request: BackupRequest;
  target: string;
  args: string[];
}

/**
 * pg_dump / pg_restore of PostgreSQL 15 (docs/design.md §4.2), the logical engine: one database per
 * artifact, restored into an empty database. Consistency: a REPEATABLE READ transaction on a
 * dedicated session exports its snapshot, the node's position is read in it, and pg_dump --snapshot
 * runs while it stays open. Archive formats are streamed from pg_dump's stdout to the artifact
 * through a SHA-256, so memory stays flat whatever the database size; the directory format is
 * written by pg_dump itself (in parallel with --jobs) and hashed file by file after.
 */
export class PgDumpEngine implements BackupEngine<PgDumpRecord, "database"> {
  readonly name = "pg-dump";
  readonly restoresInto = "database";
  readonly verifyTiers: readonly VerifyTier<PgDumpRecord>[] = [
    {
      name: "archive listing",
      check: async (artifact) => {
        const toc = await this.list(artifact).catch((error: Error) => {
          throw new Error(`not a readable archive: ${error.message}`);
        });
        return `archive lists ${toc.length} entries`;
      },
    },
  ];
  private toolsCache: ClientTools | undefined;

  constructor(
    private readonly dumpOptions: PgDumpOptions,
    private readonly logger: Logger,
  ) {}

  /** Resolved on first use, so that listing or expiring sets works without the client tools. */
  get tools(): ClientTools {
    this.toolsCache ??= findClientTools();
    return this.toolsCache;
  }

  async backup<T>(
    request: BackupRequest,
    atConsistentPoint: (q: Queryable) => Promise<T>,
  ): Promise<BackupResult<PgDumpRecord, T>> {
    const { format } = this.dumpOptions;
    const record: PgDumpRecord =
      format === "directory" ? { name: this.name, format, jobs: this.jobs() } : { name: this.name, format };
    const artifact = artifactName(request.node, format);
    request.onStep?.(`dumping ${request.source} (${format})`);
    const db = createStorageDb({
      connectionString: request.connectionUrl,
      applicationName: `lockstep-backup-${request.node}`,
      max: 1,
      logger: this.logger,
    });
    const session = await db.session();
    try {
      await session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      const { snapshot } = await session.one<{ snapshot: string }>("SELECT pg_export_snapshot() AS snapshot");
      const consistent = await atConsistentPoint(session);
      const run: DumpRun = {
        request,
        target: join(request.setDir, artifact),
        args: [
          `--format=${PG_DUMP_FORMAT[format]}`,
          "--no-password",
          `--snapshot=${snapshot}`,
          `--dbname=${request.connectionUrl}`,
        ],
      };
      const { files, bytes } = format === "directory" ? await this.dumpDirectory(run) : await this.dump(run);
      await session.execute("COMMIT");
      return { record, artifact, files, bytes, consistent };
    } finally {
      session.release(true);
      await db.close();
    }
  }

  private jobs(): number {
    return Math.max(1, this.dumpOptions.jobs);
  }

  /** tar and custom: pg_dump's stdout through a SHA-256 into the artifact file. */
  private async dump({ request, target, args }: DumpRun): Promise<{ files: ManifestFile[]; bytes: bigint }> {
    let written = 0n;
    let reported = 0n;
    const progress = (n: number) => {
      written += BigInt(n);
      if (written - reported >= PROGRESS_EVERY_BYTES) {
        reported = written;
        request.onProgress?.(written);
      }
    };
    const stderr = new StderrTail();
    const child = spawn(this.tools.pgDump, args, {
      stdio: ["ignore", "pipe", "pipe"],
      ...(request.signal ? { signal: request.signal } : {}),
    });
    const exited = exitPromise(child, stderr);
    const { transform, digest } = hashingStream(progress);
    const out = createWriteStream(target, { flags: "wx" });
    try {
      // pipeline ends with the file's 'finish' only after close: fsyncPath below makes it durable.
      await pipeline(child.stdout as NodeJS.ReadableStream, transform, out);
    } catch (error) {
      child.kill("SIGTERM");
      await exited.catch(() => undefined);
      throw dumpFailed(request, `writing ${target}: ${(error as Error).message}`);
    }
    const { code, signal } = await exited;
    if (code !== 0) throw dumpFailed(request, `pg_dump exited ${code ?? signal}: ${stderr}`);
    await fsyncPath(target);
    request.onProgress?.(written);
    return {
      files: [{ path: relative(request.setDir, target), bytes: written.toString(), sha256: digest() }],
      bytes: written,
    };
  }

  private async dumpDirectory({
    request,
    target,
    args,
  }: DumpRun): Promise<{ files: ManifestFile[]; bytes: bigint }> {
    const stderr = new StderrTail();
    const child = spawn(this.tools.pgDump, [...args, `--jobs=${this.jobs()}`, `--file=${target}`], {
      stdio: ["ignore", "ignore", "pipe"],
      ...(request.signal ? { signal: request.signal } : {}),
    });
    // Progress: the directory's size while pg_dump writes it.
    const timer = setInterval(() => {
      void directoryBytes(target)
        .then((b) => request.onProgress?.(b))
        .catch(() => undefined);
    }, 2000);
    try {
      const { code, signal } = await exitPromise(child, stderr);
      if (code !== 0) throw dumpFailed(request, `pg_dump exited ${code ?? signal}: ${stderr}`);
    } finally {
      clearInterval(timer);
    }
    const files = await hashDirectory(target, request.setDir, { sync: true });
    const bytes = files.reduce((sum, f) => sum + BigInt(f.bytes), 0n);
    request.onProgress?.(bytes);
    return { files, bytes };
  }

  async restore(
    artifact: Artifact<PgDumpRecord>,
    target: RestoreTargetOf<"database">,
    options: RestoreOptions = {},
  ): Promise<void> {
    const { format } = artifact.record;
    const jobs = format === "tar" ? 1 : Math.max(1, options.jobs ?? 1);
    const path = join(artifact.setDir, artifact.name);
    options.onStep?.(`pg_restore of ${artifact.name} (${format}, ${options.jobs ?? 1} job(s))`);
    const args = [
      `--dbname=${target.url}`,
      "--no-password",
      "--no-owner",
      "--no-privileges",
      "--exit-on-error",
      ...(jobs > 1 ? [`--jobs=${jobs}`] : []),
      ...(options.clean ? ["--clean", "--if-exists"] : []),
      ...(options.onProgress ? ["--verbose"] : []),
      path,
    ];
    const stderr = new StderrTail();
    const child = spawn(this.tools.pgRestore, args, {
      stdio: ["ignore", "ignore", "pipe"],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    if (options.onProgress) {
      let partial = "";
      child.stderr?.on("data", (d: Buffer) => {
        const lines = (partial + d.toString()).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) if (line) options.onProgress?.(line);
      });
    }
    const { code, signal } = await exitPromise(child, stderr);
    if (code !== 0) {
      throw new LockstepError("POSTGRES_FAILED", {
        dataDir: redact(target.url),
        reason: `pg_restore of ${path} exited ${code ?? signal}: ${stderr}`,
        logFile: "pg_restore's output above",
      });
    }
  }

  /** The archive's table of contents (pg_restore --list): proves it is readable; throws when not. */
  private async list(artifact: Artifact<PgDumpRecord>): Promise<string[]> {
    const stderr = new StderrTail();
    const child = spawn(this.tools.pgRestore, ["--list", join(artifact.setDir, artifact.name)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const { code, signal } = await exitPromise(child, stderr);
    if (code !== 0) throw new Error(`pg_restore --list exited ${code ?? signal}: ${stderr}`);
    return out.split("\n").filter((l) => l && !l.startsWith(";"));
  }
}

function dumpFailed(request: BackupRequest, reason: string): LockstepError {
  return new LockstepError("BACKUP_FAILED", { node: request.node, reason });
}
