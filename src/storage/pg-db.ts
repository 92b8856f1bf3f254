import pg from "pg";
import { LockstepError } from "../common/errors.ts";
import { type Logger, silentLogger } from "../common/logging.ts";
import type { Db, DbSession, Queryable, QueryOptions, SqlParam, TransactionOptions, Tx } from "./db.ts";

export interface PgDbOptions {
  connectionString: string;
  /** Pool size; sessions are extra connections outside the pool. */
  max?: number;
  applicationName?: string;
  /** Where idle-connection errors go (they must not crash the process). */
  logger?: Logger;
}

const INT8_OID = 20;
const SESSION_CONNECT_TIMEOUT_MS = 10_000;
const INT8_ARRAY_OID: number = 1016; // not in pg-types' TypeId enum

function toBigIntArray(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(toBigIntArray);
  return typeof value === "string" ? BigInt(value) : value;
}

/**
 * Per-pool type parsers (not the global `pg.types`, which other code in the process may rely on):
 * int8 arrives as bigint, so ledger offsets and microsecond timestamps never lose precision.
 */
const lockstepTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") => {
    if (format !== "binary") {
      if (oid === INT8_OID) return (value: string) => BigInt(value);
      if (oid === INT8_ARRAY_OID) {
        const parseArray = pg.types.getTypeParser(INT8_ARRAY_OID, "text") as (value: string) => unknown;
        return (value: string) => toBigIntArray(parseArray(value));
      }
    }
    return pg.types.getTypeParser(oid, format ?? "text");
  }) as pg.CustomTypesConfig["getTypeParser"],
};

