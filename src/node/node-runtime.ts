import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { ERRORS, type ErrorCodeName } from "../common/error-codes.ts";
import type { ErrorJson } from "../common/errors.ts";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { NodeIdentity, NodeKindDefinition, NodeKindRuntime } from "../common/node-kind.ts";
import { LOCKSTEP_VERSION } from "../common/version.ts";
import { AdminService } from "../gen/lockstep/admin/v1/admin_pb.ts";
import { lockIdForDatabase, SessionLock } from "../storage/advisory-lock.ts";
import type { Db, DbSession } from "../storage/db.ts";
import { runMigrations } from "../storage/migrations.ts";
import { adminServiceRoutes } from "./admin-service.ts";
import type { HealthReport } from "./health.ts";
import { openNodeDatabase } from "./node-database.ts";
import { NodeServer } from "./node-server.ts";
import {
  bumpWriterEpoch,
  ensureNodeState,
  nodeStateMigrations,
  raiseWriterEpochAbove,
  unverifiedWriterEpoch,
} from "./node-state.ts";

const ADMIN_SERVICE = AdminService.typeName;

export type NodeRole = HealthReport["status"] | "stopped";

export interface NodeRuntimeOptions {
  entry: NodeEntry;
  config: LockstepConfig;
  dataDir: string;
  logger: Logger;
  definition: NodeKindDefinition<Db>;
  /** A replica id: another process of the same node on the same database, passive until the lock frees. */
  replica?: string;
  /** Overrides the configured port (replicas, tests and the demo use this). */
  port?: number;
  /** How often a passive process tries to take the single-writer lock. */
  lockPollMs?: number;
}

/** A node's status as the Admin API reports it (the init shape of GetStatusResponse). */
export interface NodeStatus {
  name: string;
  kind: string;
  role: string;
  positionJson: string;
  incarnation: string;
  writerEpoch: bigint;
  deduplicationRecoveryJson: string;
  replicationFindings: string[];
  lastError?: { code: string; message: string; remedy: string };
  pid: number;
  startedAt: string;
  version: string;
  replica: string;
}

/**
 * One node process: its database, schema, single-writer lock, server and kind runtime.
 * Lifecycle: start() → passive or active (after bumping the writer epoch) → stop().
 */
export class NodeRuntime {
  private role: NodeRole = "starting";
  private lastError: ErrorJson | undefined;
  private identity: NodeIdentity | undefined;
  private db: Db | undefined;
  private session: DbSession | undefined;
  private server: NodeServer | undefined;
  private kind: NodeKindRuntime | undefined;
  private lockTimer: NodeJS.Timeout | undefined;
  private readonly startedAt = new Date();
  private stopping: Promise<void> | undefined;
  private readonly stopped: Promise<void>;
  private resolveStopped!: () => void;
  private readonly log: Logger;
  port = 0;

  constructor(private readonly options: NodeRuntimeOptions) {
    this.log = options.logger;
    this.stopped = new Promise((resolve) => {
      this.resolveStopped = resolve;
    });
  }

  get name(): string {
    return this.options.entry.name;
  }

  get currentRole(): NodeRole {
    return this.role;
  }

  /** Resolves once the node stopped, however that happened (stop(), Admin Shutdown). */
  whenStopped(): Promise<void> {
    return this.stopped;
  }

