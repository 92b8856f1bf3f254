import { spawn } from "node:child_process";
import { chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, relative } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { Queryable } from "../storage/db.ts";
import { type ClientTools, findClientTools } from "../storage/postgres-binaries.ts";
import { createStorageDb } from "../storage/storage-db.ts";
import { ARTIFACT_CIPHER, ArtifactCipherError, DEFAULT_CHUNK_BYTES } from "./artifact-cipher.ts";
import type {
  Artifact,
  BackupEngine,
  BackupRequest,
  BackupResult,
  RestoreOptions,
  RestoreTargetOf,
  VerifyTier,
} from "./backup-engine.ts";
import { BackupKeys, type LoadedBackupKey } from "./backup-keys.ts";
import { missingDataFiles } from "./directory-toc.ts";
import {
  authenticateFile,
  authenticationFailed,
  decryptArtifact,
  decryptingReader,
  encryptDirectory,
  encryptToFile,
  privateWriteStream,
  withScratch,
} from "./encrypted-artifact.ts";
import { directoryBytes, filesUnder, fsyncPath, hashDirectory, hashingStream } from "./file-hash.ts";
import type { BackupFormat, ManifestFile, PgDumpRecord } from "./manifest.ts";
import { PRIVATE_FILE_MODE, tightenTree } from "./owner-only.ts";
import { exitPromise, feed, isBrokenPipe, redact, StderrTail } from "./tool-process.ts";

const PG_DUMP_FORMAT = { tar: "t", custom: "c", directory: "d" } as const;
const PROGRESS_EVERY_BYTES = 16n * 1024n * 1024n;

/** The pg-dump engine's options (config `backup.format`, `backup.jobs`; `backup create --format/--jobs`). */
export interface PgDumpOptions {
  format: BackupFormat;
  /** Parallel pg_dump jobs (directory format only). */
  jobs: number;
  /** backup.encryption's keys: new artifacts are encrypted under the current one (none: plain). */
  keys?: BackupKeys;
  /**
   * Where plaintext goes when a tool needs a real file (the directory format, a parallel restore):
   * owner-only folders removed afterwards. Default: the OS temp dir; the CLI uses the data dir.
   */
  scratchDir?: string;
}

/** Where a node's artifact goes in its set: `<node>.tar`, `<node>.dump`, or the directory `<node>`. */
function artifactName(node: string, format: BackupFormat): string {
  if (format === "tar") return `${node}.tar`;
  if (format === "custom") return `${node}.dump`;
  return node;
}

