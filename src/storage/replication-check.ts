/**
 * The replication check (docs/design.md §3), pure: findings from a snapshot of facts about a
 * node's database server, read by replication-facts.ts. Kept free of I/O so that every rule and
 * every remedy is decided in one place and testable without a server.
 *
 * Why these checks: a fail-over keeps only what the standby has. A commit that did not wait for a
 * standby (`synchronous_commit` below `on`, no `synchronous_standby_names`, no synchronous standby
 * streaming) may be acknowledged to a client and then missing at the other site.
 */

/** What a node's sessions get for `synchronous_commit`, and where it comes from (`pg_settings.source`). */
export interface SynchronousCommitFact {
  value: string;
  /** `default`, `configuration file`, `user`, `database`, `database user`, `client`, … */
  source: string;
}

/** A `pg_db_role_setting` row for `synchronous_commit` that applies to the node's role or database. */
export interface SynchronousCommitOverride {
  scope: "role-in-database" | "role" | "database";
  role: string | null;
  database: string | null;
  value: string;
}

/** One row of `pg_stat_replication`; everything but the name is null without pg_monitor. */
export interface StandbyFact {
  applicationName: string;
  clientAddress: string | null;
  /** `streaming`, `catchup`, `startup`, `backup`, `stopping`. */
  state: string | null;
  /** `sync`, `quorum`, `potential`, `async`. */
  syncState: string | null;
  writeLagMs: number | null;
  flushLagMs: number | null;
  replayLagMs: number | null;
  /** WAL bytes the standby has not replayed yet (null on a standby or without pg_monitor). */
  replayLagBytes: bigint | null;
}

export interface ReplicationFacts {
  /** The role the node logs in as. */
  role: string;
  database: string;
  synchronousCommit: SynchronousCommitFact;
  overrides: SynchronousCommitOverride[];
  synchronousStandbyNames: string;
  /** Whether the role may read the standbys' state (superuser, pg_monitor or pg_read_all_stats). */
  canReadReplication: boolean;
  standbys: StandbyFact[];
  /** Patroni manages the server (a session named `Patroni…` is connected): it owns synchronous_standby_names. */
  patroni: boolean;
}

export interface ReplicationPolicy {
  minSyncStandbys: number;
}

export type ReplicationFindingKind =
  | "synchronous-commit"
  | "synchronous-standby-names"
  | "synchronous-standby-count"
  | "sync-standbys"
  | "replication-unreadable";

export interface ReplicationFinding {
  kind: ReplicationFindingKind;
  message: string;
  remedy: string;
}

/** Values of synchronous_commit that make a commit wait for the synchronous standbys. */
export const WAITING_SYNCHRONOUS_COMMIT: readonly string[] = ["on", "remote_write", "remote_apply"];

export interface SynchronousStandbyNames {
  method: "first" | "any";
  /** How many standbys each commit waits for. */
  count: number;
  names: string[];
}

/**
 * PostgreSQL's `synchronous_standby_names` grammar: `FIRST n (a, b)`, `ANY n (a, b)`, `n (a, b)`
 * (FIRST) or a bare list `a, b` (FIRST 1). Names may be double-quoted; `*` matches any standby.
 * Undefined when empty (no synchronous replication at all).
 */
