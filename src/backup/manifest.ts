import { createHash } from "node:crypto";
import { z } from "zod";
import { canonicalJson } from "../common/canonical-json.ts";
import { ARTIFACT_CIPHER } from "./artifact-cipher.ts";

/**
 * The manifest of a backup set (docs/design.md §4.1): what each node's artifact holds and where the
 * node stood when it was taken. Written last and atomically by the repository; never changed
 * afterwards (verification results live beside it in verification.json). int64 values
 * (timestamps in micros, offsets, epochs, byte counts) are decimal strings, as in the CLI's JSON.
 */

/**
 * 3: each node names the engine that made its artifact, with the engine's options (`engine`; 1 and
 * 2 had only pg_dump and recorded its `format`). 2: per-member chain hashes on both sides of the
 * order check (1 compared timestamps only).
 */
export const MANIFEST_VERSION = 3;
export const BACKUP_FORMATS = ["tar", "custom", "directory"] as const;
export type BackupFormat = (typeof BACKUP_FORMATS)[number];

const int64 = z.string().regex(/^-?\d+$/, "an integer as a decimal string");
const micros = int64;
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "a SHA-256 as 64 lower-case hex digits");
const isoTime = z.string().min(1);

/** One file of an artifact, relative to the set's directory (`participant1.dump`, `participant1/toc.dat`). */
export const manifestFileSchema = z.object({
  path: z.string().min(1),
  bytes: int64,
  sha256: sha256Hex,
});
export type ManifestFile = z.infer<typeof manifestFileSchema>;

/** The member's last stored sequenced event: what restore compares with the sequencer to predict a fork. */
export const storedEventRefSchema = z.object({ timestamp: micros, chainHash: sha256Hex });
export type StoredEventRef = z.infer<typeof storedEventRefSchema>;

export const participantPositionSchema = z.object({
  /** Timestamp of the last fully processed event (null before the first). */
  clean: micros.nullable(),
  ledgerEnd: int64,
  lastStored: storedEventRefSchema.nullable(),
});
export const mediatorPositionSchema = z.object({
  clean: micros.nullable(),
  lastStored: storedEventRefSchema.nullable(),
});
/**
 * The sequencer's own view of one member at the member's last stored timestamp in the same set:
 * whether it knows the member, and the chain hash of the member's event at that timestamp (null:
 * it has none there). Read in the sequencer's snapshot; what the order check compares.
 */
export const memberEventViewSchema = z.object({
  timestamp: micros,
  known: z.boolean(),
  chainHash: sha256Hex.nullable(),
});
export type MemberEventView = z.infer<typeof memberEventViewSchema>;

export const sequencerPositionSchema = z.object({
  head: micros.nullable(),
  /** member id → timestamp of the last event delivered to it (null: none yet). */
  members: z.record(z.string(), micros.nullable()),
  pruningLowerBound: micros.nullable(),
  /** member id → the sequencer's event at that member's last stored timestamp in this set (v2). */
  memberEvents: z.record(z.string(), memberEventViewSchema).optional(),
});
export type ParticipantPosition = z.infer<typeof participantPositionSchema>;
export type MediatorPosition = z.infer<typeof mediatorPositionSchema>;
export type SequencerPosition = z.infer<typeof sequencerPositionSchema>;

/**
 * What the manifest records of the engine that made a node's artifact: its name and the options it
 * ran with, one object per engine (docs/design.md §4.6). A new engine adds its object here; restore
 * and verify dispatch on `name`, never on the artifact's shape.
 */
export const pgDumpRecordSchema = z.object({
  name: z.literal("pg-dump"),
  format: z.enum(BACKUP_FORMATS),
  /** Parallel pg_dump jobs (directory format only, the only one that runs them). */
  jobs: z.number().int().min(1).optional(),
  /**
   * Each file of the artifact encrypted (artifact-cipher.ts) under the backup key with this
   * fingerprint (never the key); absent: plain, so plain sets keep their manifests' bytes.
   */
  encryption: z
    .object({
      cipher: z.literal(ARTIFACT_CIPHER),
      keyFingerprint: z.string().regex(/^[0-9a-f]{16}$/, "16 lower-case hex digits"),
      chunkBytes: z.number().int().min(1),
    })
    .optional(),
});
export type PgDumpRecord = z.infer<typeof pgDumpRecordSchema>;
/**
 * Where a physical restore stops: a restore point (a backup set's own, or a checkpoint's) or a time.
 * Kept exactly as given to PostgreSQL (a time as text, to the microsecond).
 */
