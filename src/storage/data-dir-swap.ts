/**
 * Replacing a cluster's data directory (PGDATA, `<dir>/data`) with another one, e.g. a physical
 * restore of the whole cluster, without a moment where a start would find no data directory and
 * create an empty cluster in its place (LocalPostgres creates one when `data` is missing).
 *
 * Two renames cannot be one atomic step, so a marker file says what is under way: written before
 * the first rename, removed after the second. LocalPostgres.start finishes a swap a killed process
 * left half done (finishDataDirSwap) before it looks at `data`.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";

const MARKER = "data-swap.json";

interface SwapMarker {
  /** The new data directory (a sibling of `data`), renamed to `data` second. */
  incoming: string;
  /** What the old `data` is renamed to first (kept: the way back). */
  kept: string;
}

/** Completes a swap a killed process left half done; a no-op without a marker. */
export function finishDataDirSwap(clusterDir: string): void {
  const markerPath = join(clusterDir, MARKER);
  if (!existsSync(markerPath)) return;
  const marker = JSON.parse(readFileSync(markerPath, "utf8")) as SwapMarker;
  const data = join(clusterDir, "data");
  const incoming = join(clusterDir, marker.incoming);
  if (existsSync(data) && existsSync(incoming)) renameSync(data, join(clusterDir, marker.kept));
  if (!existsSync(data) && existsSync(incoming)) renameSync(incoming, data);
  syncDir(clusterDir);
  rmSync(markerPath, { force: true });
  syncDir(clusterDir);
}

/** Makes renames and new entries in a directory durable. */
function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Puts `<clusterDir>/<incoming>` in place of `<clusterDir>/data`, the old one renamed to
 * `<clusterDir>/<kept>`. The server must be stopped.
 */
export function swapDataDir(clusterDir: string, incoming: string, kept: string): void {
  const marker: SwapMarker = { incoming, kept };
  const staging = join(clusterDir, `${MARKER}.tmp`);
  writeFileSync(staging, JSON.stringify(marker));
  const fd = openSync(staging, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(staging, join(clusterDir, MARKER));
  syncDir(clusterDir);
  finishDataDirSwap(clusterDir);
}
