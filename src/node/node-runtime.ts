import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { ERRORS, type ErrorCodeName } from "../common/error-codes.ts";
import type { ErrorJson } from "../common/errors.ts";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { nodeEndpoint, processAddress } from "../common/node-endpoint.ts";
import type { NodeIdentity, NodeKindDefinition, NodeKindRuntime } from "../common/node-kind.ts";
import { LOCKSTEP_VERSION } from "../common/version.ts";
import { AdminService, type FenceWriterRequest } from "../gen/lockstep/admin/v1/admin_pb.ts";
import { lockIdForDatabase, SessionLock } from "../storage/advisory-lock.ts";
import type { Db, DbSession } from "../storage/db.ts";
import { fencedDb } from "../storage/fenced-db.ts";
import { runMigrations } from "../storage/migrations.ts";
import { adminServiceRoutes } from "./admin-service.ts";
import { adminClient } from "./clients.ts";
import type { HealthReport } from "./health.ts";
import { KindRoutes } from "./kind-routes.ts";
import { openNodeDatabase } from "./node-database.ts";
import { NodeServer } from "./node-server.ts";
import {
  bumpWriterEpoch,
  databaseWriterEpoch,
  ensureNodeState,
  fenceSecret,
  nodeStateMigrations,
  type PreviousActivation,
  raiseWriterEpochAbove,
  unverifiedWriterEpoch,
} from "./node-state.ts";
import { ReplicationMonitor } from "./replication-monitor.ts";
import { type FenceOutcome, receiveFence, WriterFencer } from "./writer-fencing.ts";

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
  /** How often a passive process tries to take the single-writer lock (default 250 ms, ±20 % jitter). */
  lockPollMs?: number;
  /** How often the active process checks it still holds the lock (default 100 ms, at most half of lockPollMs). */
  lockCheckMs?: number;
}

/**
 * A check of the lock unanswered for this long counts as a lost lock. It must stay below the time the
 * server takes to free the lock of a silent client (LOCK_SESSION_SETTINGS), so that an active process
 * cut off from its database has stopped writing before a passive one can take over.
 */
const LOCK_CHECK_TIMEOUT_MS = 2000;

/**
 * Server-side settings of the lock session: the server notices a client that went silent (host down,
 * network cut) after about 4 s — keepalive probes after 2 s idle, 1 s apart, 2 unanswered; unacknowledged
 * data after tcp_user_timeout — and frees its lock, later than the active's own check gives up
 * (LOCK_CHECK_TIMEOUT_MS). Ignored on Unix-domain sockets, where the kernel reports a dead peer at once.
 */
const LOCK_SESSION_SETTINGS: Record<string, string> = {
  tcp_keepalives_idle: "2",
  tcp_keepalives_interval: "1",
  tcp_keepalives_count: "2",
  tcp_user_timeout: "4000",
  statement_timeout: "5000",
};

/** One activation's node kind, with its own view of the database that is revoked when the lock goes. */
interface KindInstance {
  kind: NodeKindRuntime;
  fence: { revoked: boolean };
  activated: boolean;
  stopping?: Promise<void>;
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
  /** Each replication finding as JSON `{kind, message, remedy}` (replication-monitor.ts). */
  replicationFindings: string[];
  lastError?: { code: string; message: string; remedy: string };
  pid: number;
  startedAt: string;
  version: string;
  replica: string;
  fencingJson: string;
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
  private lock: SessionLock | undefined;
  /** Whether this process holds the single-writer lock (as far as it knows; checkLock() asks the server). */
  private holding = false;
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
  /** Writer fencing (writer-fencing.ts): the secret, this process's address, its own activation, its fencer. */
  private fenceSecret: Buffer | undefined;
  private address = "";
  private activatedHere: string | undefined;
  private fencer: WriterFencer | undefined;
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

  /** The current kind instance (the one the server's routes reach). */
  private get kind(): NodeKindRuntime | undefined {
    return this.instance?.kind;
  }

  /** Resolves once the node stopped, however that happened (stop(), Admin Shutdown). */
  whenStopped(): Promise<void> {
    return this.stopped;
  }

