import type { Db } from "./db.ts";
import { isSingleServerUrl, multiHostUrlProblem, parseMultiHostUrl } from "./multi-host.ts";
import { createMultiHostDb, writableServerUrl } from "./multi-host-db.ts";
import { createPgDb, type PgDbOptions } from "./pg-db.ts";

/**
 * The Db for a node's storage URL: the pg Db for a single server, as before; for a libpq multi-host
 * URL or `target_session_attrs=read-write|primary` (a Patroni cluster), the pg Db of the server that
 * accepts writes, following it through fail-overs (multi-host-db.ts). Every place that opens a
 * node's database from its URL goes through here, so none of them chokes on a multi-host URL.
 */
export function createStorageDb(options: PgDbOptions): Db {
  // Not a postgres:// URL (e.g. libpq's keyword form): one server, for pg to read as before.
  const problem = multiHostUrlProblem(options.connectionString);
  if (problem || isSingleServerUrl(parseMultiHostUrl(options.connectionString))) return createPgDb(options);
  return createMultiHostDb({
    url: options.connectionString,
    open: (connectionString) => createPgDb({ ...options, connectionString }),
    ...(options.logger ? { logger: options.logger } : {}),
  });
}

/**
 * A URL that plain clients and tools can use (a single server): the URL itself, or the server that
 * accepts writes now for a multi-host one (waiting up to 10 s for one: a tool run by an operator
 * should rather say so than hang through a long outage).
 */
export function storageServerUrl(url: string, options: Pick<PgDbOptions, "logger"> = {}): Promise<string> {
  return writableServerUrl({
    url,
    leaderWaitMs: 10_000,
    open: (connectionString) => createPgDb({ connectionString, max: 1, applicationName: "lockstep-probe" }),
    ...(options.logger ? { logger: options.logger } : {}),
  });
}
