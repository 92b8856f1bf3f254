/**
 * The `Db` port: what node code may ask of its database. One implementation over `pg`
 * (pg-db.ts); node kinds depend on this interface only, so their logic stays testable and
 * the driver stays in one place.
 */
export type SqlParam =
  | string
  | number
  | bigint
  | boolean
  | Date
  | Buffer
  | Uint8Array
  | null
  | readonly unknown[]
  | object;

export interface QueryOptions {
  /**
   * Run as a named prepared statement: parsed and planned once per connection, not per call (for
   * a hot statement such as the sequencer writer's). A name must always go with the same SQL.
   */
  prepare?: string;
}

export interface Queryable {
  /** All rows. int8 columns arrive as bigint, bytea as Buffer. */
  query<R extends object = Record<string, unknown>>(
    sql: string,
    params?: readonly SqlParam[],
    options?: QueryOptions,
  ): Promise<R[]>;
  /** Exactly one row, else throws. */
  one<R extends object = Record<string, unknown>>(sql: string, params?: readonly SqlParam[]): Promise<R>;
  /** The first row or undefined. */
  maybeOne<R extends object = Record<string, unknown>>(
    sql: string,
    params?: readonly SqlParam[],
  ): Promise<R | undefined>;
  /** Runs a statement and returns the number of affected rows. */
  execute(sql: string, params?: readonly SqlParam[]): Promise<number>;
}

export type Isolation = "read committed" | "repeatable read" | "serializable";

export interface TransactionOptions {
  isolation?: Isolation;
  readOnly?: boolean;
  /**
   * `SET LOCAL synchronous_commit = on` for this transaction: commits that must survive a
   * fail-over (in-flight submissions, ledger end with clean index) wait for the standbys even
   * where the database default is weaker.
   */
  synchronousCommit?: boolean;
}

export type Tx = Queryable;

/** A dedicated connection, for what lives in a session: advisory locks, LISTEN, exported snapshots. */
export interface DbSession extends Queryable {
  /** Subscribe to NOTIFY on a channel; returns an unsubscribe function. */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  /** Called once if the connection breaks (e.g. the server went away). */
  onError(handler: (error: Error) => void): void;
  /** Returns the connection to the pool, or closes it when `destroy` (session state must not leak). */
  release(destroy?: boolean): void;
}

export interface Db extends Queryable {
  /** The database's name, from which advisory lock ids are derived. */
  readonly database: string;
  transaction<T>(fn: (tx: Tx) => Promise<T>, options?: TransactionOptions): Promise<T>;
  session(): Promise<DbSession>;
  close(): Promise<void>;
}
