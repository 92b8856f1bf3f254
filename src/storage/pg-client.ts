import pg from "pg";

/**
 * One short-lived connection for a few administrative statements (settings, system identifier,
 * CREATE/DROP DATABASE): a bounded connect, so a dead server fails the caller instead of hanging it,
 * and the connection closed whatever happens.
 */
export async function withPgClient<T>(
  url: string,
  fn: (client: pg.Client) => Promise<T>,
  applicationName = "lockstep",
): Promise<T> {
  const client = new pg.Client({
    connectionString: url,
    application_name: applicationName,
    connectionTimeoutMillis: 10_000,
  });
  client.on("error", () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}