export const recoveryTargetSchema = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("name"),
    name: z.string().min(1),
    lsn: z.string().min(1),
    /**
     * The timeline the restore point was written on: recovery follows it (not the newest one), so a
     * point stays reachable after a restore put the cluster on a later timeline.
     */
    timeline: z.number().int().min(1).optional(),
  }),
  z.object({ type: z.literal("time"), time: z.string().min(1) }),
]);
export type RecoveryTarget = z.infer<typeof recoveryTargetSchema>;

/**
 * pgBackRest (src/backup/pgbackrest): the node's database is in the cluster of `stanza`, restored
 * from backup `label` (and the ones it references) with WAL replayed up to `target`, then only
 * `database` taken from it. `label`'s LSNs are pgBackRest's; the position in the manifest is that at
 * `target`, not at the end of the backup.
 */
export const pgBackRestRecordSchema = z.object({
  name: z.literal("pgbackrest"),
  stanza: z.string().min(1),
  label: z.string().min(1),
  type: z.enum(["full", "diff", "incr"]),
  /** The backup's start and stop WAL positions (pgBackRest `info`). */
  startLsn: z.string(),
  stopLsn: z.string(),
  database: z.string().min(1),
  target: recoveryTargetSchema,
  /**
   * pgBackRest's repository encryption (pgbackrest/pgbackrest-repo.ts): the backup is in the
   * repository `pgbackrest-<keyFingerprint>`, encrypted under a passphrase derived from the backup
   * key with this fingerprint (never the key nor the passphrase); absent: the plain `pgbackrest`.
   */
  encryption: z
    .object({
      cipher: z.literal("aes-256-cbc"),
      keyFingerprint: z.string().regex(/^[0-9a-f]{16}$/, "16 lower-case hex digits"),
    })
    .optional(),
});
export type PgBackRestRecord = z.infer<typeof pgBackRestRecordSchema>;
export const engineRecordSchema = z.discriminatedUnion("name", [pgDumpRecordSchema, pgBackRestRecordSchema]);
export type EngineRecord = z.infer<typeof engineRecordSchema>;

const nodeCommon = {
  name: z.string().min(1),
  /** The member id on the synchronizer (null when the node never registered / is the sequencer before init). */
  member: z.string().nullable(),
  synchronizerId: z.string().nullable(),
  incarnation: z.string(),
  writerEpoch: int64,
  /** v3: the engine that made the artifact, with its options. Read it through nodeEngine. */
  engine: engineRecordSchema.optional(),
  /** v1 and v2 only, when pg_dump was the only engine: its format. Read it through nodeEngine. */
  format: z.enum(BACKUP_FORMATS).optional(),
  /** The artifact relative to the set's directory (pg-dump: a file for tar and custom, a directory). */
  artifact: z.string().min(1),
  files: z.array(manifestFileSchema),
  bytes: int64,
  /** The database dumped (its name at the source). */
  database: z.string(),
  postgres: z.object({ version: z.string(), systemIdentifier: z.string() }),
  /** Fingerprints of every key in crypto_private_keys at the snapshot. */
  keyFingerprints: z.array(z.string()),
  /**
   * The wrapper key (its fingerprint, never the key) the private keys are encrypted under; absent
   * when they are in plain (so manifests of plain stores keep their bytes).
   */
  wrapperFingerprint: z.string().optional(),
  startedAt: isoTime,
  finishedAt: isoTime,
};

/**
 * A node of one kind, naming its engine one way: `engine` (v3) or, in v1/v2, `format`. The node is
 * kept as written (the manifest is read as it was sealed, and its checksum recomputes), and
 * nodeEngine reads either; no other reader needs to know older manifests.
 */
function nodeSchema<K extends string, P extends z.ZodType>(kind: K, position: P) {
  return z.object({ ...nodeCommon, kind: z.literal(kind), position }).superRefine((node, ctx) => {
    if (node.engine && node.format)
      ctx.addIssue({ code: "custom", path: ["format"], message: "format is part of engine (manifest v3)" });
    if (!node.engine && !node.format)
      ctx.addIssue({ code: "custom", path: ["engine"], message: "names no engine (nor a pg_dump format)" });
  });
}

export const nodeBackupSchema = z.discriminatedUnion("kind", [
  nodeSchema("participant", participantPositionSchema),
  nodeSchema("mediator", mediatorPositionSchema),
  nodeSchema("sequencer", sequencerPositionSchema),
]);
export type NodeBackup = z.infer<typeof nodeBackupSchema>;
export type NodeBackupKind = NodeBackup["kind"];

