import { chmod, lstat, mkdir, readdir, stat } from "node:fs/promises";
import { join } from "node:path";

/**
 * Backups are secrets (they hold the nodes' private keys and the whole ledger): everything Lockstep
 * writes into a backup repository is its owner's only, directories 0700 and files 0600. The mode is
 * set explicitly after creating, never left to the umask, and also on files a child (pg_dump)
 * wrote with its own defaults.
 */
export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** Creates a directory (and missing parents) owner-only; an existing one is tightened. */
export async function mkdirPrivate(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: PRIVATE_DIR_MODE });
  await chmod(path, PRIVATE_DIR_MODE);
}

export interface TreeOptions {
  /** Top-level entries left alone (pgBackRest's own repository: its engine manages modes and owner). */
  skip?: readonly string[];
  /**
   * Keep the root's search (x) bits for group and others: pgBackRest run as the cluster's user is
   * given search on the repository (makeTraversable) to reach its own folder; search alone lists nothing.
   */
  rootSearch?: boolean;
}

/** What a path's mode should be: 0700 / 0600, the root possibly keeping its search bits. */
function wanted(mode: number, directory: boolean, root: boolean, options: TreeOptions): number {
  if (!directory) return PRIVATE_FILE_MODE;
  return PRIVATE_DIR_MODE | (root && options.rootSearch ? mode & 0o011 : 0);
}

async function walk(
  root: string,
  options: TreeOptions,
  each: (path: string, mode: number, want: number) => Promise<void>,
): Promise<void> {
  const visit = async (path: string, top: boolean): Promise<void> => {
    // The root itself may be a symbolic link (a repository on another disk): followed, its target
    // tightened; links inside are never followed (they could point anywhere).
    const st = await (top ? stat(path) : lstat(path)).catch(() => undefined);
    if (!st || st.isSymbolicLink()) return;
    await each(path, st.mode & 0o777, wanted(st.mode & 0o777, st.isDirectory(), top, options));
    if (!st.isDirectory()) return;
    for (const entry of await readdir(path).catch(() => [] as string[])) {
      if (top && options.skip?.includes(entry)) continue;
      await visit(join(path, entry), false);
    }
  };
  await visit(root, true);
}

/** Tightens a tree to owner-only (symbolic links are not followed); returns the paths it changed. */
export async function tightenTree(root: string, options: TreeOptions = {}): Promise<string[]> {
  const changed: string[] = [];
  await walk(root, options, async (path, mode, want) => {
    if (mode !== want && (mode & ~want) !== 0) {
      await chmod(path, want);
      changed.push(path);
    }
  });
  return changed;
}

/** Paths under `root` that others than the owner can read or write (or enter, but the root's search bits). */
export async function looseModes(root: string, options: TreeOptions = {}): Promise<string[]> {
  const loose: string[] = [];
  await walk(root, options, async (path, mode, want) => {
    if ((mode & ~want & 0o077) !== 0) loose.push(path);
  });
  return loose;
}
