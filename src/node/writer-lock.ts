import { toLockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { lockIdForDatabase, SessionLock } from "../storage/advisory-lock.ts";
import type { Db, DbSession } from "../storage/db.ts";

// The mechanics of the node's single-writer lock (docs/design.md §3): a dedicated database session
// holding a session advisory lock, asked whether it still holds it, and dropped when in doubt. Kept
// apart from NodeRuntime, which decides what a role change does; this only reports a loss (onLost),
// synchronously, so that the runtime revokes the kind's database view before anything else runs.

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

export interface WriterLockOptions {
  /** The node's database (opened before the first try of the lock). */
  db: () => Db;
  logger: Logger;
  /** The lock was held and is gone; called at once, before anything else runs. */
  onLost: (reason: string) => void;
}

/** The node's single-writer lock: its session, the lock in it, and whether this process holds it. */
export class WriterLock {
  private session: DbSession | undefined;
  private lock: SessionLock | undefined;
  /** Whether this process holds the lock (as far as it knows; stillHolding() asks the server). */
  private held = false;

  constructor(private readonly options: WriterLockOptions) {}

  get holding(): boolean {
    return this.held;
  }

  get hasSession(): boolean {
    return this.session !== undefined;
  }

  /** Takes the lock if free, opening its session first when there is none; never blocks. */
  async tryLock(): Promise<boolean> {
    const lock = this.lock ?? (await this.openSession());
    if (!(await lock.tryAcquire())) return false;
    // Its session broke meanwhile: the server dropped the lock with it.
    if (lock !== this.lock) return false;
    this.held = true;
    return true;
  }

  /** Asks the server whether this process still holds the lock; a loss is reported here (onLost). */
  async stillHolding(): Promise<boolean> {
    const lock = this.lock;
    if (!this.held || !lock) return false;
    const verdict = await verifyWithin(lock, LOCK_CHECK_TIMEOUT_MS);
    if (verdict === "held") return this.held;
    if (this.held && lock === this.lock) {
      // The session may still look alive (a silent network): drop it, so the lock cannot linger with us.
      this.drop();
      this.lose(verdict);
    }
    return false;
  }

  /** Counts a held lock as lost and reports it (onLost), once. */
  lose(reason: string): void {
    if (!this.held) return;
    this.held = false;
    this.options.onLost(reason);
  }

  /** Stops counting the lock as held without reporting a loss: the process stops or was fenced. */
  forget(): void {
    this.held = false;
  }

  /** Gives the lock up on purpose (switch-over); closing its session frees it should the unlock fail. */
  async release(): Promise<void> {
    const lock = this.lock;
    this.held = false;
    try {
      await lock?.release();
    } catch (error) {
      this.options.logger.warn({ err: error }, "unlock failed; closing the lock session frees it");
    }
    this.drop();
  }

  /** Closes the lock session (and with it the lock); the next try opens a new one. */
  drop(): void {
    this.session?.release(true);
    this.session = undefined;
    this.lock = undefined;
  }

  /** A dedicated connection for the lock, set up so that the server frees it soon after this process goes silent. */
  private async openSession(): Promise<SessionLock> {
    const db = this.options.db();
    const session = await db.session();
    session.onError((error) => this.sessionBroke(session, error));
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

  private sessionBroke(session: DbSession, error: Error): void {
    if (session !== this.session) return;
    this.drop();
    // A passive process opens a new session at its next try.
    this.lose(`its database session broke: ${error.message}`);
  }
}

/** "held", or why the lock counts as lost: the server says so, the check failed, or it went unanswered. */
async function verifyWithin(lock: SessionLock, timeoutMs: number): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  // When the timer fires, I/O gets one more turn before the verdict: after the event loop was busy
  // (a large request, a loaded host) timers run before pending socket reads, and an answer already
  // received must not count as "unanswered". The kernel keeps a busy process's session alive, so the
  // server has not freed the lock meanwhile.
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(
      () => setImmediate(() => resolve(`the lock check went unanswered for ${timeoutMs} ms`)),
      timeoutMs,
    );
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
