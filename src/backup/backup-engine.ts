import type { BackupFormat, ManifestFile } from "./manifest.ts";

/** What to dump: one node's database, in one of its snapshots, to one artifact path. */
export interface DumpRequest {
  /** postgres:// URL of the node's database. */
  connectionUrl: string;
  /** An exported snapshot (pg_export_snapshot) the dump must read; its transaction stays open meanwhile. */
  snapshot?: string;
  format: BackupFormat;
  /** Parallel jobs (directory format only). */
  jobs?: number;
  /** The set's directory: file paths in the result are relative to it. */
  setDir: string;
  /** The artifact, relative to setDir (file for tar/custom, directory for directory). */
  artifact: string;
  /** Bytes written so far; called now and then while the dump runs. */
  onProgress?: (bytes: bigint) => void;
  signal?: AbortSignal;
}

export interface DumpResult {
  files: ManifestFile[];
  bytes: bigint;
}

/** A node's artifact as the manifest names it. */
export interface Artifact {
  /** Absolute path of the artifact (file or directory). */
  path: string;
  format: BackupFormat;
}

export interface RestoreOptions {
  /** Parallel jobs for pg_restore (custom and directory formats; tar restores serially). */
  jobs?: number;
  /** Drop objects before recreating them (pg_restore --clean --if-exists): for a non-empty target. */
  clean?: boolean;
  signal?: AbortSignal;
  /** A line of pg_restore's stderr (verbose progress). */
  onProgress?: (line: string) => void;
}

/** A way to take and restore a node's database (pg_dump now; basebackup/pgBackRest later, docs/design.md §4.6). */
export interface BackupEngine {
  readonly name: string;
  dump(request: DumpRequest): Promise<DumpResult>;
  /** Restores an artifact into the (existing) database at targetUrl. */
  restore(artifact: Artifact, targetUrl: string, options?: RestoreOptions): Promise<void>;
  /** The archive's table of contents (pg_restore --list): proves it is readable; throws when not. */
  list(artifact: Artifact): Promise<string[]>;
}
