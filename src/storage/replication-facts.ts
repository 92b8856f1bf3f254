import type { Queryable } from "./db.ts";
import type { ReplicationFacts, StandbyFact, SynchronousCommitOverride } from "./replication-check.ts";

/**
 * Reads what the replication check (replication-check.ts) judges, as the node's own role on its own
 * database: every query is readable without privileges, except the standbys' details in
 * pg_stat_replication, which PostgreSQL shows only to pg_read_all_stats (pg_monitor) or superusers;
 * without them the rows come back with NULLs and `canReadReplication` says so.
 * Run it on a connection that never ran a session-level SET (a pool connection): the setting read is
 * then the one the node's sessions start with.
 */
export async function readReplicationFacts(q: Queryable): Promise<ReplicationFacts> {
  const session = await q.one<{
    role: string;
    database: string;
    value: string;
    source: string;
    names: string;
    can_read: boolean;
    patroni: boolean;
  }>(
    `SELECT session_user AS role, current_database() AS database, s.setting AS value, s.source,
            current_setting('synchronous_standby_names') AS names,
            pg_has_role('pg_read_all_stats', 'USAGE') AS can_read,
            -- Patroni's own connections are named "Patroni…" (application_name is visible to all).
            EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'Patroni%') AS patroni
       FROM pg_settings s WHERE s.name = 'synchronous_commit'`,
  );
  // Settings apply to the login role (not inherited through membership): role in this database,
  // the role everywhere, this database for every role. Precedence is in that order.
  const overrides = await q.query<{
    scope: SynchronousCommitOverride["scope"];
    role: string | null;
    database: string | null;
    value: string;
  }>(
    `SELECT CASE WHEN s.setrole <> 0 AND s.setdatabase <> 0 THEN 'role-in-database'
                 WHEN s.setrole <> 0 THEN 'role' ELSE 'database' END AS scope,
            r.rolname AS role, d.datname AS database, substr(c, length('synchronous_commit=') + 1) AS value
       FROM pg_db_role_setting s
       LEFT JOIN pg_roles r ON r.oid = s.setrole
       LEFT JOIN pg_database d ON d.oid = s.setdatabase
       CROSS JOIN LATERAL unnest(s.setconfig) AS c
      WHERE c LIKE 'synchronous\\_commit=%'
        AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = session_user))
        AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
      ORDER BY 1`,
  );
  const standbys = await q.query<{
    application_name: string;
    client_address: string | null;
    state: string | null;
    sync_state: string | null;
    write_lag_ms: number | null;
    flush_lag_ms: number | null;
    replay_lag_ms: number | null;
    replay_lag_bytes: bigint | null;
  }>(
    // The *_lag columns are NULL once a standby has caught up and the primary is idle.
    `SELECT application_name, host(client_addr) AS client_address, state, sync_state,
            (EXTRACT(epoch FROM write_lag) * 1000)::float8 AS write_lag_ms,
            (EXTRACT(epoch FROM flush_lag) * 1000)::float8 AS flush_lag_ms,
            (EXTRACT(epoch FROM replay_lag) * 1000)::float8 AS replay_lag_ms,
            CASE WHEN pg_is_in_recovery() OR replay_lsn IS NULL THEN NULL
                 ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8 END AS replay_lag_bytes
       FROM pg_stat_replication ORDER BY application_name, pid`,
  );
  return {
    role: session.role,
    database: session.database,
    synchronousCommit: { value: session.value, source: session.source },
    overrides,
    synchronousStandbyNames: session.names,
    canReadReplication: session.can_read,
    standbys: standbys.map(
      (s): StandbyFact => ({
        applicationName: s.application_name,
        clientAddress: s.client_address,
        state: s.state,
        syncState: s.sync_state,
        writeLagMs: s.write_lag_ms,
        flushLagMs: s.flush_lag_ms,
        replayLagMs: s.replay_lag_ms,
        replayLagBytes: s.replay_lag_bytes,
      }),
    ),
    patroni: session.patroni,
  };
}
