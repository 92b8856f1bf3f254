import { join } from "node:path";
import type { NodeEntry } from "../common/config-schema.ts";
import type { Logger } from "../common/logging.ts";
import type { Db } from "../storage/db.ts";
import { LocalPostgres } from "../storage/local-postgres.ts";
import { describeMultiHostUrl, parseMultiHostUrl } from "../storage/multi-host.ts";
import { createStorageDb } from "../storage/storage-db.ts";

/** The database a node uses in the embedded cluster: its name with `-` made SQL-friendly. */
export function embeddedDatabaseName(nodeName: string): string {
  return nodeName.replace(/-/g, "_");
}

export function embeddedClusterDir(dataDir: string): string {
  return join(dataDir, "postgres");
}

export interface NodeDatabase {
  db: Db;
  /** Where it lives, for status and logs (never with a password). */
  description: string;
}

/** Where a node's database is: its connection URL (may hold a password: never print it) and a description. */
export interface NodeConnection {
  url: string;
  database: string;
  description: string;
  /** The embedded cluster, when the node uses one (backup drills create scratch databases there). */
  cluster?: LocalPostgres;
}

/**
 * Finds a node's database: `storage.url` when configured, else a database in the embedded cluster
 * under the data dir (started or reused here; it outlives the node, `lockstep down` stops it).
 */
export async function nodeConnection(
  entry: NodeEntry,
  dataDir: string,
  logger: Logger,
): Promise<NodeConnection> {
  const url = entry.config.storage.url;
  if (url) {
    // libpq syntax: may name several servers (a Patroni cluster), see storage/multi-host.ts.
    const parsed = parseMultiHostUrl(url);
    return { url, database: parsed.database, description: describeMultiHostUrl(parsed) };
  }
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir), logger });
  const { host, port } = await cluster.start();
  const database = embeddedDatabaseName(entry.name);
  await cluster.ensureDatabase(database);
  return {
    url: cluster.connectionUrl(database),
    database,
    description: `embedded ${host}:${port}/${database}`,
    cluster,
  };
}

/**
 * Opens a node's own database (see nodeConnection for where it is). The connections carry
 * `lockstep-NAME` (or `lockstep-NAME.REPLICA`) as application_name, so pg_stat_activity tells the
 * processes of one node apart.
 */
export async function openNodeDatabase(
  entry: NodeEntry,
  dataDir: string,
  logger: Logger,
  replica?: string,
): Promise<NodeDatabase> {
  const connection = await nodeConnection(entry, dataDir, logger);
  const applicationName = `lockstep-${entry.name}${replica ? `.${replica}` : ""}`;
  return {
    // Follows the server that accepts writes when storage.url names several (storage-db.ts).
    db: createStorageDb({ connectionString: connection.url, applicationName, logger }),
    description: connection.description,
  };
}
