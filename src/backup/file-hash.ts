import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readdir, stat } from "node:fs/promises";
import { join, relative } from "node:path";
import { Transform } from "node:stream";
import type { ManifestFile } from "./manifest.ts";

/**
 * The one place that hashes backup files (docs/design.md §4.6): every engine's artifacts, `backup
 * verify` and restore's checksums check all hash the same way, streamed in 1 MiB reads so memory
 * stays flat whatever the file's size.
 */

export interface FileHash {
  bytes: bigint;
  sha256: string;
}

const READ_SIZE = 1 << 20;

/** SHA-256 and size of a file, streamed. */
export async function hashFile(path: string): Promise<FileHash> {
  const hash = createHash("sha256");
  let bytes = 0n;
  for await (const chunk of createReadStream(path, { highWaterMark: READ_SIZE })) {
    hash.update(chunk as Buffer);
    bytes += BigInt((chunk as Buffer).length);
  }
  return { bytes, sha256: hash.digest("hex") };
}

/**
 * A pass-through that hashes (and counts) what flows to a file being written, so that a stream is
 * hashed once as it is written instead of read back afterwards.
 */
export function hashingStream(onChunk: (bytes: number) => void): {
  transform: Transform;
  digest: () => string;
} {
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

/** Every regular file under a directory, sorted (stable manifests). */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out.sort();
}

/** Total size of the files under a directory (progress while a tool writes it). */
export async function directoryBytes(dir: string): Promise<bigint> {
  let total = 0n;
  for (const path of await filesUnder(dir)) total += BigInt((await stat(path)).size);
  return total;
}

/**
 * fsyncs a file or a directory (its entries): an artifact, and the set's folder, must be durable
 * before the manifest (written last) names them.
 */
export async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * The manifest entries of every file under `dir`, paths relative to `base` (the set's directory),
 * each hashed and, with `sync`, fsynced (a freshly written artifact).
 */
export async function hashDirectory(
  dir: string,
  base: string,
  options: { sync?: boolean } = {},
): Promise<ManifestFile[]> {
  const files: ManifestFile[] = [];
  for (const path of await filesUnder(dir)) {
    const h = await hashFile(path);
    if (options.sync) await fsyncPath(path);
    files.push({ path: relative(base, path), bytes: h.bytes.toString(), sha256: h.sha256 });
  }
  return files;
}

/** How a file differs from its manifest entry; each caller words it for its own output. */
export type FileCheck =
  | { ok: true }
  | { ok: false; problem: "missing" }
  | { ok: false; problem: "size"; bytes: bigint }
  | { ok: false; problem: "sha256"; sha256: string };

/** Checks one manifest file (relative to `base`): exists, its size, then its SHA-256 (only when the size matches). */
export async function checkFile(base: string, file: ManifestFile): Promise<FileCheck> {
  const path = join(base, file.path);
  let size: bigint;
  try {
    size = BigInt((await stat(path)).size);
  } catch {
    return { ok: false, problem: "missing" };
  }
  if (size !== BigInt(file.bytes)) return { ok: false, problem: "size", bytes: size };
  const { sha256 } = await hashFile(path);
  return sha256 === file.sha256 ? { ok: true } : { ok: false, problem: "sha256", sha256 };
}
