import { createReadStream, createWriteStream } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { basename, dirname, join, relative } from "node:path";
import { type Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { LockstepError } from "../common/errors.ts";
import { isAlive } from "../storage/server-process.ts";
import { ArtifactCipherError, type BackupKey, decryptStream, encryptStream } from "./artifact-cipher.ts";
import { filesUnder, fsyncPath, hashingStream } from "./file-hash.ts";
import type { ManifestFile } from "./manifest.ts";
import { mkdirPrivate, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from "./owner-only.ts";

/**
 * Files of the pg-dump engine's artifacts encrypted and decrypted (artifact-cipher.ts), streamed:
 * the manifest's SHA-256 is that of the file as stored (the ciphertext), hashed as it is written.
 * Plaintext only ever goes to a child's stdin, or to an owner-only scratch folder outside the
 * repository that is removed afterwards, also on failure.
 */

/** What binds a file to its place: `<set id>/<path in the set>` (a file moved elsewhere does not open). */
export function artifactContext(setDir: string, path: string): string {
  return `${basename(setDir)}/${relative(setDir, path)}`;
}

/** An owner-only file to write to (0600 whatever the umask; `wx`: never over another). */
export function privateWriteStream(path: string) {
  return createWriteStream(path, { flags: "wx", mode: PRIVATE_FILE_MODE });
}

/** Decryption failures as the set's error: which file, and why it does not authenticate. */
export function authenticationFailed(setDir: string, path: string, error: unknown): LockstepError {
  return new LockstepError(
    "BACKUP_AUTHENTICATION_FAILED",
    { set: basename(setDir), file: relative(setDir, path), details: (error as Error).message },
    { cause: error },
  );
}

/**
 * Encrypts `source` into `target` (a new owner-only file), hashing the ciphertext as it is written,
 * then fsyncs it. `onBytes` sees the stored bytes (progress).
 */
export async function encryptToFile(
  source: Readable | NodeJS.ReadableStream,
  target: string,
  setDir: string,
  key: BackupKey,
  onBytes: (n: number) => void = () => {},
): Promise<ManifestFile> {
  let bytes = 0n;
  const { transform, digest } = hashingStream((n) => {
    bytes += BigInt(n);
    onBytes(n);
  });
  await pipeline(
    source,
    encryptStream(key, artifactContext(setDir, target)),
    transform,
    privateWriteStream(target),
  );
  await chmod(target, PRIVATE_FILE_MODE);
  await fsyncPath(target);
  return { path: relative(setDir, target), bytes: bytes.toString(), sha256: digest() };
}

/** Encrypts every file of a plaintext directory (pg_dump's directory format) into `targetDir` in the set. */
export async function encryptDirectory(
  plainDir: string,
  targetDir: string,
  setDir: string,
  key: BackupKey,
): Promise<ManifestFile[]> {
  await mkdirPrivate(targetDir);
  const files: ManifestFile[] = [];
  for (const path of await filesUnder(plainDir)) {
    const target = join(targetDir, relative(plainDir, path));
    await mkdirPrivate(dirname(target));
    files.push(await encryptToFile(createReadStream(path), target, setDir, key));
  }
  await fsyncPath(targetDir);
  return files;
}

/** A stream of the file's plaintext, every chunk authenticated before it is emitted. */
export function decryptingReader(path: string, setDir: string, key: BackupKey): Readable {
  const decrypt = decryptStream(key, artifactContext(setDir, path));
  // The reader reaches whoever consumes `decrypt` as its error; the file is closed either way.
  pipeline(createReadStream(path), decrypt).catch(() => {});
  return decrypt;
}

/** Checks every tag of an encrypted file, writing nothing; BACKUP_AUTHENTICATION_FAILED when one fails. */
export async function authenticateFile(path: string, setDir: string, key: BackupKey): Promise<bigint> {
  let plain = 0n;
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      plain += BigInt(chunk.length);
      done();
    },
  });
  try {
    await pipeline(createReadStream(path), decryptStream(key, artifactContext(setDir, path)), sink);
  } catch (error) {
    if (error instanceof ArtifactCipherError) throw authenticationFailed(setDir, path, error);
    throw error;
  }
  return plain;
}

/** Decrypts an artifact (a file, or a directory's files) into `target` under an owner-only scratch folder. */
export async function decryptArtifact(
  artifactPath: string,
  directory: boolean,
  target: string,
  setDir: string,
  key: BackupKey,
): Promise<void> {
  const sources = directory ? await filesUnder(artifactPath) : [artifactPath];
  for (const source of sources) {
    const out = directory ? join(target, relative(artifactPath, source)) : target;
    await mkdirPrivate(dirname(out));
    try {
      await pipeline(
        createReadStream(source),
        decryptStream(key, artifactContext(setDir, source)),
        privateWriteStream(out),
      );
    } catch (error) {
      if (error instanceof ArtifactCipherError) throw authenticationFailed(setDir, source, error);
      throw error;
    }
  }
}

/**
 * Runs `fn` with a fresh owner-only folder under `root` (created 0700 if missing), removed
 * afterwards whatever happens: where plaintext goes when a tool needs a real file.
 */
export async function withScratch<T>(root: string, fn: (dir: string) => Promise<T>): Promise<T> {
  await mkdir(root, { recursive: true, mode: PRIVATE_DIR_MODE });
  await chmod(root, PRIVATE_DIR_MODE);
  // A killed run's plaintext: its process is gone (the pid is in the folder's name).
  for (const entry of await readdir(root)) {
    const pid = /^backup-(\d+)-/.exec(entry)?.[1];
    if (pid && !isAlive(Number(pid))) await rm(join(root, entry), { recursive: true, force: true });
  }
  const dir = await mkdtemp(join(root, `backup-${process.pid}-`));
  await chmod(dir, PRIVATE_DIR_MODE);
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
