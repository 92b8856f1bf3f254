import { randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { chmod, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { LockstepError } from "../common/errors.ts";
import { type Logger, silentLogger } from "../common/logging.ts";
import { isAlive } from "../storage/server-process.ts";
import type { Artifact } from "./backup-engine.ts";
import { fsyncPath } from "./file-hash.ts";
import {
  MANIFEST_VERSION,
  type Manifest,
  manifestChecksum,
  manifestSchema,
  type NodeBackup,
  nodeEngine,
  sealManifest,
  type UnsignedManifest,
} from "./manifest.ts";
import { manifestContradiction } from "./manifest-contradictions.ts";
import { looseModes, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, tightenTree } from "./owner-only.ts";
import { isRepoFolder } from "./pgbackrest/pgbackrest-repo.ts";

export const MANIFEST_FILE = "manifest.json";
export const VERIFICATION_FILE = "verification.json";
/** Marks a set being written: who writes it, so a later run can tell a crashed writer from a live one. */
const IN_PROGRESS_FILE = "in-progress.json";
const SET_ID = /^\d{8}T\d{6}Z-[0-9a-z]+$/;
/** `in-use-<pid>-<random>.json`: a process reading the set (markInUse). */
const IN_USE_PREFIX = "in-use-";

/** A process that reads a set and must not lose it meanwhile (restore apply). */
export interface InUseMarker {
  pid: number;
  host: string;
  purpose: string;
  since: string;
}

/** The last verification of a set (written beside the manifest; the manifest stays immutable). */
export interface Verification {
  set: string;
  verifiedAt: string;
  /** checksums: sizes + SHA-256 (+ pg_restore --list); drill: also restored and checked. */
  level: "checksums" | "drill";
  ok: boolean;
  /** What failed, per node/file, when not ok. */
  problems: string[];
  durationMs: number;
}

export interface SetSummary {
  id: string;
  manifest: Manifest;
  verification: Verification | null;
  /**
   * Retention's quick look at the files (backup-retention.ts `withDamage`): the first file missing
   * or of another size than the manifest says; absent when not looked at or whole.
   */
  damaged?: string;
  /** Retention's look at who reads the set now (BackupRepository.inUse): kept while one does. */
  inUse?: string;
}

/** `20261127T065012Z-3f9a1c`: sortable by time, unique by the random suffix. */
export function newSetId(now: Date = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  return `${stamp}-${randomBytes(3).toString("hex")}`;
}

/**
 * Writes a file so that readers see the old content or the new, never a part: temp, fsync, rename,
 * fsync dir. Owner-only (0600, set on the handle whatever the umask): what it writes is a backup's.
 */
export async function writeFileAtomic(path: string, content: string): Promise<void> {
  const dir = resolve(path, "..");
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const handle = await open(temp, "w", PRIVATE_FILE_MODE);
  try {
    await handle.chmod(PRIVATE_FILE_MODE);
    await handle.writeFile(content, "utf8");
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, path);
  await fsyncPath(dir);
}

/**
 * A backup repository: a directory with one folder per set. A folder is a backup only once its
 * manifest exists (written last, atomically); anything else is a set being written or the
 * remains of a crashed run, never listed, and removed by `cleanIncomplete` once its writer is gone.
 */
export class BackupRepository {
  readonly dir: string;
  private readonly logger: Logger;

  constructor(dir: string, logger?: Logger) {
    this.dir = resolve(dir);
    this.logger = logger ?? silentLogger("backup");
  }

  setDir(setId: string): string {
    if (!SET_ID.test(setId)) {
      throw new LockstepError("BACKUP_NOT_FOUND", { set: setId, repository: this.dir });
    }
    return join(this.dir, setId);
  }

  /** A node's artifact in a set, as its engine reads it (verify, drill, restore). */
  artifact(setId: string, node: NodeBackup): Artifact {
    return { setDir: this.setDir(setId), name: node.artifact, record: nodeEngine(node) };
  }

  /** Complete sets (with a manifest that parses and matches its checksum), newest first. */
  async listSets(): Promise<SetSummary[]> {
    const ids = await this.setIds();
    const sets: SetSummary[] = [];
    for (const id of ids) {
      if (!existsSync(join(this.dir, id, MANIFEST_FILE))) continue;
      try {
        sets.push({
          id,
          manifest: await this.readManifest(id),
          verification: await this.readVerification(id),
        });
      } catch (error) {
        // A manifest that does not verify is listed nowhere: it cannot be trusted to restore.
        this.logger.warn({ set: id, err: error }, "skipping backup set with an invalid manifest");
      }
    }
    return sets.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  }

  /** Sets whose manifest exists but fails to parse or verify (for `backup list` to warn about). */
  async invalidSets(): Promise<{ id: string; reason: string }[]> {
    const bad: { id: string; reason: string }[] = [];
    for (const id of await this.setIds()) {
      if (!existsSync(join(this.dir, id, MANIFEST_FILE))) continue;
      try {
        await this.readManifest(id);
      } catch (error) {
        bad.push({ id, reason: (error as Error).message });
      }
    }
    return bad;
  }

  /** The manifest of a complete set; BACKUP_NOT_FOUND without one, BACKUP_CORRUPTED when it does not verify. */
  async readManifest(setId: string): Promise<Manifest> {
    const path = join(this.setDir(setId), MANIFEST_FILE);
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch {
      throw new LockstepError("BACKUP_NOT_FOUND", { set: setId, repository: this.dir });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw corrupted(setId, `${MANIFEST_FILE} is not JSON: ${(error as Error).message}`);
    }
    const version = (parsed as { manifestVersion?: unknown } | null)?.manifestVersion;
    if (typeof version === "number" && version > MANIFEST_VERSION) {
      // Not damage: a newer build wrote it. Said apart, so the operator upgrades rather than discards it.
      throw new LockstepError("BACKUP_VERSION_UNSUPPORTED", {
        set: setId,
        version,
        supported: MANIFEST_VERSION,
        lockstepVersion: String((parsed as { lockstepVersion?: unknown }).lockstepVersion ?? "?"),
      });
    }
    const result = manifestSchema.safeParse(parsed);
    if (!result.success) {
      throw corrupted(setId, `${MANIFEST_FILE} is invalid: ${result.error.issues[0]?.message ?? "?"}`);
    }
    const manifest = result.data;
    const expected = manifestChecksum(manifest);
    if (expected !== manifest.checksum) {
      throw corrupted(
        setId,
        `${MANIFEST_FILE} checksum mismatch (recorded ${manifest.checksum.slice(0, 12)}, computed ${expected.slice(0, 12)})`,
      );
    }
    if (manifest.id !== setId) throw corrupted(setId, `${MANIFEST_FILE} names set ${manifest.id}`);
    const contradiction = manifestContradiction(manifest);
    if (contradiction) throw corrupted(setId, `${MANIFEST_FILE} contradicts itself: ${contradiction}`);
    return manifest;
  }

  /**
   * Starts a new set: cleans up what crashed runs left, then creates the folder with an
   * in-progress marker naming this process.
   */
  async beginSet(now: Date = new Date()): Promise<string> {
    // A new repository: 0700 whatever the umask. An existing one is tightened, its root keeping
    // the search bit pgBackRest's user was given (tighten).
    if (await mkdir(this.dir, { recursive: true, mode: PRIVATE_DIR_MODE }))
      await chmod(this.dir, PRIVATE_DIR_MODE);
    await this.tighten();
    await this.cleanIncomplete();
    const id = newSetId(now);
    const dir = this.setDir(id);
    await mkdir(dir, { mode: PRIVATE_DIR_MODE });
    await chmod(dir, PRIVATE_DIR_MODE);
    const marker = join(dir, IN_PROGRESS_FILE);
    await writeFile(
      marker,
      JSON.stringify({ pid: process.pid, host: hostname(), startedAt: now.toISOString() }),
      { mode: PRIVATE_FILE_MODE },
    );
    await chmod(marker, PRIVATE_FILE_MODE);
    await fsyncPath(this.dir);
    return id;
  }

  /** Completes a set: seals the manifest and writes it last, atomically. Returns the sealed manifest. */
  async completeSet(manifest: UnsignedManifest): Promise<Manifest> {
    const sealed = sealManifest(manifest);
    const dir = this.setDir(manifest.id);
    // Whatever an engine wrote into the set (pgbackrest's descriptors, with their tool's modes).
    await tightenTree(dir);
    await fsyncPath(dir);
    await writeFileAtomic(join(dir, MANIFEST_FILE), `${JSON.stringify(sealed, null, 2)}\n`);
    await rm(join(dir, IN_PROGRESS_FILE), { force: true });
    return sealed;
  }

  /**
   * Makes an existing repository owner-only (docs/backup.md "Who can read a backup"): every
   * directory 0700 and file 0600 of Lockstep's, pgBackRest's folder left to its engine, the root
   * keeping search bits when that folder exists (pgBackRest's user reaches it through the root).
   * Every write (beginSet) runs it; returns what it changed, each also logged.
   */
  async tighten(): Promise<string[]> {
    const changed = await tightenTree(this.dir, this.treeOptions());
    for (const path of changed) this.logger.warn({ path }, "made backup repository path owner-only");
    return changed;
  }

  /** Paths in the repository that others than its owner can access (`backup verify` warns of them). */
  async loosePaths(): Promise<string[]> {
    return looseModes(this.dir, this.treeOptions());
  }

  private treeOptions() {
    // pgBackRest's own repositories inside this one: `pgbackrest`, and `pgbackrest-<key fingerprint>`
    // with backup.encryption (pgbackrest/pgbackrest-repo.ts).
    let pgbackrest: string[] = [];
    try {
      pgbackrest = readdirSync(this.dir).filter(isRepoFolder);
    } catch {
      // no repository yet
    }
    return { skip: pgbackrest, rootSearch: pgbackrest.length > 0 };
  }

  /** Gives up a set being written (e.g. a dump failed): removes its folder. */
  async abandonSet(setId: string): Promise<void> {
    await rm(this.setDir(setId), { recursive: true, force: true });
  }

  /**
   * Removes folders without a manifest whose writer is gone (crashed or killed); a folder whose
   * writer still runs on this host is left alone. Returns the removed ids.
   */
  async cleanIncomplete(): Promise<string[]> {
    const removed: string[] = [];
    for (const id of await this.setIds()) {
      const dir = join(this.dir, id);
      if (existsSync(join(dir, MANIFEST_FILE))) continue;
      const writer = await readFile(join(dir, IN_PROGRESS_FILE), "utf8")
        .then((t) => JSON.parse(t) as { pid: number; host: string })
        .catch(() => undefined);
      if (writer && writer.host === hostname() && writer.pid !== process.pid && isAlive(writer.pid)) continue;
      await rm(dir, { recursive: true, force: true });
      removed.push(id);
      this.logger.warn(
        { set: id, dir },
        "removed incomplete backup set (no manifest: its run did not finish)",
      );
    }
    return removed;
  }

  /** Folders without a manifest: sets being written (after cleanIncomplete, by live writers only). */
  async inProgress(): Promise<string[]> {
    const ids: string[] = [];
    for (const id of await this.setIds()) if (!existsSync(join(this.dir, id, MANIFEST_FILE))) ids.push(id);
    return ids;
  }

  async readVerification(setId: string): Promise<Verification | null> {
    try {
      return JSON.parse(await readFile(join(this.setDir(setId), VERIFICATION_FILE), "utf8")) as Verification;
    } catch {
      return null;
    }
  }

  async writeVerification(verification: Verification): Promise<void> {
    await writeFileAtomic(
      join(this.setDir(verification.set), VERIFICATION_FILE),
      `${JSON.stringify(verification, null, 2)}\n`,
    );
  }

  /**
   * Marks a set as read by this process (`restore apply`) until the returned function runs: while
   * its process lives, `backup expire` keeps the set (inUse). *Why:* a scheduled expire during a
   * restore of an older set would delete the artifacts of the nodes not restored yet, leaving the
   * network restored half from the set and half not. A marker of a dead process counts for nothing.
   */
  async markInUse(setId: string, purpose: string): Promise<() => Promise<void>> {
    const path = join(
      this.setDir(setId),
      `${IN_USE_PREFIX}${process.pid}-${randomBytes(3).toString("hex")}.json`,
    );
    const marker: InUseMarker = {
      pid: process.pid,
      host: hostname(),
      purpose,
      since: new Date().toISOString(),
    };
    await writeFileAtomic(path, JSON.stringify(marker));
    return () => rm(path, { force: true });
  }

  /** Who reads the set now (markInUse): live processes of this host, and any of another host (unknowable). */
  async inUse(setId: string): Promise<InUseMarker[]> {
    const dir = this.setDir(setId);
    const names = await readdir(dir).catch(() => [] as string[]);
    const users: InUseMarker[] = [];
    for (const name of names.filter((n) => n.startsWith(IN_USE_PREFIX) && n.endsWith(".json"))) {
      const marker = await readFile(join(dir, name), "utf8")
        .then((t) => JSON.parse(t) as InUseMarker)
        .catch(() => undefined);
      if (!marker) continue;
      if (marker.host === hostname() && !isAlive(marker.pid)) {
        await rm(join(dir, name), { force: true });
        continue;
      }
      users.push(marker);
    }
    return users;
  }

  /** Deletes a set: the manifest first, so that a crash half-way leaves an incomplete set, not a broken one. */
  async deleteSet(setId: string): Promise<void> {
    const dir = this.setDir(setId);
    await rm(join(dir, MANIFEST_FILE), { force: true });
    await fsyncPath(dir);
    await rm(dir, { recursive: true, force: true });
  }

  /** Total bytes of the files under a set's folder. */
  async sizeOnDisk(setId: string): Promise<bigint> {
    return dirSize(this.setDir(setId));
  }

  private async setIds(): Promise<string[]> {
    try {
      const entries = await readdir(this.dir, { withFileTypes: true });
      return entries.filter((e) => e.isDirectory() && SET_ID.test(e.name)).map((e) => e.name);
    } catch {
      return [];
    }
  }
}

async function dirSize(path: string): Promise<bigint> {
  const s = await stat(path);
  if (!s.isDirectory()) return BigInt(s.size);
  let total = 0n;
  for (const entry of await readdir(path)) total += await dirSize(join(path, entry));
  return total;
}

function corrupted(set: string, details: string): LockstepError {
  return new LockstepError("BACKUP_CORRUPTED", { set, details });
}