  async start(): Promise<void> {
    const { entry, definition } = this.options;
    try {
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
      this.identity = await ensureNodeState(db, entry.name, entry.kind);
      this.fenceSecret = await fenceSecret(db);
      this.instance = this.createInstance();
      const kind = this.instance.kind;
      this.server = new NodeServer({
        node: entry.name,
        port: this.options.port ?? entry.port,
        host: nodeEndpoint(entry).bindHost,
        logger: this.log,
        health: () => this.health(),
        interceptors: [(next) => (request) => this.guardPassive(request.service.typeName, next, request)],
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
      this.address = processAddress(entry, this.port);
      this.log.info({ port: this.port }, "serving");
      await this.transition(() => this.takeLockOrWait());
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
  private async settleWriterEpoch(db: Db, sequencerRecord: () => Promise<bigint>): Promise<void> {
    const recoveryId = await unverifiedWriterEpoch(db);
    if (recoveryId === undefined) return;
    const record = await sequencerRecord();
    this.identity = await raiseWriterEpochAbove(db, recoveryId, record);
    this.activatedHere = this.identity.writerActivation;
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
    if (service === ADMIN_SERVICE) return next(request) as never;
    return next(request).catch((error: unknown) => this.passiveIfLockLost(error)) as never;
  }

  /**
   * A call that failed because this process just lost its database connection, and with it the lock,
   * is answered NODE_PASSIVE (retryable: send it to the active process; a command id makes that safe)
   * rather than INTERNAL_ERROR. The loss may not be noticed yet, so an unexpected error asks the server.
   */
  private async passiveIfLockLost(error: unknown): Promise<never> {
    // Only errors a lost connection may cause: unexpected ones, and DB_CONNECTION_LOST (multi-host URLs).
    const code = error instanceof LockstepError ? error.code : undefined;
    if (code !== undefined && code !== "INTERNAL_ERROR" && code !== "DB_CONNECTION_LOST") throw error;
    if (this.holding) await this.stillHolding();
    if (this.role === "passive") throw new LockstepError("NODE_PASSIVE", { node: this.name });
    throw error;
  }

  /**
   * Single writer (docs/design.md §3): the session advisory lock decides active or passive. Runs as a
   * transition, so that a loss noticed during the first activation is handled after it.
   */
  private async takeLockOrWait(): Promise<void> {
    if (await this.tryLock()) {
      await this.activate();
      return;
    }
    this.role = "passive";
    this.log.info("another process holds the node's lock: passive until it frees");
    this.schedulePoll();
  }

  /** A dedicated connection for the lock, set up so that the server frees it soon after this process goes silent. */
  private async openLockSession(): Promise<SessionLock> {
    const db = this.db as Db;
    const session = await db.session();
    session.onError((error) => this.lockSessionBroke(session, error));
    try {
      const names = Object.keys(LOCK_SESSION_SETTINGS);
      await session.query(
        `SELECT ${names.map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, false)`).join(", ")}`,
        names.flatMap((name) => [name, LOCK_SESSION_SETTINGS[name] as string]),
      );
    } catch (error) {
      session.release(true);
      throw error;
    }
    this.session = session;
    this.lock = new SessionLock(session, lockIdForDatabase(db.database));
    return this.lock;
  }

  private async tryLock(): Promise<boolean> {
    const lock = this.lock ?? (await this.openLockSession());
    if (!(await lock.tryAcquire())) return false;
    // Its session broke meanwhile: the server dropped the lock with it.
    if (lock !== this.lock) return false;
    this.holding = true;
    return true;
  }

  private lockSessionBroke(session: DbSession, error: Error): void {
    if (session !== this.session) return;
    this.dropLockSession();
    // A passive process opens a new session at its next try.
    if (this.holding) this.lockLost(`its database session broke: ${error.message}`);
  }

  private dropLockSession(): void {
    this.session?.release(true);
    this.session = undefined;
    this.lock = undefined;
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
      if (await this.tryLock()) {
        await this.activate();
        return;
      }
    } catch (error) {
      if (this.holding) {
        // The activation failed before the kind started (e.g. the epoch bump): give the lock up.
        this.lockLost(`activation failed: ${toLockstepError(error).message}`);
        return;
      }
      // The database is unreachable or restarting: stay passive and try again.
      this.log.warn({ err: error }, "could not try the node's lock; trying again");
      this.dropLockSession();
    }
    this.schedulePoll();
  }

  /** Holding the lock: bump the writer epoch, then activate a kind instance that has not run yet. */
  private async activate(): Promise<void> {
    // From here on the lock is checked, and a loss fences whatever this activation started.
    this.scheduleCheck();
    const { previous, ...identity } = await bumpWriterEpoch(this.db as Db, this.address);
    this.identity = identity;
    this.activatedHere = identity.writerActivation;
    if (!this.holding || this.isStopping()) return;
    const instance = this.freshInstance();
    this.fencePrevious(previous, instance);
    this.log.info({ writerEpoch: this.identity.writerEpoch.toString() }, "active");
    try {
      instance.activated = true;
      await instance.kind.activate();
    } catch (error) {
      if (!instance.fence.revoked) this.fail(toLockstepError(error).toJSON());
      return;
    }
    if (this.holding && !instance.fence.revoked && !this.isStopping()) this.role = "active";
  }

  /**
   * A kind instance with its own fenced view of the database (fenced-db.ts): once revoked, every
   * statement and commit it tries fails with NODE_PASSIVE, and the failures it reports are not the node's.
   */
  private createInstance(): KindInstance {
    const { entry, definition, config, dataDir } = this.options;
    const fence = { revoked: false };
    const db = fencedDb(this.db as Db, () => {
      if (fence.revoked) throw new LockstepError("NODE_PASSIVE", { node: entry.name });
    });
    const kind = definition.create({
      entry,
      config,
      db,
      logger: this.log,
      dataDir,
      identity: () => this.requireIdentity(),
      settleWriterEpoch: (sequencerRecord) => this.settleWriterEpoch(db, sequencerRecord),
      fail: (error) => {
        if (fence.revoked) this.log.info({ code: error.code }, "a fenced activation stopped on its fence");
        else void this.failUnlessLockLost(fence, error);
      },
    });
    return { kind, fence, activated: false };
  }

  /**
   * A kind stopping on a database error may be the first to see a lost connection (its pool's break
   * too, and may be reported before the lock session's): ask the server about the lock first, so
   * that a process that lost it goes passive, as it should, instead of failed.
   */
  private async failUnlessLockLost(fence: KindInstance["fence"], error: ErrorJson): Promise<void> {
    if (this.holding) await this.stillHolding();
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

  private stopInstance(): Promise<void> {
    const instance = this.instance;
    if (!instance) return Promise.resolve();
    instance.stopping ??= instance.kind
      .stop()
      .catch((error) => this.log.warn({ err: error }, "stopping the node kind failed"));
    return instance.stopping;
  }

  /** Active: check the lock more often than passives try it, so that a loss is noticed first here. */
  private scheduleCheck(): void {
    clearTimeout(this.lockTimer);
    this.lockTimer = setTimeout(() => void this.checkLock(), this.checkMs);
  }

  private async checkLock(): Promise<void> {
    if (this.holding && (await this.stillHolding())) this.scheduleCheck();
  }

  /** Asks the server whether this process still holds the lock; a loss is handled here (lockLost). */
  private async stillHolding(): Promise<boolean> {
    const lock = this.lock;
    if (!this.holding || !lock) return false;
    const verdict = await verifyWithin(lock, LOCK_CHECK_TIMEOUT_MS);
    if (verdict === "held") return this.holding;
    if (this.holding && lock === this.lock) {
      // The session may still look alive (a silent network): drop it, so the lock cannot linger with us.
      this.dropLockSession();
      this.lockLost(verdict);
    }
    return false;
  }

  /**
   * The lock is gone (its session broke, or the check failed or went unanswered). Stop writing at once:
   * the kind's database view refuses every further statement and commit, and its services answer
   * NODE_PASSIVE. Then stop the kind and, after a hold-off that lets another process take over first,
   * try the lock again as a passive process. A failed node stays failed.
   */
  private lockLost(reason: string): void {
    if (!this.holding) return;
    this.holding = false;
    clearTimeout(this.lockTimer);
    if (this.instance) this.instance.fence.revoked = true;
    if (this.role === "active" || this.role === "starting") this.role = "passive";
    this.log.error({ reason }, "lost the node's database lock: stopped writing; passive");
    this.transition(() => this.demote()).catch((error) => this.log.error({ err: error }, "demotion failed"));
  }

  private async demote(): Promise<void> {
    await this.stopInstance();
    this.dropLockSession();
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
      const lock = this.lock;
      this.holding = false;
      try {
        await lock?.release();
      } catch (error) {
        this.log.warn({ err: error }, "unlock failed; closing the lock session frees it");
      }
      this.dropLockSession();
      this.log.info("switch-over: lock released; passive");
      if (this.role === "passive") this.schedulePoll(this.holdoffMs);
      return { writerEpoch: this.identity?.writerEpoch ?? 0n };
    });
  }

  /**
   * Tells the process of the activation this one replaced that it is stale, when it ran elsewhere
   * (another address: another host, site, or replica port), in the background (writer-fencing.ts).
   */
  private fencePrevious(previous: PreviousActivation, instance: KindInstance): void {
    this.fencer?.stop();
    this.fencer = undefined;
    if (!previous.activation || !previous.endpoint || previous.endpoint === this.address) return;
    const identity = this.requireIdentity();
    const [host, port] = splitAddress(previous.endpoint);
    this.fencer = new WriterFencer({
      notice: {
        node: this.name,
        targetActivation: previous.activation,
        writerEpoch: identity.writerEpoch,
        writerActivation: identity.writerActivation,
        writerEndpoint: this.address,
      },
      secret: this.fenceSecret as Buffer,
      target: previous.endpoint,
      client: adminClient(port, host),
      logger: this.log,
      current: () => !instance.fence.revoked && !this.isStopping() && this.role !== "failed",
    });
    void this.fencer.start();
  }

  /**
   * A FenceWriter notice from a newer activation of this node. When it judges this process stale,
   * the process stops writing at once (its kind's database view is revoked, the lock session
   * dropped) and fails with STALE_WRITER_EPOCH; it never tries the lock again.
   */
  async fenceWriter(request: FenceWriterRequest): Promise<{ outcome: FenceOutcome }> {
    const { outcome, notice, databaseEpoch } = await receiveFence(
      request,
      { node: this.name, secret: this.fenceSecret, activation: this.activatedHere },
      () => databaseWriterEpoch(this.db as Db),
    );
    this.log.info(
      {
        outcome,
        from: notice.writerEndpoint,
        epoch: notice.writerEpoch.toString(),
        databaseEpoch: databaseEpoch?.toString(),
      },
      "fence notice from a newer activation of this node",
    );
    if (outcome !== "fenced" || this.role === "failed" || this.isStopping()) return { outcome };
    clearTimeout(this.lockTimer);
    if (this.instance) this.instance.fence.revoked = true;
    this.holding = false;
    this.fencer?.stop();
    this.dropLockSession();
    const own = this.identity?.writerEpoch ?? 0n;
    this.fail(
      new LockstepError("STALE_WRITER_EPOCH", {
        member: this.name,
        epoch: own.toString(),
        current: `${notice.writerEpoch} (the activation at ${notice.writerEndpoint})`,
      }).toJSON(),
    );
    void this.stopInstance();
    return { outcome };
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
      replicationFindings: this.replication?.statusFindings() ?? [],
      lastError: this.lastError
        ? { code: this.lastError.code, message: this.lastError.message, remedy: this.lastError.remedy }
        : undefined,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      version: LOCKSTEP_VERSION,
      replica: this.options.replica ?? "",
      fencingJson: this.fencer ? JSON.stringify(this.fencer.report()) : "",
    };
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.role = "stopping";
    clearTimeout(this.lockTimer);
    // Stopping on purpose: the kind stops while the lock is still held, then the lock goes with its session.
    this.holding = false;
    this.fencer?.stop();
    this.replication?.stop();
    const steps: [string, (() => Promise<void>) | undefined][] = [
      ["kind", this.instance && (() => this.stopInstance())],
      ["server", this.server && (() => (this.server as NodeServer).stop())],
      ["lock session", this.session && (async () => this.dropLockSession())],
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

/** "held", or why the lock counts as lost: the server says so, the check failed, or it went unanswered. */
async function verifyWithin(lock: SessionLock, timeoutMs: number): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`the lock check went unanswered for ${timeoutMs} ms`), timeoutMs);
  });
  const check = lock.verify().then(
    (held) => (held ? "held" : "the database no longer counts the lock as this process's"),
    (error: unknown) => `the lock check failed: ${toLockstepError(error).message}`,
  );
  try {
    return await Promise.race([check, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** `host:port` (IPv6 in brackets) as processAddress writes it. */
function splitAddress(address: string): [string, number] {
  const at = address.lastIndexOf(":");
  const host = address.slice(0, at).replace(/^\[(.*)\]$/, "$1");
  return [host, Number(address.slice(at + 1))];
}
