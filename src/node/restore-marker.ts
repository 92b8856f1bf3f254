import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { LockstepError } from "../common/errors.ts";

/**
 * A restore that replaced the embedded cluster in place (src/backup/cluster-restore.ts) names the
 * nodes it restored here until each is stamped as a new incarnation; until then they must not start
 * (they would run on the backup's state under the old incarnation: no replay check, no
 * deduplication recovery).
 */
const MARKER = "restore-in-progress.json";

export interface RestoreMarker {
  set: string;
  nodes: string[];
}

export function restoreMarkerPath(dataDir: string): string {
  return join(dataDir, MARKER);
}

export function clearRestoreMarker(dataDir: string): void {
  rmSync(restoreMarkerPath(dataDir), { force: true });
}

/** RESTORE_IN_PROGRESS when an unfinished in-place restore names the node. */
export function refuseWhileRestoring(dataDir: string, node: string): void {
  const path = restoreMarkerPath(dataDir);
  if (!existsSync(path)) return;
  const marker = JSON.parse(readFileSync(path, "utf8")) as RestoreMarker;
  if (marker.nodes.includes(node)) throw new LockstepError("RESTORE_IN_PROGRESS", { node, set: marker.set });
}
