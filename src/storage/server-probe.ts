import pg from "pg";
import { describeMultiHostUrl, type HostAddress, parseMultiHostUrl, singleHostUrl } from "./multi-host.ts";

/** A node's identity row (node_state), as a fail-over target must hold it. */
export interface NodeStateFact {
  name: string;
  kind: string;
  writerEpoch: bigint;
}

/**
 * What one PostgreSQL server answered, for the fail-over checks (src/node/failover-checks.ts):
 * nothing (`unreachable`: no TCP connection within the timeout, refused, no route), an error of its
 * own (`error`: it answered, e.g. the database does not exist or the login is refused), or its role.
 */
export type ServerProbe =
  | { host: string; kind: "unreachable"; reason: string }
  | { host: string; kind: "error"; reason: string; sqlState: string }
  | {
      host: string;
      kind: "server";
      /** pg_is_in_recovery(): a standby (or a server still recovering). */
      inRecovery: boolean;
      /** A new session's transaction_read_only (default_transaction_read_only, or a standby). */
      readOnly: boolean;
      /** The node_state row of the URL's database; null when it has no node_state table or row. */
      nodeState: NodeStateFact | null;
    };

/** Each host of a (possibly multi-host) URL probed, in the URL's order; never rejects. */
export async function probeServers(url: string, timeoutMs: number): Promise<ServerProbe[]> {
  const parsed = parseMultiHostUrl(url);
  return Promise.all(parsed.hosts.map((host) => probeServer(singleHostUrl(parsed, host), host, timeoutMs)));
}

/** `host:port/database`, never with user or password. */
export function describeServerUrl(url: string): string {
  return describeMultiHostUrl(parseMultiHostUrl(url));
}

async function probeServer(url: string, address: HostAddress, timeoutMs: number): Promise<ServerProbe> {
  const host = `${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`;
  const client = new pg.Client({
    connectionString: url,
    application_name: "lockstep-failover-check",
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (error) {
    return failed(host, error);
  }
  try {
    // Only reads: a primary whose commits hang on a lost synchronous standby still answers these.
    const role = await client.query<{ in_recovery: boolean; read_only: string; has_state: boolean }>(
      `SELECT pg_is_in_recovery() AS in_recovery, current_setting('transaction_read_only') AS read_only,
              to_regclass('node_state') IS NOT NULL AS has_state`,
    );
    const row = role.rows[0] as { in_recovery: boolean; read_only: string; has_state: boolean };
    let nodeState: NodeStateFact | null = null;
    if (row.has_state) {
      const state = await client.query<{ node_name: string; kind: string; writer_epoch: string }>(
        "SELECT node_name, kind, writer_epoch::text AS writer_epoch FROM node_state",
      );
      const found = state.rows[0];
      if (found)
        nodeState = { name: found.node_name, kind: found.kind, writerEpoch: BigInt(found.writer_epoch) };
    }
    return { host, kind: "server", inRecovery: row.in_recovery, readOnly: row.read_only === "on", nodeState };
  } catch (error) {
    return failed(host, error);
  } finally {
    await client.end().catch(() => {});
  }
}

function failed(host: string, error: unknown): ServerProbe {
  const e = error as { code?: string; message?: string };
  const reason = e.message || e.code || String(error);
  // A SQLSTATE (five characters) means the server itself answered; anything else is the network.
  if (typeof e.code === "string" && /^[0-9A-Z]{5}$/.test(e.code)) {
    return { host, kind: "error", reason, sqlState: e.code };
  }
  return { host, kind: "unreachable", reason: reason === "timeout expired" ? "no answer in time" : reason };
}
