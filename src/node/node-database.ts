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

/**
 * Opens a node's own database: `storage.url` when configured, else a database in the embedded
 * cluster under the data dir (started or reused here; it outlives the node, `lockstep down` stops it).
 */
export async function openNodeDatabase(
  entry: NodeEntry,
  dataDir: string,
  logger: Logger,
): Promise<NodeDatabase> {
  const url = entry.config.storage.url;
  if (url) {
    const parsed = new URL(url);
    return {
      db: createPgDb({ connectionString: url, applicationName: `lockstep-${entry.name}` }),
      description: `${parsed.hostname}:${parsed.port || 5432}${parsed.pathname}`,
    };
  }
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir), logger });
  const { host, port } = await cluster.start();
  const database = embeddedDatabaseName(entry.name);
  await cluster.ensureDatabase(database);
  return {
    db: createPgDb({
      connectionString: cluster.connectionUrl(database),
      applicationName: `lockstep-${entry.name}`,
    }),
    description: `embedded ${host}:${port}/${database}`,
  };
}