  async start(): Promise<void> {
    const { entry, definition } = this.options;
    try {
      const { db, description } = await openNodeDatabase(entry, this.options.dataDir, this.log);
      this.db = db;
      this.log.info({ database: description }, "opening node database");
      await runMigrations(db, entry.kind, [...nodeStateMigrations, ...definition.migrations]);
      this.identity = await ensureNodeState(db, entry.name, entry.kind);
      this.kind = definition.create({
        entry,
        config: this.options.config,
        db,
        logger: this.log,
        dataDir: this.options.dataDir,
        identity: () => this.requireIdentity(),
        settleWriterEpoch: (sequencerRecord) => this.settleWriterEpoch(sequencerRecord),
        fail: (error) => this.fail(error),
      });
      const kind = this.kind;
      this.server = new NodeServer({
        node: entry.name,
        port: this.options.port ?? entry.port,
        logger: this.log,
        health: () => this.health(),
        interceptors: [(next) => (request) => this.guardPassive(request.service.typeName, next, request)],
        routes: (router) => {
          adminServiceRoutes({ status: () => this.status(), shutdown: () => void this.stop() })(router);
          kind.routes(router);
        },
      });
      this.port = await this.server.start();
      this.log.info({ port: this.port }, "serving");
      await this.takeLockOrWait();
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  private requireIdentity(): NodeIdentity {
    if (!this.identity)
      throw new LockstepError("INTERNAL_ERROR", { details: "node identity read before start" });
    return this.identity;
  }

  /**
   * A restore that could not reach the sequencer stamped the backup's own epoch and flagged it
   * (recovery_records.epoch_unverified); the member may have been activated since the backup, so
   * before acting the node takes an epoch above the sequencer's record of it, exactly + 1, instead
   * of guessing a margin. `sequencerRecord` throws while the sequencer is unreachable (the caller
   * retries): the flag stays set and nothing is sent on the unverified epoch.
   */
  private async settleWriterEpoch(sequencerRecord: () => Promise<bigint>): Promise<void> {
    const db = this.db as Db;
    const recoveryId = await unverifiedWriterEpoch(db);
    if (recoveryId === undefined) return;
    const record = await sequencerRecord();
    this.identity = await raiseWriterEpochAbove(db, recoveryId, record);
    this.log.info(
      { writerEpoch: this.identity.writerEpoch.toString(), sequencerRecord: record.toString() },
      "writer epoch raised above the sequencer's record after a restore",
    );
  }

  /**
   * Only the active process serves its kind's services; a passive replica answers the Admin API and
   * health only, so clients see NODE_PASSIVE (retryable) and go to the active one.
   */
  private guardPassive<T>(service: string, next: (request: T) => Promise<unknown>, request: T) {
    // A failed node answers with its own error (e.g. SEQUENCER_FORK_DETECTED and its remedy), not
    // NODE_PASSIVE: no other replica would do better, and the caller must see why.
    if (service !== ADMIN_SERVICE && this.role === "failed" && this.lastError) {
      throw nodeFailure(this.lastError);
    }
    if (service !== ADMIN_SERVICE && this.role !== "active") {
      throw new LockstepError("NODE_PASSIVE", { node: this.name });
    }
    return next(request) as never;
  }

  /** Single writer (docs/design.md §3): the session advisory lock decides active or passive. */
  private async takeLockOrWait(): Promise<void> {
    const db = this.db as Db;
    this.session = await db.session();
    this.session.onError((error) => {
      if (this.role !== "stopping" && this.role !== "stopped") {
        this.fail(toLockstepError(error).toJSON());
      }
    });
    const lock = new SessionLock(this.session, lockIdForDatabase(db.database));
    if (await lock.tryAcquire()) {
      await this.activate();
      return;
    }
    this.role = "passive";
    this.log.info("another process holds the node's lock: passive until it frees");
    const poll = async () => {
      if (this.role !== "passive") return;
      try {
        if (await lock.tryAcquire()) {
          await this.activate();
          return;
        }
      } catch (error) {
        this.fail(toLockstepError(error).toJSON());
        return;
      }
      this.lockTimer = setTimeout(poll, this.options.lockPollMs ?? 1000);
    };
    this.lockTimer = setTimeout(poll, this.options.lockPollMs ?? 1000);
  }

  private async activate(): Promise<void> {
    this.identity = await bumpWriterEpoch(this.db as Db);
    this.log.info({ writerEpoch: this.identity.writerEpoch.toString() }, "active");
    try {
      await this.kind?.activate();
      this.role = "active";
    } catch (error) {
      this.fail(toLockstepError(error).toJSON());
    }
  }

  /** A fatal error: the node keeps serving Admin API and health so status can name code and remedy. */
  private fail(error: ErrorJson): void {
    this.lastError = error;
    this.role = "failed";
    this.log.error({ code: error.code, remedy: error.remedy }, error.message);
  }

  health(): HealthReport {
    const status = this.role === "stopped" ? "stopping" : this.role;
    const reason =
      this.lastError?.message ??
      (status === "passive" ? "another process of this node holds the database lock" : undefined);
    return { node: this.name, kind: this.options.entry.kind, status, reason };
  }

  async status(): Promise<NodeStatus> {
    const kindStatus = this.role === "active" && this.kind ? await this.kind.status() : undefined;
    return {
      name: this.name,
      kind: this.options.entry.kind,
      role: this.role,
      positionJson: JSON.stringify(kindStatus?.position ?? {}, bigintReplacer),
      incarnation: this.identity?.incarnation ?? "",
      writerEpoch: this.identity?.writerEpoch ?? 0n,
      deduplicationRecoveryJson: kindStatus?.deduplicationRecovery
        ? JSON.stringify(kindStatus.deduplicationRecovery, bigintReplacer)
        : "",
      replicationFindings: [],
      lastError: this.lastError
        ? { code: this.lastError.code, message: this.lastError.message, remedy: this.lastError.remedy }
        : undefined,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      version: LOCKSTEP_VERSION,
      replica: this.options.replica ?? "",
    };
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.role = "stopping";
    clearTimeout(this.lockTimer);
    const steps: [string, (() => Promise<void>) | undefined][] = [
      ["kind", this.kind && (() => (this.kind as NodeKindRuntime).stop())],
      ["server", this.server && (() => (this.server as NodeServer).stop())],
      ["lock session", this.session && (async () => (this.session as DbSession).release(true))],
      ["database", this.db && (() => (this.db as Db).close())],
    ];
    for (const [what, step] of steps) {
      if (!step) continue;
      try {
        await step();
      } catch (error) {
        this.log.warn({ err: error }, `stopping ${what} failed`);
      }
    }
    this.role = "stopped";
    this.log.info("stopped");
    this.resolveStopped();
  }
}

export function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/** A failed node's error, rebuilt with its code, message and remedy. */
function nodeFailure(error: ErrorJson): LockstepError {
  if (!ERRORS.has(error.code as ErrorCodeName)) {
    return new LockstepError("INTERNAL_ERROR", { details: `${error.code}: ${error.message}` });
  }
  return new LockstepError(error.code as ErrorCodeName, error.metadata ?? {});
}