export function parseSynchronousStandbyNames(value: string): SynchronousStandbyNames | undefined {
  const text = value.trim();
  if (text === "") return undefined;
  const match = /^(?:(first|any)\s+)?(\d+)\s*\((.*)\)$/is.exec(text);
  const list = match ? (match[3] ?? "") : text;
  const names = list
    .split(",")
    .map((name) => name.trim().replace(/^"(.*)"$/, "$1"))
    .filter(Boolean);
  if (!match) return { method: "first", count: 1, names };
  const method = (match[1] ?? "first").toLowerCase() as "first" | "any";
  return { method, count: Number.parseInt(match[2] ?? "1", 10), names };
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** The standbys that make a commit wait: streaming and chosen as synchronous (FIRST) or quorum (ANY). */
export function synchronousStandbys(standbys: readonly StandbyFact[]): StandbyFact[] {
  return standbys.filter(
    (s) => s.state === "streaming" && (s.syncState === "sync" || s.syncState === "quorum"),
  );
}

/** Every finding, in a stable order; an empty list means the check passed. */
export function evaluateReplication(
  facts: ReplicationFacts,
  policy: ReplicationPolicy,
): ReplicationFinding[] {
  const findings: ReplicationFinding[] = [];
  const commit = synchronousCommitFinding(facts);
  if (commit) findings.push(commit);
  // min-sync-standbys 0: the operator runs without a synchronous standby on purpose.
  if (policy.minSyncStandbys === 0) return findings;
  const names = parseSynchronousStandbyNames(facts.synchronousStandbyNames);
  if (!names) {
    findings.push(emptyNamesFinding(facts, policy));
  } else if (names.count < policy.minSyncStandbys) {
    findings.push({
      kind: "synchronous-standby-count",
      message: `synchronous_standby_names (${facts.synchronousStandbyNames}) makes each commit wait for ${names.count} standby(s), fewer than storage.replication.min-sync-standbys (${policy.minSyncStandbys})`,
      remedy: facts.patroni
        ? `Patroni manages this server: set synchronous_node_count: ${policy.minSyncStandbys} with \`patronictl edit-config\` (Patroni then writes synchronous_standby_names).`
        : `ALTER SYSTEM SET synchronous_standby_names = '${names.method.toUpperCase()} ${policy.minSyncStandbys} (${names.names.join(", ")})'; SELECT pg_reload_conf(); — or lower min-sync-standbys if fewer are intended.`,
    });
  }
  if (!facts.canReadReplication) {
    findings.push({
      kind: "replication-unreadable",
      message: `role ${facts.role} cannot read the standbys' state in pg_stat_replication, so how many synchronous standbys stream, and their lag, is unknown`,
      remedy: `GRANT pg_monitor TO ${quoteIdent(facts.role)}; (or connect as a role that has it).`,
    });
    return findings;
  }
  const sync = synchronousStandbys(facts.standbys);
  if (sync.length < policy.minSyncStandbys) findings.push(syncStandbysFinding(facts, policy, sync, names));
  return findings;
}

function synchronousCommitFinding(facts: ReplicationFacts): ReplicationFinding | undefined {
  const { value, source } = facts.synchronousCommit;
  if (WAITING_SYNCHRONOUS_COMMIT.includes(value)) return undefined;
  const role = quoteIdent(facts.role);
  const database = quoteIdent(facts.database);
  const where: Record<string, { by: string; remedy: string }> = {
    "database user": {
      by: `ALTER ROLE ${role} IN DATABASE ${database} SET`,
      remedy: `ALTER ROLE ${role} IN DATABASE ${database} RESET synchronous_commit;`,
    },
    user: { by: `ALTER ROLE ${role} SET`, remedy: `ALTER ROLE ${role} RESET synchronous_commit;` },
    database: {
      by: `ALTER DATABASE ${database} SET`,
      remedy: `ALTER DATABASE ${database} RESET synchronous_commit;`,
    },
    client: {
      by: "the connection's options (storage.url or PGOPTIONS)",
      remedy: "remove synchronous_commit from the connection options of storage.url (and PGOPTIONS).",
    },
  };
  const server = {
    by: `the server's configuration (${source})`,
    remedy: facts.patroni
      ? "Patroni manages this server: set postgresql.parameters.synchronous_commit: on with `patronictl edit-config`."
      : "ALTER SYSTEM SET synchronous_commit = on; SELECT pg_reload_conf(); (or set it in postgresql.conf; under Patroni, in postgresql.parameters with `patronictl edit-config`).",
  };
  const origin = where[source] ?? server;
  // A weaker override below the one in force would take over if that one were reset: name it too.
  const lower = facts.overrides.filter(
    (o) => !WAITING_SYNCHRONOUS_COMMIT.includes(o.value) && scopeSource(o.scope) !== source,
  );
  const also = lower.length
    ? ` Also reset ${lower.map((o) => `the ${o.scope} override (${o.value})`).join(" and ")}, which would apply next.`
    : "";
  return {
    kind: "synchronous-commit",
    message: `synchronous_commit is ${value} for role ${facts.role} in database ${facts.database}, set by ${origin.by}: commits do not wait for a standby, so a fail-over can lose acknowledged writes (Lockstep's critical writes still wait: they set it per transaction)`,
    remedy: `${origin.remedy}${also} Allowed values: ${WAITING_SYNCHRONOUS_COMMIT.join(", ")}.`,
  };
}

function scopeSource(scope: SynchronousCommitOverride["scope"]): string {
  return scope === "role-in-database" ? "database user" : scope === "role" ? "user" : "database";
}

function emptyNamesFinding(facts: ReplicationFacts, policy: ReplicationPolicy): ReplicationFinding {
  const known = facts.standbys.map((s) => s.applicationName).filter(Boolean);
  const list = known.length ? known.join(", ") : "standby1";
  return {
    kind: "synchronous-standby-names",
    message:
      "synchronous_standby_names is empty: no commit waits for a standby, whatever synchronous_commit says (replication, if any, is asynchronous)",
    remedy: facts.patroni
      ? "Patroni manages this server: set synchronous_mode: true and synchronous_mode_strict: true with `patronictl edit-config` (Patroni then sets synchronous_standby_names itself, and strict mode keeps it set when no standby is left); do not set it by hand."
      : `ALTER SYSTEM SET synchronous_standby_names = 'FIRST ${policy.minSyncStandbys} (${list})'; SELECT pg_reload_conf(); naming the standbys' application_name. If Patroni manages the server, set synchronous_mode: true (and synchronous_mode_strict: true) with \`patronictl edit-config\` instead: Patroni sets it itself.`,
  };
}

function syncStandbysFinding(
  facts: ReplicationFacts,
  policy: ReplicationPolicy,
  sync: readonly StandbyFact[],
  names: SynchronousStandbyNames | undefined,
): ReplicationFinding {
  const others = facts.standbys.filter((s) => !sync.includes(s));
  const described = others.map((s) => `${s.applicationName || "(unnamed)"} is ${s.syncState} (${s.state})`);
  const message = `${sync.length} synchronous standby(s) streaming${sync.length ? ` (${sync.map((s) => s.applicationName).join(", ")})` : ""}, fewer than storage.replication.min-sync-standbys (${policy.minSyncStandbys})${described.length ? `; ${described.join(", ")}` : "; no standby is connected"}`;
  let remedy: string;
  if (facts.patroni) {
    remedy =
      "Patroni manages this server: check `patronictl list` for a Sync Standby; with synchronous_mode: true Patroni picks a healthy replica (not one tagged nosync); start or repair a replica.";
  } else if (others.length === 0) {
    remedy = `Start a standby streaming from this server (pg_basebackup -R) whose application_name is listed in synchronous_standby_names${names ? ` (${facts.synchronousStandbyNames})` : ""}.`;
  } else {
    const unlisted = others.map((s) => s.applicationName).filter((n) => n && !names?.names.includes(n));
    remedy = unlisted.length
      ? `List the standbys in synchronous_standby_names: ALTER SYSTEM SET synchronous_standby_names = 'FIRST ${policy.minSyncStandbys} (${[...(names?.names ?? []), ...unlisted].join(", ")})'; SELECT pg_reload_conf(); (under Patroni: synchronous_mode: true).`
      : "Wait for the listed standbys to catch up and stream, or repair them; `lockstep replication check` shows their state and lag.";
  }
  return { kind: "sync-standbys", message, remedy };
}

/** One line per finding, for logs, status and REPLICATION_MISCONFIGURED. */
export function findingLine(finding: ReplicationFinding): string {
  return `${finding.kind}: ${finding.message}`;
}
