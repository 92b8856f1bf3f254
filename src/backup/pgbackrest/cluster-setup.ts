/**
 * `lockstep backup setup NODE` and `backup check NODE` (docs/backup.md "Setting up pgBackRest"):
 * making a node's cluster archive its WAL into its stanza, and proving that it does.
 *
 * The embedded cluster Lockstep configures itself (ALTER SYSTEM, a restart when archiving was off:
 * embedded-archiving.ts), then creates the stanza. An external database is the operator's: setup
 * writes pgBackRest's config file on this host and prints the server settings to make, and creates
 * the stanza once the server archives.
 */
import type { LockstepConfig, NodeEntry } from "../../common/config-schema.ts";
import type { Logger } from "../../common/logging.ts";
import { withPgClient } from "../../storage/pg-client.ts";
import { chooseEngine } from "../backup-engines.ts";
import { enableArchiving } from "./embedded-archiving.ts";
import { inspectSetup, type NodeCluster, nodeCluster } from "./node-cluster.ts";

export interface SetupResult {
  node: string;
  stanza: string;
  cluster: string;
  configFile: string;
  repository: string;
  /** embedded: what Lockstep did; external: whether the operator still has to set `settings`. */
  managed: "embedded" | "external";
  /** Settings changed (embedded) or still to make (external), name → value. */
  settings: Record<string, string>;
  pending: string[];
  restarted: boolean;
  stanzaCreated: boolean;
  checked: boolean;
}

export async function setupNode(
  config: LockstepConfig,
  entry: NodeEntry,
  logger: Logger,
): Promise<SetupResult> {
  const cluster = await nodeCluster(config, entry, logger);
  const { pgbackrest } = cluster;
  const base = {
    node: entry.name,
    stanza: pgbackrest.stanza,
    cluster: cluster.description,
    configFile: pgbackrest.configFile,
    repository: pgbackrest.repoPath,
  };
  if (cluster.embedded) {
    const { restarted } = await enableArchiving(cluster.embedded, pgbackrest);
    await pgbackrest.stanzaCreate();
    await pgbackrest.check();
    const state = await inspectSetup(cluster);
    return {
      ...base,
      managed: "embedded",
      settings: state.settings,
      pending: state.problems,
      restarted,
      stanzaCreated: true,
      checked: true,
    };
  }
  const state = await inspectSetup(cluster);
  const pending = state.problems.filter((p) => !p.startsWith("stanza "));
  if (pending.length > 0) {
    return {
      ...base,
      managed: "external",
      settings: state.settings,
      pending,
      restarted: false,
      stanzaCreated: false,
      checked: false,
    };
  }
  await pgbackrest.stanzaCreate();
  await pgbackrest.check();
  return {
    ...base,
    managed: "external",
    settings: state.settings,
    pending: [],
    restarted: false,
    stanzaCreated: true,
    checked: true,
  };
}

/** Sets the embedded cluster up for pgBackRest when a node in it is backed up by pgBackRest (`lockstep up`, before nodes run). */
export async function setupEmbeddedIfUsed(
  config: LockstepConfig,
  entries: readonly NodeEntry[],
  logger: Logger,
): Promise<SetupResult | undefined> {
  const user = entries.find((e) => !e.config.storage.url && chooseEngine(config, e).engine === "pgbackrest");
  if (!user) return undefined;
  const cluster = await nodeCluster(config, user, logger);
  const state = await inspectSetup(cluster);
  if (state.problems.length === 0) return undefined;
  return setupNode(config, user, logger);
}

export interface CheckFinding {
  check: string;
  ok: boolean;
  detail: string;
}

export interface CheckResult {
  node: string;
  stanza: string;
  cluster: string;
  ok: boolean;
  findings: CheckFinding[];
}

/**
 * pgBackRest's own `check` (the config, the stanza, a WAL switch archived) plus Lockstep's: the
 * server's settings point at this stanza, the archiver has not been failing, and the WAL the server
 * writes now reaches the repository.
 */
export async function checkNode(
  config: LockstepConfig,
  entry: NodeEntry,
  logger: Logger,
): Promise<CheckResult> {
  const cluster = await nodeCluster(config, entry, logger);
  const findings: CheckFinding[] = [];
  const state = await inspectSetup(cluster);
  findings.push({
    check: "settings",
    ok: state.archiving,
    detail: state.archiving
      ? `archive_mode on, archive_command pushes to stanza ${cluster.pgbackrest.stanza}`
      : state.problems.filter((p) => !p.startsWith("stanza ")).join("; "),
  });
  findings.push({
    check: "stanza",
    ok: state.stanza,
    detail: state.stanza
      ? `stanza ${cluster.pgbackrest.stanza} exists in ${cluster.pgbackrest.repoPath}`
      : (state.problems.find((p) => p.startsWith("stanza ")) ?? "missing"),
  });
  if (state.archiving && state.stanza) {
    const check = await cluster.pgbackrest.check().then(
      () => ({
        check: "pgbackrest check",
        ok: true,
        detail: "configuration valid, a WAL switch was archived",
      }),
      (error: Error) => ({ check: "pgbackrest check", ok: false, detail: error.message }),
    );
    findings.push(check);
    if (check.ok) findings.push(await walReachesRepository(cluster));
  }
  findings.push(await archiverHealth(cluster));
  return {
    node: entry.name,
    stanza: cluster.pgbackrest.stanza,
    cluster: cluster.description,
    ok: findings.every((f) => f.ok),
    findings,
  };
}

/** The segment the server wrote last (after check's switch) must be in the repository's archive. */
async function walReachesRepository(cluster: NodeCluster): Promise<CheckFinding> {
  const lsn = await withPgClient(cluster.url, async (c) => {
    const row = await c.query<{ lsn: string }>("SELECT last_archived_wal AS lsn FROM pg_stat_archiver");
    return row.rows[0]?.lsn ?? null;
  });
  const info = await cluster.pgbackrest.info();
  const max = info.archive
    .map((a) => a.max)
    .filter((m): m is string => m !== undefined)
    .sort()
    .at(-1);
  if (!lsn || !max) {
    return {
      check: "wal in repository",
      ok: false,
      detail: `archived by the server: ${lsn ?? "none"}; in the repository: ${max ?? "none"}`,
    };
  }
  const ok = max.slice(8) >= lsn.slice(8);
  return {
    check: "wal in repository",
    ok,
    detail: ok
      ? `the server's last archived segment ${lsn} is in the repository (newest there ${max})`
      : `the server archived ${lsn} but the repository's newest segment is ${max}`,
  };
}

/** pg_stat_archiver: a failure more recent than the last success means archiving is broken now. */
async function archiverHealth(cluster: NodeCluster): Promise<CheckFinding> {
  return withPgClient(cluster.url, async (c) => {
    const row = await c.query<{
      failed: string;
      last_failed: string | null;
      last_archived: string | null;
      failing: boolean;
    }>(
      `SELECT failed_count::text AS failed, last_failed_wal AS last_failed, last_archived_wal AS last_archived,
              COALESCE(last_failed_time > COALESCE(last_archived_time, '-infinity'), false) AS failing
         FROM pg_stat_archiver`,
    );
    const r = row.rows[0];
    if (!r) return { check: "archiver", ok: false, detail: "pg_stat_archiver is empty" };
    return r.failing
      ? {
          check: "archiver",
          ok: false,
          detail: `archiving ${r.last_failed} failed after the last success (${r.failed} failures): see the server log`,
        }
      : {
          check: "archiver",
          ok: true,
          detail: `last archived ${r.last_archived ?? "none yet"}, ${r.failed} failure(s) before it`,
        };
  });
}
