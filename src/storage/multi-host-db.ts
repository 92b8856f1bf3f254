import { setTimeout as sleep } from "node:timers/promises";
import { LockstepError } from "../common/errors.ts";
import { type Logger, silentLogger } from "../common/logging.ts";
import type { Db, DbSession, Queryable, QueryOptions, SqlParam, Tx } from "./db.ts";
import {
  effectiveDatabase,
  type HostAddress,
  hostLabel,
  isSingleServerUrl,
  needsReadWrite,
  parseMultiHostUrl,
  singleHostUrl,
} from "./multi-host.ts";

/** Options of createMultiHostDb (and writableServerUrl). */
export interface MultiHostDbOptions {
  /** The libpq-style URL, e.g. postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write. */
  url: string;
  /** Opens one server from its single-host URL (multi-host.ts singleHostUrl): the driver, e.g. createPgDb. */
  open: (connectionString: string) => Db;
  logger?: Logger;
  /** How long one host may take to answer a probe; default the URL's connect_timeout, else 3 s. */
  probeTimeoutMs?: number;
  /** How long a call waits for a server that accepts writes before DB_CONNECTION_LOST; default 30 s. */
  leaderWaitMs?: number;
  /** Pause between probe rounds while no server qualifies; default 500 ms. */
  probeIntervalMs?: number;
}

const DEFAULT_PROBE_TIMEOUT_MS = 3000;
const DEFAULT_LEADER_WAIT_MS = 30_000;
const DEFAULT_PROBE_INTERVAL_MS = 500;

/** SQLSTATEs of a server going away or refusing writes: the server to use may have changed. */
const LOST_SQLSTATES = new Set([
  "25006", // read_only_sql_transaction: a standby, or a demoted leader
  "57P01", // admin_shutdown (also: unexpected postmaster exit)
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now: starting up, shutting down, in recovery
  "08000",
  "08001",
  "08003",
  "08004",
  "08006",
  "08P01",
]);
/** Socket errors of a lost or unreachable server. */
const LOST_ERRNOS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);
/** node-postgres reports a closed connection by message only. */
const LOST_MESSAGE =
  /Connection terminated|Connection ended|connection is closed|connection error and is not queryable|timeout expired|session connection closed/i;

/** Whether this error itself (not its causes) says the connection to the server was lost. */
export function isConnectionLoss(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error instanceof LockstepError) return error.code === "DB_CONNECTION_LOST";
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && (LOST_SQLSTATES.has(code) || LOST_ERRNOS.has(code))) return true;
  return LOST_MESSAGE.test(error.message);
}

/** Whether the error or one of its causes is a connection loss (handlers wrap the driver's errors). */
function involvesConnectionLoss(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    if (isConnectionLoss(current)) return true;
    current = current.cause;
  }
  return false;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

interface Server {
  address: HostAddress;
  label: string;
  db: Db;
  /** The sessions opened on it, told when it is given up. */
  sessions: Set<{ giveUp(error: LockstepError): void }>;
}

interface Finder {
  readonly database: string;
  readonly servers: string;
  readonly readWrite: boolean;
  lost(reason: string, cause?: unknown): LockstepError;
  /** Opens one host and checks it qualifies; its Db when it does, else why not. */
  probe(address: HostAddress): Promise<{ db: Db } | { problem: string }>;
  /** Probes until a host qualifies (up to leaderWaitMs, then DB_CONNECTION_LOST); `stop` ends early. */
  find(stop: () => boolean): Promise<Server>;
}

