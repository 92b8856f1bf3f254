import { join } from "node:path";
import type { NodeEntry } from "../common/config-schema.ts";
import type { Logger } from "../common/logging.ts";
import type { Db } from "../storage/db.ts";
import { LocalPostgres } from "../storage/local-postgres.ts";
import { createPgDb } from "../storage/pg-db.ts";

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
    const parsed = new URL(url);
    return {
      url,
      database: decodeURIComponent(parsed.pathname.replace(/^\//, "")),
      description: `${parsed.hostname}:${parsed.port || 5432}${parsed.pathname}`,
    };
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

/** Opens a node's own database (see nodeConnection for where it is). */
export async function openNodeDatabase(
  entry: NodeEntry,
  dataDir: string,
  logger: Logger,
): Promise<NodeDatabase> {
  const connection = await nodeConnection(entry, dataDir, logger);
  return {
    db: createPgDb({ connectionString: connection.url, applicationName: `lockstep-${entry.name}` }),
    description: connection.description,
  };
}
