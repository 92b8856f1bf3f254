import type { Db, DbSession, Queryable, QueryOptions, SqlParam, Tx } from "./db.ts";

/**
 * A view of a Db that stops working the moment `assertCurrent` throws: every statement, and every
 * transaction's commit, checks it first. The node runtime hands one to each activation of a node kind
 * and revokes it when the process loses its single-writer lock, so the kind stops writing at once,
 * even in the middle of a transaction, instead of whenever its own stop() gets there.
 *
 * The process's own view can lag the server's (a lock session cut silently is noticed only when its
 * check goes unanswered), so `beforeCommit` lets the database itself refuse a stale writer's commit.
 *
 * The pool and its life stay with the runtime: close() here is a no-op.
 */
export function fencedDb(
  db: Db,
  assertCurrent: () => void,
  /** Run in each writing transaction just before its commit; throwing rolls it back. */
  beforeCommit?: (tx: Tx) => Promise<void>,
  /**
   * The transactions under way, each until it committed or rolled back: whoever revokes the view
   * can wait for them (settled), so that nothing it let through commits after it answered.
   */
  underWay?: Set<Promise<unknown>>,
): Db {
  return {
    database: db.database,
    ...fenced(db, assertCurrent),
    transaction: (fn, options) => {
      const running = db.transaction(async (tx: Tx) => {
        assertCurrent();
        const result = await fn(fenced(tx, assertCurrent));
        // Throwing here rolls back: no commit after the lock is gone.
        assertCurrent();
        if (beforeCommit && !options?.readOnly) {
          await beforeCommit(tx);
          assertCurrent(); // revoked while the check ran
        }
        return result;
      }, options);
      if (underWay) {
        underWay.add(running);
        const done = () => underWay.delete(running);
        running.then(done, done);
      }
      return running;
    },
    async session(): Promise<DbSession> {
      assertCurrent();
      const session = await db.session();
      return {
        ...fenced(session, assertCurrent),
        listen: async (channel, onNotify) => {
          assertCurrent();
          return session.listen(channel, onNotify);
        },
        onError: (handler) => session.onError(handler),
        release: (destroy) => session.release(destroy),
      };
    },
    close: async () => {},
  };
}

function fenced(target: Queryable, assertCurrent: () => void): Queryable {
  // async: a refused call rejects (callers may .catch() it) rather than throw synchronously.
  return {
    async query<R extends object>(sql: string, params?: readonly SqlParam[], options?: QueryOptions) {
      assertCurrent();
      return target.query<R>(sql, params, options);
    },
    async one<R extends object>(sql: string, params?: readonly SqlParam[]) {
      assertCurrent();
      return target.one<R>(sql, params);
    },
    async maybeOne<R extends object>(sql: string, params?: readonly SqlParam[]) {
      assertCurrent();
      return target.maybeOne<R>(sql, params);
    },
    async execute(sql: string, params?: readonly SqlParam[]) {
      assertCurrent();
      return target.execute(sql, params);
    },
  };
}

/**
 * Resolves once every transaction under way has committed or rolled back, or after `capMs` (a
 * statement the server does not answer must not hold up the caller for ever).
 */
export async function settled(underWay: ReadonlySet<Promise<unknown>>, capMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const cap = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, capMs);
  });
  try {
    await Promise.race([Promise.allSettled([...underWay]), cap]);
  } finally {
    clearTimeout(timer);
  }
}