function serverFinder(options: MultiHostDbOptions, log: Logger): Finder {
  const url = parseMultiHostUrl(options.url);
  const readWrite = needsReadWrite(url);
  const probeTimeoutMs =
    options.probeTimeoutMs ??
    (url.connectTimeoutSeconds ? url.connectTimeoutSeconds * 1000 : DEFAULT_PROBE_TIMEOUT_MS);
  const leaderWaitMs = options.leaderWaitMs ?? DEFAULT_LEADER_WAIT_MS;
  const probeIntervalMs = options.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS;
  const database = effectiveDatabase(url);
  const servers = url.hosts.map(hostLabel).join(",");
  const lost = (reason: string, cause?: unknown) =>
    new LockstepError("DB_CONNECTION_LOST", { database, servers, reason }, { cause });

  const probe = async (address: HostAddress): Promise<{ db: Db } | { problem: string }> => {
    const label = hostLabel(address);
    const db = options.open(singleHostUrl(url, address));
    const connecting = db.session();
    try {
      const session = await withTimeout(connecting, probeTimeoutMs, label);
      try {
        if (readWrite) {
          // libpq's read-write check (transaction_read_only) and its primary check (recovery), both.
          const row = await withTimeout(
            session.one<{ recovery: boolean; read_only: string }>(
              "SELECT pg_is_in_recovery() AS recovery, current_setting('transaction_read_only') AS read_only",
            ),
            probeTimeoutMs,
            label,
          );
          if (row.recovery) throw new Error("a standby (in recovery)");
          if (row.read_only !== "off") throw new Error("read-only (transaction_read_only is on)");
        }
      } finally {
        session.release(true);
      }
      return { db };
    } catch (error) {
      // A connection that completes after the timeout must not stay open.
      connecting.then(
        (late) => late.release(true),
        () => {},
      );
      await db.close().catch(() => {});
      return { problem: `${label}: ${messageOf(error)}` };
    }
  };

  /** Probes every host at once; the first qualifying in the URL's order wins, the others are closed. */
  const probeRound = async (): Promise<Server | { problems: string }> => {
    const results = await Promise.all(url.hosts.map(probe));
    let chosen: Server | undefined;
    const problems: string[] = [];
    for (const [i, result] of results.entries()) {
      if ("problem" in result) {
        problems.push(result.problem);
      } else if (chosen) {
        await result.db.close().catch(() => {});
      } else {
        const address = url.hosts[i] as HostAddress;
        chosen = { address, label: hostLabel(address), db: result.db, sessions: new Set() };
      }
    }
    return chosen ?? { problems: problems.join("; ") };
  };

  const find = async (stop: () => boolean): Promise<Server> => {
    const deadline = Date.now() + leaderWaitMs;
    for (let round = 0; ; round++) {
      const found = await probeRound();
      if (!("problems" in found)) {
        log.info({ server: found.label, database }, "using the database server that accepts writes");
        return found;
      }
      if (round === 0)
        log.warn({ database, problems: found.problems }, "no database server accepts writes yet");
      if (stop() || Date.now() + probeIntervalMs > deadline) {
        throw lost(`no server ${readWrite ? "accepts writes" : "answers"} (${found.problems})`);
      }
      await sleep(probeIntervalMs);
    }
  };

  return { database, servers, readWrite, lost, probe, find };
}

/**
 * For one-shot tools that hand a URL to other programs or raw clients (restore): the single-host
 * URL of the server that accepts writes now, waiting for one as the Db does. A single-server URL is
 * returned unchanged.
 */
export async function writableServerUrl(options: MultiHostDbOptions): Promise<string> {
  const url = parseMultiHostUrl(options.url);
  if (isSingleServerUrl(url)) return options.url;
  const found = await serverFinder(options, options.logger ?? silentLogger("multi-host-db")).find(
    () => false,
  );
  await found.db.close().catch(() => {});
  return singleHostUrl(url, found.address);
}