function bigintToString(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/**
 * pg sends top-level bigints and arrays of them as text, but JSON.stringify (used for plain
 * objects → json/jsonb) throws on bigint; serialize those here with bigints as strings.
 */
function prepareParam(param: SqlParam): unknown {
  if (param === null || typeof param !== "object") return param;
  if (Array.isArray(param) || ArrayBuffer.isView(param) || param instanceof Date) return param;
  if (typeof (param as { toPostgres?: unknown }).toPostgres === "function") return param;
  return JSON.stringify(param, bigintToString);
}

function prepareParams(params: readonly SqlParam[] | undefined): unknown[] | undefined {
  return params?.map(prepareParam);
}

function firstLine(sql: string): string {
  const line = sql.trim().split("\n")[0] ?? "";
  return line.length > 120 ? `${line.slice(0, 117)}...` : line;
}

interface PgQueryTarget {
  query(config: pg.QueryConfig): Promise<pg.QueryResult>;
}

/** The Queryable methods over anything that runs a query; `guard` refuses use after the end of life. */
function queryable(target: PgQueryTarget, guard: () => void = () => {}): Queryable {
  const run = async (sql: string, params?: readonly SqlParam[], options?: QueryOptions) => {
    guard();
    return target.query({
      text: sql,
      values: prepareParams(params),
      ...(options?.prepare ? { name: options.prepare } : {}),
    });
  };
  return {
    async query<R extends object>(sql: string, params?: readonly SqlParam[], options?: QueryOptions) {
      return (await run(sql, params, options)).rows as R[];
    },
    async one<R extends object>(sql: string, params?: readonly SqlParam[]) {
      const { rows } = await run(sql, params);
      if (rows.length !== 1) {
        throw new LockstepError("INTERNAL_ERROR", {
          details: `expected exactly one row, got ${rows.length}, from: ${firstLine(sql)}`,
        });
      }
      return rows[0] as R;
    },
    async maybeOne<R extends object>(sql: string, params?: readonly SqlParam[]) {
      return (await run(sql, params)).rows[0] as R | undefined;
    },
    async execute(sql: string, params?: readonly SqlParam[]) {
      return (await run(sql, params)).rowCount ?? 0;
    },
  };
}

function beginStatement(options: TransactionOptions): string {
  const parts = ["BEGIN"];
  if (options.isolation) parts.push(`ISOLATION LEVEL ${options.isolation.toUpperCase()}`);
  if (options.readOnly) parts.push("READ ONLY");
  return parts.join(" ");
}

function databaseFromConnectionString(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    return (
      decodeURIComponent(url.pathname.replace(/^\//, "")) || decodeURIComponent(url.username) || "postgres"
    );
  } catch {
    // keyword/value form ("host=… dbname=…")
    return /(?:^|\s)dbname=(\S+)/.exec(connectionString)?.[1] ?? process.env.PGDATABASE ?? "postgres";
  }
}

/**
 * The `Db` port over a `pg` Pool. Sessions are dedicated connections outside the pool, so that
 * long-lived ones (the writer lock, LISTEN) never starve the pool, and closing them on release
 * guarantees their session state (locks, LISTEN, settings) cannot leak to other users.
 */
export function createPgDb(options: PgDbOptions): Db {
  const logger = options.logger ?? silentLogger("pg");
  const clientConfig: pg.ClientConfig = {
    connectionString: options.connectionString,
    types: lockstepTypes,
    ...(options.applicationName ? { application_name: options.applicationName } : {}),
    // A database host that vanished without closing the connection (power loss, partition) is
    // noticed by TCP keepalive: libuv probes every second after the idle delay and gives up after
    // 10 probes, so an idle connection fails within about 12 s instead of hanging for hours.
    keepAlive: true,
    keepAliveInitialDelayMillis: 2000,
  };
  const pool = new pg.Pool({ ...clientConfig, max: options.max ?? 10 });
  // An idle client whose server went away emits here; without a listener the process would crash.
  pool.on("error", (error) => logger.warn({ err: error }, "idle database connection failed"));
  const sessions = new Set<DbSession>();
  let closed = false;

  const db: Db = {
    database: databaseFromConnectionString(options.connectionString),
    ...queryable(pool),

    async transaction<T>(fn: (tx: Tx) => Promise<T>, txOptions: TransactionOptions = {}): Promise<T> {
      const client = await pool.connect();
      let finished = false;
      // A Tx kept past its transaction would run outside it, silently; refuse that.
      const tx = queryable(client, () => {
        if (finished)
          throw new LockstepError("INTERNAL_ERROR", { details: "transaction used after it ended" });
      });
      let broken: Error | undefined;
      // A checked-out client whose connection dies between statements (server restart, a terminated
      // backend) emits 'error'; the pool listens only while it is idle, and an unheard 'error' would
      // crash the process. The next statement fails anyway, and the client is destroyed on release.
      const onError = (error: Error) => {
        broken ??= error;
      };
      client.on("error", onError);
      try {
        await client.query(beginStatement(txOptions));
        if (txOptions.synchronousCommit) await client.query("SET LOCAL synchronous_commit = on");
        const result = await fn(tx);
        finished = true;
        await client.query("COMMIT");
        return result;
      } catch (error) {
        finished = true;
        try {
          await client.query("ROLLBACK");
        } catch (rollbackError) {
          // The connection is unusable; destroy it rather than return it mid-transaction.
          broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
        }
        throw error;
      } finally {
        client.off("error", onError);
        client.release(broken);
      }
    },

    async session(): Promise<DbSession> {
      if (closed) throw new LockstepError("INTERNAL_ERROR", { details: "session() on a closed Db" });
      // A session is a dedicated connection: give up connecting to an unreachable server rather than
      // wait for the kernel's SYN retries (minutes); callers such as the node's lock retry.
      const client = new pg.Client({ ...clientConfig, connectionTimeoutMillis: SESSION_CONNECT_TIMEOUT_MS });
      await client.connect();
      const session = pgSession(client, () => sessions.delete(session));
      sessions.add(session);
      return session;
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      // Closing on purpose: released sessions do not report the disconnect as an error.
      for (const session of [...sessions]) session.release(true);
      await pool.end();
    },
  };
  return db;
}

function pgSession(client: pg.Client, forget: () => void): DbSession {
  let released = false;
  const errorHandlers: ((error: Error) => void)[] = [];
  let reported: Error | undefined;
  const channels = new Map<string, Set<(payload: string) => void>>();

  const report = (error: Error) => {
    if (released || reported) return;
    reported = error;
    for (const handler of errorHandlers) handler(error);
  };
  // Always listen: an unhandled 'error' on a client would crash the process.
  client.on("error", report);
  client.on("end", () => report(new Error("database session connection closed")));
  client.on("notification", (message) => {
    for (const handler of channels.get(message.channel) ?? []) handler(message.payload ?? "");
  });

  const guard = () => {
    if (released)
      throw new LockstepError("INTERNAL_ERROR", { details: "database session used after release" });
  };

  return {
    ...queryable(client, guard),

    async listen(channel, onNotify) {
      guard();
      let handlers = channels.get(channel);
      if (!handlers) {
        handlers = new Set();
        channels.set(channel, handlers);
        await client.query(`LISTEN ${client.escapeIdentifier(channel)}`);
      }
      handlers.add(onNotify);
      return async () => {
        const current = channels.get(channel);
        if (!current?.delete(onNotify) || current.size > 0) return;
        channels.delete(channel);
        if (!released) await client.query(`UNLISTEN ${client.escapeIdentifier(channel)}`);
      };
    },

    onError(handler) {
      errorHandlers.push(handler);
      // Registered after the break: still tell it, since "called once" must not mean "never".
      if (reported) handler(reported);
    },

    release(_destroy?: boolean) {
      if (released) return;
      released = true;
      forget();
      client.end().catch(() => {
        // already broken: nothing left to close
      });
    },
  };
}
