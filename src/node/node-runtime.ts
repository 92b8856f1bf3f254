import { registerAdminToken } from "../common/admin-credentials.ts";
import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import type { ErrorJson } from "../common/errors.ts";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { nodeEndpoint, processAddress } from "../common/node-endpoint.ts";
import type { NodeKindDefinition } from "../common/node-kind.ts";
import { nodeClientTls } from "../common/tls-client.ts";
import type { FenceWriterRequest } from "../gen/lockstep/admin/v1/admin_pb.ts";
import type { Db } from "../storage/db.ts";
import { settled } from "../storage/fenced-db.ts";
import { runMigrations } from "../storage/migrations.ts";
import { adminServiceRoutes } from "./admin-service.ts";
import { adminTokenInterceptor, nodeAdminToken } from "./admin-token.ts";
import type { HealthReport } from "./health.ts";
import { createKindInstance, type KindInstance, stopKindInstance } from "./kind-instance.ts";
import { KindRoutes } from "./kind-routes.ts";
import { openNodeDatabase } from "./node-database.ts";
import { MESSAGE_LIMITS, NodeServer } from "./node-server.ts";
import { nodeStateMigrations } from "./node-state.ts";
import { type NodeSnapshot, type NodeStatus, nodeFailure, nodeHealth, nodeStatus } from "./node-status.ts";
import { passiveGuard } from "./passive-guard.ts";
import { ReplicationMonitor } from "./replication-monitor.ts";
import { refuseWhileRestoring } from "./restore-marker.ts";
import { prepareNodeTls } from "./tls-server.ts";
import type { FenceOutcome } from "./writer-fencing.ts";
import { WriterIdentity } from "./writer-identity.ts";
import { WriterLock } from "./writer-lock.ts";

/** How long a fenced process waits for its transactions under way before it answers FenceWriter. */
const FENCE_SETTLE_CAP_MS = 5000;

// The process's lifecycle and role changes. Their parts live beside it, one concern each: the lock
// (writer-lock.ts), the writer epoch and fencing (writer-identity.ts), kind instances (kind-instance.ts),
// the passive guard (passive-guard.ts), status and health (node-status.ts), re-exported here.
export { bigintReplacer, type NodeStatus } from "./node-status.ts";

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
  /** How often a passive process tries to take the single-writer lock (default 250 ms, ±20 % jitter). */
  lockPollMs?: number;
  /** How often the active process checks it still holds the lock (default 100 ms, at most half of lockPollMs). */
  lockCheckMs?: number;
}

/**
 * One node process: its database, schema, single-writer lock, server and kind runtime.
 * Lifecycle: start() → passive or active (after bumping the writer epoch) → stop().
 */
export class NodeRuntime {
  private role: NodeRole = "starting";
  private lastError: ErrorJson | undefined;
  /** Its identity and writer epoch, and writer fencing (writer-identity.ts). */
  private readonly writer: WriterIdentity;
  private db: Db | undefined;
  /** The single-writer lock (writer-lock.ts); a loss runs lockLost() before anything else. */
  private readonly writerLock: WriterLock;
  private server: NodeServer | undefined;
  private instance: KindInstance | undefined;
  private readonly kindRoutes = new KindRoutes();
  /** Passive: the next try of the lock; active: the next check of it. */
  private lockTimer: NodeJS.Timeout | undefined;
  /** Role changes (activate, demote, switch-over) run one at a time, in order. */
  private transitions: Promise<unknown> = Promise.resolve();
  private readonly pollMs: number;
  private readonly checkMs: number;
  /** After losing or giving up the lock, how long this process lets the others try first. */
  private readonly holdoffMs: number;
  private replication: ReplicationMonitor | undefined;
  private readonly startedAt = new Date();
  private stopping: Promise<void> | undefined;
  private readonly stopped: Promise<void>;
  private resolveStopped!: () => void;
  private readonly log: Logger;
  port = 0;