/** One pg_dump run: the request, the artifact it writes, and its arguments (the snapshot among them). */
interface DumpRun {
  request: BackupRequest;
  target: string;
  args: string[];
  /** The key to encrypt under (backup.encryption), if any. */
  key: ReturnType<BackupKeys["current"]>;
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
      // Every tag of every file, nothing written: a changed, cut or swapped file fails here.
      name: "authentication",
      check: async (artifact) => {
        const key = this.keyFor(artifact);
        if (!key && this.keys.enabled)
          return "WARNING: stored in plain, though backup.encryption is configured (made before it was, or its manifest was rewritten)";
        if (!key) return "not encrypted";
        let plain = 0n;
        for (const path of await this.artifactFiles(artifact))
          plain += await authenticateFile(path, artifact.setDir, key);
        return `every chunk authenticates under backup key ${key.fingerprint} (${plain} bytes of plaintext)`;
      },
    },
    {
      name: "archive listing",
      check: async (artifact) => {
        const toc = await this.list(artifact).catch((error: Error) => {
          if (error instanceof LockstepError) throw error;
          throw new Error(`not a readable archive: ${error.message}`);
        });
        return `archive lists ${toc.length} entries`;
      },
    },
  ];
  private toolsCache: ClientTools | undefined;
  private readonly keys: BackupKeys;

  constructor(
    private readonly dumpOptions: PgDumpOptions,
    private readonly logger: Logger,
  ) {
    this.keys = dumpOptions.keys ?? new BackupKeys(undefined);
  }

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
    // Read before anything starts: a key file that cannot be used fails the run, never a plain set.
    const key = this.keys.current();
    const record: PgDumpRecord = {
      name: this.name,
      format,
      ...(format === "directory" ? { jobs: this.jobs() } : {}),
      ...(key
        ? {
            encryption: {
              cipher: ARTIFACT_CIPHER,
              keyFingerprint: key.fingerprint,
              chunkBytes: DEFAULT_CHUNK_BYTES,
            },
          }
        : {}),
    };
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
        key,
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
  private async dump({
    request,
    target,
    args,
    key,
  }: DumpRun): Promise<{ files: ManifestFile[]; bytes: bigint }> {
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
    const stdout = child.stdout as NodeJS.ReadableStream;
    let file: ManifestFile;
    try {
      if (key) {
        // Encrypted as it streams: plaintext never reaches the disk; the hash is the ciphertext's.
        file = await encryptToFile(stdout, target, request.setDir, key, progress);
      } else {
        const { transform, digest } = hashingStream(progress);
        // pipeline ends with the file's 'finish' only after close: fsyncPath below makes it durable.
        await pipeline(stdout, transform, privateWriteStream(target));
        await chmod(target, PRIVATE_FILE_MODE);
        await fsyncPath(target);
        file = { path: relative(request.setDir, target), bytes: written.toString(), sha256: digest() };
      }
    } catch (error) {
      child.kill("SIGTERM");
      await exited.catch(() => undefined);
      throw dumpFailed(request, `writing ${target}: ${(error as Error).message}`);
    }
    const { code, signal } = await exited;
    if (code !== 0) throw dumpFailed(request, `pg_dump exited ${code ?? signal}: ${stderr}`);
    request.onProgress?.(written);
    return { files: [file], bytes: written };
  }

  private async dumpDirectory(run: DumpRun): Promise<{ files: ManifestFile[]; bytes: bigint }> {
    const { request, target, key } = run;
    if (key) {
      // pg_dump writes the directory itself: into an owner-only scratch folder outside the
      // repository, each file then encrypted into the set; the plaintext is removed, also on failure.
      return withScratch(this.scratchDir(), async (scratch) => {
        const plain = join(scratch, "dump");
        await this.runDirectoryDump({ ...run, target: plain });
        request.onStep?.(
          `encrypting ${relative(request.setDir, target)} under backup key ${key.fingerprint}`,
        );
        const files = await encryptDirectory(plain, target, request.setDir, key);
        const bytes = files.reduce((sum, f) => sum + BigInt(f.bytes), 0n);
        request.onProgress?.(bytes);
        return { files, bytes };
      });
    }
    await this.runDirectoryDump(run);
    // pg_dump creates its files with its own modes (0644 under umask 022): owner-only, explicitly.
    await tightenTree(target);
    const files = await hashDirectory(target, request.setDir, { sync: true });
    const bytes = files.reduce((sum, f) => sum + BigInt(f.bytes), 0n);
    request.onProgress?.(bytes);
    return { files, bytes };
  }

  private async runDirectoryDump({ request, target, args }: DumpRun): Promise<void> {
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
  }

  async restore(
    artifact: Artifact<PgDumpRecord>,
    target: RestoreTargetOf<"database">,
    options: RestoreOptions = {},
  ): Promise<void> {
    const { format } = artifact.record;
    const jobs = format === "tar" ? 1 : Math.max(1, options.jobs ?? 1);
    const path = join(artifact.setDir, artifact.name);
    const key = this.keyFor(artifact);
    options.onStep?.(
      `pg_restore of ${artifact.name} (${format}, ${options.jobs ?? 1} job(s))${key ? `, decrypted under backup key ${key.fingerprint}` : ""}`,
    );
    const args = (input: string[]) => [
      `--dbname=${target.url}`,
      "--no-password",
      "--no-owner",
      "--no-privileges",
      "--exit-on-error",
      ...(jobs > 1 ? [`--jobs=${jobs}`] : []),
      ...(options.clean ? ["--clean", "--if-exists"] : []),
      ...(options.onProgress ? ["--verbose"] : []),
      ...input,
    ];
    if (!key) return this.pgRestore(args([path]), path, target, options);
    if (format === "directory" || jobs > 1) {
      // pg_restore reads a directory, and seeks in a parallel restore: the plaintext goes to an
      // owner-only scratch folder outside the repository, removed afterwards, also on failure.
      return withScratch(this.scratchDir(), async (scratch) => {
        const plain = join(scratch, "dump");
        await decryptArtifact(path, format === "directory", plain, artifact.setDir, key);
        await this.pgRestore(args([plain]), path, target, options);
      });
    }
    // One job reads stdin: only chunks whose tag verified reach pg_restore, nothing goes to disk.
    const input = decryptingReader(path, artifact.setDir, key);
    await this.pgRestore(args([`--format=${PG_DUMP_FORMAT[format]}`]), path, target, options, input);
  }

  /** Runs pg_restore to completion; `input` feeds its stdin (a decrypting stream). */
  private async pgRestore(
    args: string[],
    path: string,
    target: RestoreTargetOf<"database">,
    options: RestoreOptions,
    input?: Readable,
  ): Promise<void> {
    const stderr = new StderrTail();
    const child = spawn(this.tools.pgRestore, args, {
      stdio: [input ? "pipe" : "ignore", "ignore", "pipe"],
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
    const exited = exitPromise(child, stderr);
    const fed = input ? await feed(input, child) : null;
    if (fed && !isBrokenPipe(fed)) {
      // The artifact failed authentication (or could not be read): what pg_restore did is void.
      child.kill("SIGTERM");
      await exited.catch(() => undefined);
      throw fed instanceof ArtifactCipherError ? authenticationFailed(dirname(path), path, fed) : fed;
    }
    const { code, signal } = await exited;
    if (code !== 0) {
      throw new LockstepError("POSTGRES_FAILED", {
        dataDir: redact(target.url),
        reason: `pg_restore of ${path} exited ${code ?? signal}: ${stderr}`,
        logFile: "pg_restore's output above",
      });
    }
  }

  /** An artifact's key (null: plain); BACKUP_KEY_MISSING / _MISMATCH naming the fingerprint it needs. */
  private keyFor(artifact: Artifact<PgDumpRecord>): LoadedBackupKey | null {
    const encryption = artifact.record.encryption;
    if (!encryption) return null;
    return this.keys.require(encryption.keyFingerprint, basename(artifact.setDir), artifact.name);
  }

  private async artifactFiles(artifact: Artifact<PgDumpRecord>): Promise<string[]> {
    const path = join(artifact.setDir, artifact.name);
    return artifact.record.format === "directory" ? filesUnder(path) : [path];
  }

  private scratchDir(): string {
    return this.dumpOptions.scratchDir ?? join(tmpdir(), "lockstep-scratch");
  }

  /** `restore plan`: an encrypted artifact's key must be configured (BACKUP_KEY_MISSING / _MISMATCH). */
  async preflight(artifact: Artifact<PgDumpRecord>): Promise<string | null> {
    const key = this.keyFor(artifact);
    return key ? `encrypted under backup key ${key.fingerprint}, configured in ${key.source}` : null;
  }

  /**
   * The archive's table of contents (pg_restore --list): proves it is readable; throws when not.
   * An encrypted archive is listed from stdin (no plaintext on disk); a directory from its toc.dat
   * (decrypted into a scratch folder when encrypted), each table's data file then required.
   */
  private async list(artifact: Artifact<PgDumpRecord>): Promise<string[]> {
    const key = this.keyFor(artifact);
    const path = join(artifact.setDir, artifact.name);
    if (artifact.record.format !== "directory")
      return this.listFrom(path, key, artifact.setDir, artifact.record.format);
    const listing = key
      ? await withScratch(this.scratchDir(), async (scratch) => {
          await decryptArtifact(join(path, "toc.dat"), false, join(scratch, "toc.dat"), artifact.setDir, key);
          return this.listFrom(scratch, null, artifact.setDir);
        })
      : await this.listFrom(path, null, artifact.setDir);
    const missing = missingDataFiles(
      listing,
      (await filesUnder(path)).map((f) => relative(path, f)),
    );
    if (missing.length > 0)
      throw new Error(`its table of contents names data files it lacks: ${missing.join(", ")}`);
    return listing;
  }

  /** pg_restore --list of a path (plain), or of an encrypted archive of `format` fed to its stdin. */
  private async listFrom(
    path: string,
    key: LoadedBackupKey | null,
    setDir: string,
    format: BackupFormat = "directory",
  ): Promise<string[]> {
    const stderr = new StderrTail();
    const args = key ? ["--list", `--format=${PG_DUMP_FORMAT[format]}`] : ["--list", path];
    const child = spawn(this.tools.pgRestore, args, { stdio: [key ? "pipe" : "ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const exited = exitPromise(child, stderr);
    // pg_restore --list stops reading after the table of contents: a broken pipe is expected.
    const fed = key ? await feed(decryptingReader(path, setDir, key), child) : null;
    const { code, signal } = await exited;
    if (fed && !isBrokenPipe(fed)) throw fed;
    if (code !== 0) throw new Error(`pg_restore --list exited ${code ?? signal}: ${stderr}`);
    return out.split("\n").filter((l) => l && !l.startsWith(";"));
  }
}

function dumpFailed(request: BackupRequest, reason: string): LockstepError {
  return new LockstepError("BACKUP_FAILED", { node: request.node, reason });
}
