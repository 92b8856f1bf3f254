import type { Queryable } from "../storage/db.ts";
import type { EngineRecord, ManifestFile } from "./manifest.ts";

/**
 * The seam between Lockstep's backup and restore and the tool that copies a node's database
 * (docs/design.md §4.6), after kysely's Driver: this small interface, one file per engine
 * (pg-dump-engine.ts; pgbackrest/ for the physical one), and what every engine shares in the wrapper
 * (runtime-engine.ts) and the registry that picks engines (backup-engines.ts). Callers never ask
 * which engine they have: an engine's options travel in its manifest record (`R`, discriminated by
 * `name`), and it brings its own backup, verify tiers and restore.
 */

/** One node's backup to take into a set. */
export interface BackupRequest {
  /** The node, for tool names and messages. */
  node: string;
  /** postgres:// URL of the node's database (may hold a password: never print it). */
  connectionUrl: string;
  /** Where the database is, for progress lines (never with a password). */
  source: string;
  /** The set's directory: the artifact and its files are named relative to it. */
  setDir: string;
  /** A line when a step starts (pg-dump: `dumping … (custom)`). */
  onStep?: (line: string) => void;
  /** Bytes written so far; called now and then while the backup runs. */
  onProgress?: (bytes: bigint) => void;
  signal?: AbortSignal;
}

export interface BackupResult<R extends EngineRecord, T> {
  /** The engine's manifest record: its name and the options it ran with. */
  record: R;
  /** The artifact, relative to the set's directory (a file, a directory or a label: the engine's). */
  artifact: string;
  /** The files in the set that make up the artifact, hashed (file-hash.ts): `backup verify`'s first tier. */
  files: ManifestFile[];
  bytes: bigint;
  /** What `atConsistentPoint` returned. */
  consistent: T;
}

/** A node's artifact in a set, as its manifest record names it. */
export interface Artifact<R extends EngineRecord = EngineRecord> {
  setDir: string;
  /** The manifest's `artifact`, relative to setDir. */
  name: string;
  record: R;
}

/**
 * Where a restore goes. A logical engine fills an existing, empty database; a physical one fills an
 * empty directory with a whole cluster (its data directory). Each engine says which it takes.
 */
export type RestoreTarget = { kind: "database"; url: string } | { kind: "data-dir"; path: string };
export type RestoreTargetKind = RestoreTarget["kind"];
export type RestoreTargetOf<K extends RestoreTargetKind> = Extract<RestoreTarget, { kind: K }>;

export interface RestoreOptions {
  /** Parallel jobs, where the engine and the artifact allow them. */
  jobs?: number;
  /** Drop objects before recreating them: for a non-empty database target. */
  clean?: boolean;
  signal?: AbortSignal;
  /** A line when a step starts (pg-dump: `pg_restore of … (custom, 2 job(s))`). */
  onStep?: (line: string) => void;
  /** A line of the tool's own progress output. */
  onProgress?: (line: string) => void;
}

/** One of an engine's own verify tiers, run after the shared size + SHA-256 check of its files. */
export interface VerifyTier<R extends EngineRecord = EngineRecord> {
  /** For progress and docs (pg-dump: `archive listing`). */
  readonly name: string;
  /** What the tier saw, as a line; throws (the problem as its message) when the artifact fails it. */
  check(artifact: Artifact<R>): Promise<string>;
}

export interface BackupEngine<
  R extends EngineRecord = EngineRecord,
  K extends RestoreTargetKind = RestoreTargetKind,
> {
  readonly name: R["name"];
  /** The restore target it takes (the wrapper refuses any other before calling `restore`). */
  readonly restoresInto: K;
  /** Its own verify tiers, cheapest first, between the checksums and the drill (a restore). */
  readonly verifyTiers: readonly VerifyTier<R>[];
  /**
   * Backs up one node's database into the set. The engine calls `atConsistentPoint` once, on a
   * connection that sees exactly the state the artifact restores to (pg-dump: in the snapshot
   * pg_dump reads), so that the position read there describes the artifact (docs/design.md §4.2).
   */
  backup<T>(
    request: BackupRequest,
    atConsistentPoint: (q: Queryable) => Promise<T>,
  ): Promise<BackupResult<R, T>>;
  /**
   * A cheap check that the artifact can be restored now, beyond the set's own files (pgbackrest: the
   * backup and the WAL to its target are still in pgBackRest's repository); `restore plan` runs it.
   * Returns what it saw (null: nothing to check for this artifact); throws a LockstepError when
   * the restore would fail (pg-dump: an encrypted artifact's key is not configured).
   */
  preflight?(artifact: Artifact<R>): Promise<string | null>;
  /** Restores an artifact into a target of the kind it takes, empty unless `options.clean`. */
  restore(artifact: Artifact<R>, target: RestoreTargetOf<K>, options?: RestoreOptions): Promise<void>;
}
