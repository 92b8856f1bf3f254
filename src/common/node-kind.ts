import type { ConnectRouter } from "@connectrpc/connect";
import type { LockstepConfig, NodeEntry, NodeKind } from "./config-schema.ts";
import type { ErrorJson } from "./errors.ts";
import type { Logger } from "./logging.ts";

/**
 * One schema change of a node kind, applied once, in version order (storage/migrations.ts runs
 * them). Here, in the lowest layer, because node kinds declare theirs; storage re-exports it.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Identity facts every node keeps in its own database (node_state table). */
export interface NodeIdentity {
  incarnation: string;
  writerEpoch: bigint;
  /** Random per activation, sent beside the epoch: an equal epoch from another activation is refused. */
  writerActivation: string;
}

/**
 * What the node runtime hands to a node kind. The Db is typed structurally here so that
 * common does not import storage (layering: common is the bottom).
 */
export interface NodeKindContext<TDb = unknown> {
  entry: NodeEntry;
  config: LockstepConfig;
  db: TDb;
  logger: Logger;
  dataDir: string;
  identity: () => NodeIdentity;
  /**
   * After a restore that could not read the sequencer's record of this member's writer epoch
   * (recovery record epoch_unverified): raises the epoch above `sequencerRecord()` before the node
   * acts, so identity() changes. A no-op otherwise. Call before registering, subscribing or sending.
   */
  settleWriterEpoch: (sequencerRecord: () => Promise<bigint>) => Promise<void>;
  /** Report a fatal error: the node stays up (health: failed) so status can show code and remedy. */
  fail: (error: ErrorJson) => void;
}

export interface NodeKindStatus {
  position: Record<string, unknown>;
  deduplicationRecovery?: Record<string, unknown> | null;
  /**
   * A condition the node waits out while active, reported as its status's lastError when it has
   * no fatal one (e.g. TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED: not admitted to the synchronizer).
   */
  warning?: { code: string; message: string; remedy: string };
}

/** One running node of a kind. The runtime calls activate() once it holds the single-writer lock. */
export interface NodeKindRuntime {
  routes(router: ConnectRouter): void;
  activate(): Promise<void>;
  status(): Promise<NodeKindStatus>;
  stop(): Promise<void>;
}

export interface NodeKindDefinition<TDb = unknown> {
  kind: NodeKind;
  migrations: readonly Migration[];
  create(context: NodeKindContext<TDb>): NodeKindRuntime;
}
