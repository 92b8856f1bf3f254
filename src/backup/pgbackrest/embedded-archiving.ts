/**
 * pgBackRest on Lockstep's embedded cluster (a LocalPostgres): what its config says about the cluster,
 * and turning WAL archiving on.
 *
 * Archiving is switched on here, by LocalPostgres.configure (ALTER SYSTEM, then a restart because
 * archive_mode only takes effect at server start), rather than by an option of LocalPostgres, because:
 * - the settings then live in the cluster's own postgresql.auto.conf, so every later start keeps them,
 *   whoever starts the cluster (nodes, `lockstep up`) and whatever options that process was given;
 * - `configure` compares with what the running server uses, so calling this before each backup is cheap
 *   and restarts nothing once archiving is on, and a cluster that predates pgBackRest is converted in
 *   place;
 * - LocalPostgres stays free of anything pgBackRest-specific.
 * The restart drops every connection to the cluster: do it before nodes run, or expect them to reconnect.
 *
 * The server's Unix socket (pgBackRest connects through no other way; LocalPostgres otherwise listens on
 * TCP only) goes into the cluster directory itself (`<dir>`, next to `data/` and `server.log`): it
 * always exists, belongs to the server's user and is not part of PGDATA, so backups do not carry it.
 *
 * The settings are part of PGDATA (postgresql.auto.conf) and so of every backup: a restored copy
 * would archive into this stanza as soon as it is promoted. scratch-restore.ts turns that off.
 */
import type { LocalPostgres } from "../../storage/local-postgres.ts";
import type { PgBackRest } from "./pgbackrest-cli.ts";
import { type PgBackRestCluster, postgresSettings } from "./pgbackrest-config.ts";

/** The `pg1-*` part of the pgBackRest config for an embedded cluster; it must have been started. */
export function embeddedCluster(pg: LocalPostgres): PgBackRestCluster {
  const port = pg.port;
  if (port === undefined)
    throw new TypeError(`the cluster at ${pg.dir} has not been started: its port is unknown`);
  return { dataDir: pg.dataDir, port, socketDir: pg.dir, user: "postgres" };
}

/**
 * Makes the running cluster archive its WAL to `pgbackrest`'s stanza (restarting it when that was not
 * yet the case). Writes pgbackrest's config first (archive_command names it) and again after a restart,
 * which could have moved the port. Returns whether the server was restarted.
 */
export async function enableArchiving(
  pg: LocalPostgres,
  pgbackrest: PgBackRest,
): Promise<{ restarted: boolean }> {
  pgbackrest.prepare();
  const settings = postgresSettings({
    configFile: pgbackrest.configFile,
    stanza: pgbackrest.stanza,
    socketDir: pg.dir,
  });
  const { restarted } = await pg.configure(settings);
  if (restarted) pgbackrest.prepare(embeddedCluster(pg));
  return { restarted };
}