/**
 * A `Db` over the servers of a libpq multi-host URL (a Patroni cluster) that follows the one
 * accepting writes, around any single-server driver (kysely style: the driver opens one server,
 * this wrapper adds the choice of server).
 *
 * * On first use, and after a connection to the current server fails in a way a fail-over causes
 *   (refused, reset, administrator shutdown, `cannot execute … in a read-only transaction`), it probes
 *   every host (each within a short timeout) and routes new connections and sessions to the first one,
 *   in the URL's order, that is not in recovery and not read-only (`target_session_attrs=read-write`
 *   or `primary`; with `any`, the first that answers). While none does (Patroni has not promoted yet)
 *   calls wait for one, up to `leaderWaitMs`.
 * * A statement or transaction that was in flight on the lost server fails with DB_CONNECTION_LOST
 *   (retryable): its outcome is unknown, so only the caller may decide to run it again. A statement
 *   whose connection was refused, and a transaction that failed before its function ran (connecting
 *   or BEGIN), go to the new server instead: nothing of them ran.
 * * Sessions opened on a server that is given up report DB_CONNECTION_LOST through onError, if the
 *   server did not already break them: a session-scoped advisory lock held there guards nothing once
 *   another server accepts writes, so the node runtime must take it again (through session(), on the
 *   new server).
 */
export function createMultiHostDb(options: MultiHostDbOptions): Db {
  const log = options.logger ?? silentLogger("multi-host-db");
  const finder = serverFinder(options, log);
  const { database, lost } = finder;
  const leaderWaitMs = options.leaderWaitMs ?? DEFAULT_LEADER_WAIT_MS;
  const probeIntervalMs = options.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS;

  let current: Server | undefined;
  let finding: Promise<Server> | undefined;
  let checking: Promise<void> | undefined;
  let closed = false;

  const server = async (): Promise<Server> => {
    if (closed) throw new LockstepError("INTERNAL_ERROR", { details: "database used after close()" });
    if (checking) await checking;
    if (current) return current;
    finding ??= finder
      .find(() => closed)
      .then(async (found) => {
        if (closed) {
          await found.db.close().catch(() => {});
          throw new LockstepError("INTERNAL_ERROR", { details: "database used after close()" });
        }
        current = found;
        return found;
      })
      .finally(() => {
        finding = undefined;
      });
    return finding;
  };

  /** Stops using a server: its sessions are told, its pool closed; the next call finds the new one. */
  const giveUp = (from: Server, reason: string) => {
    if (current !== from) return;
    current = undefined;
    log.warn({ server: from.label, database, reason }, "database server given up: following the new one");
    const error = lost(`${from.label} was given up: ${reason}`);
    for (const session of [...from.sessions]) session.giveUp(error);
    from.db
      .close()
      .catch((closeError: unknown) => log.warn({ err: closeError }, "closing a given-up pool failed"));
  };

  /**
   * A connection to `from` failed as a fail-over makes it fail: probe that server again, alone, and
   * give it up unless it still qualifies (a reset connection alone does not move the node).
   */
  const suspect = (from: Server, error: unknown) => {
    if (current !== from || checking || closed) return;
    checking = (async () => {
      const again = await finder.probe(from.address);
      if ("db" in again) {
        await again.db.close().catch(() => {});
        return;
      }
      giveUp(from, `${messageOf(error)}; probed again: ${again.problem}`);
    })()
      .catch((probeError: unknown) => log.warn({ err: probeError }, "probing the database server failed"))
      .finally(() => {
        checking = undefined;
      });
  };

  /** The caller's error, with a connection loss on `from` noted and reported as DB_CONNECTION_LOST. */
  const translate = (from: Server, error: unknown): unknown => {
    if (!involvesConnectionLoss(error)) return error;
    suspect(from, error);
    if (error instanceof LockstepError || !isConnectionLoss(error)) return error;
    return lost(`${from.label}: ${messageOf(error)}`, error);
  };

  /** Connection failures that prove nothing was sent: the call may go to the next server. */
  const neverSent = (error: unknown) => {
    const code = (error as { code?: unknown }).code;
    return code === "ECONNREFUSED" || code === "57P03" || code === "ENOTFOUND" || code === "EHOSTUNREACH";
  };

  /** Runs `fn` on the current server; again on the next one while the server refused the connection. */
  const run = async <T>(
    fn: (at: Server) => Promise<T>,
    mayRetry: (error: unknown) => boolean,
  ): Promise<T> => {
    const deadline = Date.now() + leaderWaitMs;
    for (;;) {
      const at = await server();
      try {
        return await fn(at);
      } catch (error) {
        const loss = involvesConnectionLoss(error);
        const translated = translate(at, error);
        if (!loss || !mayRetry(error) || Date.now() > deadline) throw translated;
        await (checking ?? sleep(probeIntervalMs));
      }
    }
  };

  const queryable: Queryable = {
    query: <R extends object>(sql: string, params?: readonly SqlParam[], queryOptions?: QueryOptions) =>
      run(({ db }) => db.query<R>(sql, params, queryOptions), neverSent),
    one: <R extends object>(sql: string, params?: readonly SqlParam[]) =>
      run(({ db }) => db.one<R>(sql, params), neverSent),
    maybeOne: <R extends object>(sql: string, params?: readonly SqlParam[]) =>
      run(({ db }) => db.maybeOne<R>(sql, params), neverSent),
    execute: (sql: string, params?: readonly SqlParam[]) =>
      run(({ db }) => db.execute(sql, params), neverSent),
  };

  return {
    database,
    ...queryable,

    transaction<T>(fn: (tx: Tx) => Promise<T>, txOptions?: Parameters<Db["transaction"]>[1]): Promise<T> {
      let started = false;
      return run(
        ({ db }) =>
          db.transaction((tx) => {
            started = true;
            return fn(tx);
          }, txOptions),
        // Before fn ran only connecting or BEGIN can have failed: nothing of the caller's was sent.
        () => !started,
      );
    },

    async session(): Promise<DbSession> {
      // Opening a session sends nothing of the caller's: retried on the next server until it opens.
      const givenUp = (at: Server) => lost(`${at.label} was given up while the session opened`);
      return run(async (at) => {
        if (current !== at) throw givenUp(at);
        const inner = await at.db.session();
        // Given up while connecting: its sessions were told already, this one would be missed.
        if (current !== at) {
          inner.release(true);
          throw givenUp(at);
        }
        return leaderSession(at, inner, (error) => translate(at, error));
      }, isConnectionLoss);
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await finding?.catch(() => {});
      const last = current;
      current = undefined;
      await last?.db.close();
    },
  };
}