  constructor(private readonly options: NodeRuntimeOptions) {
    this.log = options.logger;
    this.pollMs = options.lockPollMs ?? 250;
    this.checkMs = options.lockCheckMs ?? Math.max(10, Math.min(100, this.pollMs / 2));
    this.holdoffMs = Math.max(4 * this.pollMs, 1000);
    this.writer = new WriterIdentity(options.entry.name, this.log);
    this.writerLock = new WriterLock({
      db: () => this.db as Db,
      logger: this.log,
      onLost: (reason) => this.lockLost(reason),
    });
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
      refuseWhileRestoring(this.options.dataDir, entry.name);
      const tls = await prepareNodeTls(this.options.config, entry);
      const { db, description } = await openNodeDatabase(
        entry,
        this.options.dataDir,
        this.log,
        this.options.replica,
      );
      this.db = db;
      this.log.info({ database: description }, "opening node database");
      // Before migrations, which commit: with synchronous_standby_names set and no standby, a commit
      // waits for one, so under `check: fail` the refusal must come first (it only reads).
      this.replication = new ReplicationMonitor({ entry, db, description, logger: this.log });
      await this.replication.start();
      await runMigrations(db, entry.kind, [...nodeStateMigrations, ...definition.migrations]);
      await this.writer.load(db, entry);
      this.instance = this.createInstance();
      const kind = this.instance.kind;
      // The Admin API needs the network's admin token (docs/security.md "Admin API").
      const adminToken = nodeAdminToken(this.options.config, this.options.dataDir);
      this.server = new NodeServer({
        node: entry.name,
        port: this.options.port ?? entry.port,
        host: nodeEndpoint(entry).bindHost,
        logger: this.log,
        health: () => this.health(),
        tls,
        readMaxBytes: entry.config["max-inbound-message-size"] ?? MESSAGE_LIMITS[entry.kind],
        interceptors: [
          adminTokenInterceptor({ node: entry.name, token: adminToken }),
          passiveGuard({
            name: entry.name,
            role: () => this.role,
            lastError: () => this.lastError,
            lock: this.writerLock,
          }),
        ],
        routes: (router) => {
          adminServiceRoutes({
            status: () => this.status(),
            shutdown: () => void this.stop(),
            switchOver: () => this.switchOver(),
            fenceWriter: (request) => this.fenceWriter(request),
          })(router);
          this.kindRoutes.register(router, (kindRouter) => kind.routes(kindRouter));
        },
      });
      this.port = await this.server.start();
      this.writer.address = processAddress(entry, this.port);
      this.writer.tls = tls !== undefined;
      this.writer.clientTls = nodeClientTls(this.options.config, entry);
      registerAdminToken([this.writer.address], () => adminToken, { served: true });
      this.log.info({ port: this.port }, "serving");
      await this.transition(() => this.takeLockOrWait());
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /**
   * Single writer (docs/design.md §3): the session advisory lock decides active or passive. Runs as a
   * transition, so that a loss noticed during the first activation is handled after it.
   */
  private async takeLockOrWait(): Promise<void> {
    if (await this.writerLock.tryLock()) {
      await this.activate();
      return;
    }
    this.role = "passive";
    this.log.info("another process holds the node's lock: passive until it frees");
    this.schedulePoll();
  }

  /** Runs role changes one at a time; a step that throws rejects its caller only. */
  private transition<T>(step: () => Promise<T>): Promise<T> {
    const run = this.transitions.then(step);
    this.transitions = run.catch(() => {});
    return run;
  }

  private isStopping(): boolean {
    return this.role === "stopping" || this.role === "stopped";
  }

  /** Passive: try the lock again after `delayMs` (jittered, so that replicas do not try in step). */
  private schedulePoll(delayMs = this.pollMs * (0.8 + 0.4 * Math.random())): void {
    clearTimeout(this.lockTimer);
    this.lockTimer = setTimeout(() => {
      this.transition(() => this.poll()).catch((error) => this.log.error({ err: error }, "lock poll failed"));
    }, delayMs);
  }

  private async poll(): Promise<void> {
    if (this.role !== "passive") return;
    try {
      if (await this.writerLock.tryLock()) {
        await this.activate();
        return;
      }
    } catch (error) {
      if (this.writerLock.holding) {
        // The activation failed before the kind started (e.g. the epoch bump): give the lock up.
        this.writerLock.lose(`activation failed: ${toLockstepError(error).message}`);
        return;
      }
      // The database is unreachable or restarting: stay passive and try again.
      this.log.warn({ err: error }, "could not try the node's lock; trying again");
      this.writerLock.drop();
    }
    this.schedulePoll();
  }

  /** Holding the lock: bump the writer epoch, then activate a kind instance that has not run yet. */
  private async activate(): Promise<void> {
    // From here on the lock is checked, and a loss fences whatever this activation started.
    this.scheduleCheck();
    const previous = await this.writer.bump(this.db as Db);
    if (!this.writerLock.holding || this.isStopping()) return;
    const instance = this.freshInstance();
    this.writer.fencePrevious(
      previous,
      () => !instance.fence.revoked && !this.isStopping() && this.role !== "failed",
    );
    this.log.info({ writerEpoch: this.writer.require().writerEpoch.toString() }, "active");
    try {
      instance.activated = true;
      await instance.kind.activate();
    } catch (error) {
      if (!instance.fence.revoked) this.fail(toLockstepError(error).toJSON());
      return;
    }
    if (this.writerLock.holding && !instance.fence.revoked && !this.isStopping()) this.role = "active";
  }

  /**
   * A kind stopping on a database error may be the first to see a lost connection (its pool's break
   * too, and may be reported before the lock session's): ask the server about the lock first, so
   * that a process that lost it goes passive, as it should, instead of failed.
   */
  private async failUnlessLockLost(fence: KindInstance["fence"], error: ErrorJson): Promise<void> {
    if (this.writerLock.holding) await this.writerLock.stillHolding();
    if (!fence.revoked) this.fail(error);
  }

  /** The instance created at start if it never ran, else a new one: an instance activates and stops once. */
  private freshInstance(): KindInstance {
    if (this.instance && !this.instance.activated && !this.instance.stopping) return this.instance;
    const instance = this.createInstance();
    this.kindRoutes.replace((router) => instance.kind.routes(router));
    this.instance = instance;
    return instance;
  }

  /** A new kind instance on the node's database (kind-instance.ts). */
  private createInstance(): KindInstance {
    return createKindInstance({
      ...this.options,
      db: this.db as Db,
      identity: () => this.writer.require(),
      settleWriterEpoch: (db, sequencerRecord) => this.writer.settle(db, sequencerRecord),
      fail: (fence, error) => void this.failUnlessLockLost(fence, error),
    });
  }

  private stopInstance(): Promise<void> {
    return this.instance ? stopKindInstance(this.instance, this.log) : Promise.resolve();
  }

  /** Active: check the lock more often than passives try it, so that a loss is noticed first here. */
  private scheduleCheck(): void {
    clearTimeout(this.lockTimer);
    this.lockTimer = setTimeout(() => void this.checkLock(), this.checkMs);
  }

  private async checkLock(): Promise<void> {
    if (this.writerLock.holding && (await this.writerLock.stillHolding())) this.scheduleCheck();
  }

  /**
   * The lock is gone (its session broke, or the check failed or went unanswered). Stop writing at once:
   * the kind's database view refuses every further statement and commit, and its services answer
   * NODE_PASSIVE. Then stop the kind and, after a hold-off that lets another process take over first,
   * try the lock again as a passive process. A failed node stays failed. WriterLock calls this once,
   * synchronously, having stopped counting the lock as held.
   */
  private lockLost(reason: string): void {
    clearTimeout(this.lockTimer);
    if (this.instance) this.instance.fence.revoked = true;
    if (this.role === "active" || this.role === "starting") this.role = "passive";
    this.log.error({ reason }, "lost the node's database lock: stopped writing; passive");
    this.transition(() => this.demote()).catch((error) => this.log.error({ err: error }, "demotion failed"));
  }

  private async demote(): Promise<void> {
    await this.stopInstance();
    this.writerLock.drop();
    if (this.role === "passive") this.schedulePoll(this.holdoffMs);
  }

  /**
   * Admin SwitchOver: the kind stops cleanly while the lock is still held (what it has in flight
   * finishes), then the lock is released and this process stays passive for the hold-off, so that
   * another process of the node takes over. With none, this one takes the lock back afterwards.
   */
  switchOver(): Promise<{ writerEpoch: bigint }> {
    return this.transition(async () => {
      if (this.role === "failed" && this.lastError) throw nodeFailure(this.lastError);
      if (this.role !== "active") throw new LockstepError("NODE_PASSIVE", { node: this.name });
      clearTimeout(this.lockTimer);
      this.role = "passive"; // its services refuse new calls from now on
      this.log.info("switch-over: stopping the node kind, then releasing the lock");
      await this.stopInstance();
      if (this.instance) this.instance.fence.revoked = true;
      await this.writerLock.release();
      this.log.info("switch-over: lock released; passive");
      if (this.role === "passive") this.schedulePoll(this.holdoffMs);
      return { writerEpoch: this.writer.current?.writerEpoch ?? 0n };
    });
  }

  /**
   * A FenceWriter notice from a newer activation of this node. When it judges this process stale,
   * the process stops writing at once (its kind's database view is revoked, the lock session
   * dropped) and fails with STALE_WRITER_EPOCH; it never tries the lock again.
   */
  async fenceWriter(request: FenceWriterRequest): Promise<{ outcome: FenceOutcome }> {
    const { outcome, notice } = await this.writer.receive(request, this.db as Db);
    if (outcome !== "fenced" || this.role === "failed" || this.isStopping()) return { outcome };
    clearTimeout(this.lockTimer);
    const fence = this.instance?.fence;
    if (fence) fence.revoked = true;
    this.writerLock.forget();
    this.writer.stopFencing();
    this.writerLock.drop();
    const own = this.writer.current?.writerEpoch ?? 0n;
    this.fail(
      new LockstepError("STALE_WRITER_EPOCH", {
        member: this.name,
        epoch: own.toString(),
        current: `${notice.writerEpoch} (the activation at ${notice.writerEndpoint})`,
      }).toJSON(),
    );
    void this.stopInstance();
    // Answered once what was under way has committed or rolled back: the newer activation may then
    // count on not one more row from this one (a COMMIT already sent would otherwise land after).
    if (fence) await settled(fence.underWay, FENCE_SETTLE_CAP_MS);
    return { outcome };
  }

  /** A fatal error: the node keeps serving Admin API and health so status can name code and remedy. */
  private fail(error: ErrorJson): void {
    this.lastError = error;
    this.role = "failed";
    this.log.error({ code: error.code, remedy: error.remedy }, error.message);
  }

  health(): HealthReport {
    return nodeHealth(this.snapshot());
  }

  async status(): Promise<NodeStatus> {
    const kind = this.instance?.kind; // the one the server's routes reach
    const kindStatus = this.role === "active" && kind ? await kind.status() : undefined;
    return nodeStatus(this.snapshot(), kindStatus);
  }

  /** What status and health report, read as it is now (node-status.ts). */
  private snapshot(): NodeSnapshot {
    const { role, lastError, startedAt, replication, writer } = this;
    const { entry, replica } = this.options;
    return { name: this.name, kind: entry.kind, role, lastError, replica, startedAt, replication, writer };
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.role = "stopping";
    clearTimeout(this.lockTimer);
    // Stopping on purpose: the kind stops while the lock is still held, then the lock goes with its session.
    this.writerLock.forget();
    this.writer.stopFencing();
    this.replication?.stop();
    const steps: [string, (() => Promise<void>) | undefined][] = [
      ["kind", this.instance && (() => this.stopInstance())],
      ["server", this.server && (() => (this.server as NodeServer).stop())],
      ["lock session", this.writerLock.hasSession ? async () => this.writerLock.drop() : undefined],
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
