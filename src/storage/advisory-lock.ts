import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { DbSession } from "./db.ts";

/**
 * What each advisory lock guards, within one scope. Like Canton's DbLockCounter, the counter
 * sits in the low bits of the id so that the locks of one database never collide.
 */
export const LOCK_COUNTERS = {
  /** The node's single writer (docs/design.md §3). */
  nodeWriter: 1,
  /** Schema migrations (migrations.ts). */
  migrations: 2,
} as const;

/**
 * A stable advisory lock id for a scope, derived as Canton's DbLockId: bits 1–8 hold the counter,
 * bits 9–29 the first bytes of a SHA-256 of the scope, bit 30 is always set. The id is positive
 * and fits in 31 bits, so it is the same number whether PostgreSQL sees it as int4 or int8.
 */
export function lockIdFor(scope: string, counter: number): bigint {
  if (!Number.isInteger(counter) || counter < 1 || counter > 256) {
    throw new RangeError(`lock counter must be in 1..256, got ${counter}`);
  }
  const digest = createHash("sha256").update("lockstep-db-lock\0").update(scope, "utf8").digest();
  const scopeBits = digest.readInt32BE(0) & 0x1fffff00;
  return BigInt((counter - 1) | scopeBits | (1 << 29));
}

/** The single-writer lock id of a node's database, derived from the database's name. */
export function lockIdForDatabase(name: string): bigint {
  return lockIdFor(name, LOCK_COUNTERS.nodeWriter);
}

/**
 * A session-scoped advisory lock: held as long as the session's connection lives, so a crashed
 * or partitioned writer loses it with its connection, and a passive replica can take over.
 */
export class SessionLock {
  private held = false;

  constructor(
    private readonly session: DbSession,
    readonly id: bigint,
  ) {}

  /** Whether this object believes it holds the lock (see `verify` for the server's view). */
  get acquired(): boolean {
    return this.held;
  }

  /** Takes the lock if free; never blocks. Idempotent: a held lock is not taken twice. */
  async tryAcquire(): Promise<boolean> {
    if (this.held) return true;
    const row = await this.session.one<{ acquired: boolean }>(
      "SELECT pg_try_advisory_lock($1::bigint) AS acquired",
      [this.id],
    );
    this.held = row.acquired;
    return this.held;
  }

  /**
   * Polls until the lock is ours: a second process of the same node stays passive meanwhile.
   * Rejects with the signal's reason when aborted.
   */
  async waitUntilAcquired(pollMs = 1000, signal?: AbortSignal): Promise<void> {
    for (;;) {
      signal?.throwIfAborted();
      if (await this.tryAcquire()) return;
      try {
        await sleep(pollMs, undefined, { signal });
      } catch (error) {
        signal?.throwIfAborted(); // the signal's reason, not timers' AbortError
        throw error;
      }
    }
  }

  /** Whether the server still counts the lock as held by this session (false once the connection broke). */
  async verify(): Promise<boolean> {
    // A bigint advisory key shows in pg_locks split into classid (high 32 bits) and objid (low 32 bits).
    const row = await this.session.one<{ held: boolean }>(
      `SELECT EXISTS (
         SELECT 1 FROM pg_locks
          WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
            AND classid::bigint = ($1::bigint >> 32) AND objid::bigint = ($1::bigint & 4294967295)
       ) AS held`,
      [this.id],
    );
    this.held = row.held;
    return row.held;
  }

  /** Gives the lock up; a no-op when not held. */
  async release(): Promise<void> {
    if (!this.held) return;
    this.held = false;
    await this.session.query("SELECT pg_advisory_unlock($1::bigint)", [this.id]);
  }
}
