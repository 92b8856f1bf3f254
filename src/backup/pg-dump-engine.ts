import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { open, readdir, stat } from "node:fs/promises";
import { join, relative } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { LockstepError } from "../common/errors.ts";
import { type ClientTools, findClientTools } from "../storage/postgres-binaries.ts";
import type { Artifact, BackupEngine, DumpRequest, DumpResult, RestoreOptions } from "./backup-engine.ts";
import type { ManifestFile } from "./manifest.ts";

const PG_DUMP_FORMAT = { tar: "t", custom: "c", directory: "d" } as const;
const PROGRESS_EVERY_BYTES = 16n * 1024n * 1024n;

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

/** Hashes (and counts) what flows through, so a file is hashed as it is written, never buffered. */
function hashingCounter(onChunk: (bytes: number) => void): { transform: Transform; digest: () => string } {
  const hash = createHash("sha256");
  const transform = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      onChunk(chunk.length);
      done(null, chunk);
    },
  });
  return { transform, digest: () => hash.digest("hex") };
}

/** SHA-256 and size of a file, streamed. */
export async function hashFile(path: string): Promise<{ bytes: bigint; sha256: string }> {
  const hash = createHash("sha256");
  let bytes = 0n;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    bytes += BigInt((chunk as Buffer).length);
  }
  return { bytes, sha256: hash.digest("hex") };
}

/** Every regular file under a directory, sorted (stable manifests). */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out.sort();
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

/**
 * pg_dump / pg_restore of PostgreSQL 15 (docs/design.md §4.2). Archive formats are streamed from pg_dump's
 * stdout to the artifact through a SHA-256, so memory stays flat whatever the database size; the
 * directory format is written by pg_dump itself (in parallel with --jobs) and hashed file by file after.
 */
export class PgDumpEngine implements BackupEngine {
  readonly name = "pg_dump";
  private toolsCache: ClientTools | undefined;

  /** Resolved on first use, so that listing or expiring sets works without the client tools. */
  get tools(): ClientTools {
    this.toolsCache ??= findClientTools();
    return this.toolsCache;
  }

  async dump(request: DumpRequest): Promise<DumpResult> {
    const target = join(request.setDir, request.artifact);
    const args = [
      `--format=${PG_DUMP_FORMAT[request.format]}`,
      "--no-password",
      ...(request.snapshot ? [`--snapshot=${request.snapshot}`] : []),
      `--dbname=${request.connectionUrl}`,
    ];
    let written = 0n;
    let reported = 0n;
    const progress = (n: number) => {
      written += BigInt(n);
      if (written - reported >= PROGRESS_EVERY_BYTES) {
        reported = written;
        request.onProgress?.(written);
      }
    };
    if (request.format === "directory") {
      return this.dumpDirectory(request, target, args);
    }
    const stderr = new StderrTail();
    const child = spawn(this.tools.pgDump, args, {
      stdio: ["ignore", "pipe", "pipe"],
      ...(request.signal ? { signal: request.signal } : {}),
    });
    const exited = exitPromise(child, stderr);
    const { transform, digest } = hashingCounter(progress);
    const out = createWriteStream(target, { flags: "wx" });
    try {
      // pipeline ends with the file's 'finish' only after close: flush() below makes it durable.
      await pipeline(child.stdout as NodeJS.ReadableStream, transform, out);
    } catch (error) {
      child.kill("SIGTERM");
      await exited.catch(() => undefined);
      throw dumpFailed(request, `writing ${target}: ${(error as Error).message}`);
    }
    const { code, signal } = await exited;
    if (code !== 0) throw dumpFailed(request, `pg_dump exited ${code ?? signal}: ${stderr}`);
    await fsyncFile(target);
    request.onProgress?.(written);
    return {
      files: [{ path: relative(request.setDir, target), bytes: written.toString(), sha256: digest() }],
      bytes: written,
    };
  }

  private async dumpDirectory(request: DumpRequest, target: string, args: string[]): Promise<DumpResult> {
    const stderr = new StderrTail();
    const jobs = Math.max(1, request.jobs ?? 1);
    const child = spawn(this.tools.pgDump, [...args, `--jobs=${jobs}`, `--file=${target}`], {
      stdio: ["ignore", "ignore", "pipe"],
      ...(request.signal ? { signal: request.signal } : {}),
    });
    // Progress: the directory's size while pg_dump writes it.
    const timer = setInterval(() => {
      void dirBytes(target)
        .then((b) => request.onProgress?.(b))
        .catch(() => undefined);
    }, 2000);
    try {
      const { code, signal } = await exitPromise(child, stderr);
      if (code !== 0) throw dumpFailed(request, `pg_dump exited ${code ?? signal}: ${stderr}`);
    } finally {
      clearInterval(timer);
    }
    const files: ManifestFile[] = [];
    let bytes = 0n;
    for (const path of await filesUnder(target)) {
      const h = await hashFile(path);
      await fsyncFile(path);
      files.push({ path: relative(request.setDir, path), bytes: h.bytes.toString(), sha256: h.sha256 });
      bytes += h.bytes;
    }
    request.onProgress?.(bytes);
    return { files, bytes };
  }

  async restore(artifact: Artifact, targetUrl: string, options: RestoreOptions = {}): Promise<void> {
    const jobs = artifact.format === "tar" ? 1 : Math.max(1, options.jobs ?? 1);
    const args = [
      `--dbname=${targetUrl}`,
      "--no-password",
      "--no-owner",
      "--no-privileges",
      "--exit-on-error",
      ...(jobs > 1 ? [`--jobs=${jobs}`] : []),
      ...(options.clean ? ["--clean", "--if-exists"] : []),
      ...(options.onProgress ? ["--verbose"] : []),
      artifact.path,
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
        dataDir: redact(targetUrl),
        reason: `pg_restore of ${artifact.path} exited ${code ?? signal}: ${stderr}`,
        logFile: "pg_restore's output above",
      });
    }
  }

  async list(artifact: Artifact): Promise<string[]> {
    const stderr = new StderrTail();
    const child = spawn(this.tools.pgRestore, ["--list", artifact.path], {
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

async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function dirBytes(dir: string): Promise<bigint> {
  let total = 0n;
  for (const path of await filesUnder(dir)) total += BigInt((await stat(path)).size);
  return total;
}

function dumpFailed(request: DumpRequest, reason: string): LockstepError {
  return new LockstepError("BACKUP_FAILED", { node: request.artifact, reason });
}