/**
 * A participant/mediator whose history is not a prefix of the sequencer's: the sequencer has no
 * event for it at its last stored timestamp, or one with another chain hash. Restoring both forks.
 */
export const unsafeFindingSchema = z.object({
  node: z.string(),
  reason: z.literal("fork"),
  member: z.string().nullable(),
  /** The node's clean timestamp in this set. */
  clean: micros.nullable(),
  /** The node's last stored event (a stored event beyond the sequencer's record forks on reconnect too). */
  lastStored: micros.nullable(),
  /** The sequencer's last delivered timestamp for the member (null: member unknown to it). */
  sequencerLastDelivered: micros.nullable(),
  /** The set holding the sequencer compared with (this set); null: the live sequencer. */
  sequencerSet: z.string().nullable(),
  /** v2: the chain hash of the node's last stored event, and the sequencer's at that timestamp (null: none). */
  storedHash: sha256Hex.nullable().optional(),
  sequencerHash: sha256Hex.nullable().optional(),
});
export type UnsafeFinding = z.infer<typeof unsafeFindingSchema>;

export const manifestSchema = z.object({
  manifestVersion: z.union([z.literal(1), z.literal(2), z.literal(MANIFEST_VERSION)]),
  id: z.string().min(1),
  lockstepVersion: z.string(),
  synchronizerId: z.string(),
  /**
   * ordered: docs/design.md §4.3 order; quiesced: sequencer intake paused, all dumped in parallel;
   * checkpoint / point-in-time: no copy of its own, the nodes' pgBackRest backups replayed to a
   * checkpoint's restore points or to a time (`pointInTime` says which).
   */
  mode: z.enum(["ordered", "quiesced", "checkpoint", "point-in-time"]),
  /** checkpoint and point-in-time sets: the checkpoint's name, or the times the nodes stop at. */
  pointInTime: z
    .union([
      z.object({ checkpoint: z.string().min(1) }),
      z.object({ time: z.string().min(1), sequencerTime: z.string().min(1) }),
    ])
    .optional(),
  startedAt: isoTime,
  finishedAt: isoTime,
  appHook: z
    .object({ command: z.string(), exitCode: z.number().int(), startedAt: isoTime, finishedAt: isoTime })
    .nullable(),
  nodes: z.array(nodeBackupSchema).min(1),
  /**
   * checked: against the sequencer in this set; checked-against-live-sequencer: a set without the
   * sequencer, compared with the live one (`checkedAgainst` names it); unchecked: the live sequencer
   * did not answer. checked-against-older-set: written by manifest v1 only (timestamps only).
   */
  orderCheck: z.enum(["checked", "checked-against-live-sequencer", "checked-against-older-set", "unchecked"]),
  checkedAgainst: z.string().nullable(),
  /** false when `unsafe` is non-empty. An unchecked set is not "unsafe", but `orderCheck` says so. */
  safe: z.boolean(),
  unsafe: z.array(unsafeFindingSchema),
  bytes: int64,
  /** SHA-256 of the canonical JSON of every other field (see manifestChecksum). */
  checksum: sha256Hex,
});
export type Manifest = z.infer<typeof manifestSchema>;
export type UnsignedManifest = Omit<Manifest, "checksum">;

/**
 * The manifest's canonical JSON (common/canonical-json.ts): the same manifest always hashes the
 * same. Its numbers are integers (int64 values are decimal strings): safe integers only.
 */
export function manifestJson(value: unknown): string {
  return canonicalJson(value, "safe-integer");
}

/** The checksum of a manifest: SHA-256 (hex) of the canonical JSON of all fields but `checksum`. */
export function manifestChecksum(manifest: UnsignedManifest | Manifest): string {
  const { checksum: _ignored, ...rest } = manifest as Manifest;
  return createHash("sha256").update(manifestJson(rest), "utf8").digest("hex");
}

export function sealManifest(manifest: UnsignedManifest): Manifest {
  return { ...manifest, checksum: manifestChecksum(manifest) };
}

/**
 * The engine that made a node's artifact, with its options: v3 records it; v1 and v2, written when
 * pg_dump was the only engine, recorded only its format (the schema refuses a node with neither).
 */
export function nodeEngine(node: NodeBackup): EngineRecord {
  if (node.engine) return node.engine;
  if (node.format) return { name: "pg-dump", format: node.format };
  throw new Error(`${node.name} names no engine`);
}

/** The node with that name in the manifest, if any. */
export function manifestNode(manifest: Manifest, name: string): NodeBackup | undefined {
  return manifest.nodes.find((n) => n.name === name);
}