/** A session on one server: errors translated, and told (as a broken connection) when the server is given up. */
function leaderSession(at: Server, inner: DbSession, translate: (error: unknown) => unknown): DbSession {
  const handlers: ((error: Error) => void)[] = [];
  let reported: Error | undefined;
  let released = false;
  let givenUp: LockstepError | undefined;
  const report = (error: Error) => {
    if (released || reported) return;
    reported = error;
    for (const handler of handlers) handler(error);
  };
  const member = {
    giveUp(error: LockstepError) {
      givenUp = error;
      report(error);
      inner.release(true);
    },
  };
  at.sessions.add(member);
  inner.onError((error) => {
    const translated = translate(error);
    report(translated instanceof Error ? translated : error);
  });
  const call = async <T>(fn: () => Promise<T>): Promise<T> => {
    if (givenUp) throw givenUp;
    try {
      return await fn();
    } catch (error) {
      throw translate(error);
    }
  };
  return {
    query: <R extends object>(sql: string, params?: readonly SqlParam[], options?: QueryOptions) =>
      call(() => inner.query<R>(sql, params, options)),
    one: <R extends object>(sql: string, params?: readonly SqlParam[]) =>
      call(() => inner.one<R>(sql, params)),
    maybeOne: <R extends object>(sql: string, params?: readonly SqlParam[]) =>
      call(() => inner.maybeOne<R>(sql, params)),
    execute: (sql: string, params?: readonly SqlParam[]) => call(() => inner.execute(sql, params)),
    listen: (channel, onNotify) => call(() => inner.listen(channel, onNotify)),
    onError(handler) {
      handlers.push(handler);
      if (reported) handler(reported);
    },
    release(destroy?: boolean) {
      if (released) return;
      released = true;
      at.sessions.delete(member);
      if (!givenUp) inner.release(destroy);
    },
  };
}
