/**
 * Which PostgreSQL cluster a node's database is in, and the pgBackRest stanza that backs it up
 * (docs/backup.md "The pgBackRest engine"):
 *
 * - The embedded cluster (`<data-dir>/postgres`, shared by every node without storage.url): stanza
 *   `lockstep-<system identifier>`. Named after the cluster's identity, not its folder, because
 *   pgBackRest binds a stanza to one cluster: a cluster created anew (the data dir was lost, a
 *   network restored onto a new machine) gets a stanza of its own and archives there, while the
 *   lost cluster's backups stay readable under theirs, which the sets that used them name.
 * - An external database (storage.url): the node's `backup.pgbackrest` config names the stanza and
 *   where the cluster's PGDATA and Unix socket are: pgBackRest runs on the database's host.
 *
 * pgBackRest's repository is `<backup.repository>/pgbackrest` (all stanzas), or with
 * backup.encryption `<backup.repository>/pgbackrest-<key fingerprint>` (pgbackrest-repo.ts). Each
 * stanza's config file (the one archive_command names: it always names the current repository) and
 * lock/log/spool folders are under `<data-dir>/pgbackrest/<stanza>`; reading a repository that is
 * no longer the current one (a set made before the key changed) uses a config of its own under
 * `<data-dir>/pgbackrest/<stanza>/repos/<folder>`, so archiving is never pointed back at it. All
 * rewritten on use: nothing there needs a backup.
 */
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { ExternalClusterConfig, LockstepConfig, NodeEntry } from "../../common/config-schema.ts";
import { configNodes } from "../../common/config-schema.ts";
import { LockstepError } from "../../common/errors.ts";
import type { Logger } from "../../common/logging.ts";
import { embeddedClusterDir, nodeConnection } from "../../node/node-database.ts";
import { LocalPostgres, sameSetting } from "../../storage/local-postgres.ts";
import { withPgClient } from "../../storage/pg-client.ts";
import { storageServerUrl } from "../../storage/storage-db.ts";
import { BackupKeys } from "../backup-keys.ts";
import { embeddedCluster } from "./embedded-archiving.ts";
import { PgBackRest } from "./pgbackrest-cli.ts";
import { type PgBackRestCluster, postgresSettings } from "./pgbackrest-config.ts";
import { currentRepo, type PgBackRestRepo } from "./pgbackrest-repo.ts";

export interface NodeCluster {
  node: string;
  /** The node's database in it. */
  database: string;
  /** postgres:// URL of that database (may hold a password: never print it). */
  url: string;
  /** For messages: `embedded cluster <dir>` or the external cluster's PGDATA. */
  description: string;
  systemIdentifier: string;
  /** The embedded cluster, when the node uses it (Lockstep configures it itself). */
  embedded: LocalPostgres | undefined;
  /** The repository it archives and backs up into now (backup.encryption's current key, or plain). */
  repo: PgBackRestRepo;
  pgbackrest: PgBackRest;
}

export const embeddedStanza = (systemIdentifier: string): string => `lockstep-${systemIdentifier}`;

/** The repository new backups and WAL go to (reads backup.encryption's key file). */
export function configuredRepo(config: LockstepConfig): PgBackRestRepo {
  return currentRepo(config, new BackupKeys(config.backup.encryption));
}

/**
 * Where pgBackRest's config and lock/log/spool folders for a stanza go: the current repository's
 * in the stanza's own folder (archive_command names that config file), another's beneath it.
 */
function stateDir(config: LockstepConfig, stanza: string, repo: PgBackRestRepo): string {
  const own = resolve(config["data-dir"], "pgbackrest", stanza);
  return repo.folder === configuredRepo(config).folder ? own : resolve(own, "repos", repo.folder);
}

function makePgBackRest(
  config: LockstepConfig,
  stanza: string,
  cluster: PgBackRestCluster,
  logger: Logger,
  repo: PgBackRestRepo,
): PgBackRest {
  const options = config.backup.pgbackrest;
  return new PgBackRest({
    config: {
      stanza,
      repoPath: repo.path,
      ...(repo.cipher ? { cipherPass: repo.cipher.pass } : {}),
      stateDir: stateDir(config, stanza, repo),
      cluster,
      compressType: options["compress-type"],
      processMax: options["process-max"],
    },
    logger,
  });
}

function externalCluster(external: ExternalClusterConfig): PgBackRestCluster {
  return {
    dataDir: external["pg-data"],
    port: external["pg-port"],
    socketDir: external["socket-dir"],
    user: external["pg-user"],
  };
}

function systemIdentifier(url: string): Promise<string> {
  return withPgClient(url, async (client) => {
    const row = await client.query<{ id: string }>(
      "SELECT system_identifier::text AS id FROM pg_control_system()",
    );
    return row.rows[0]?.id as string;
  });
}

/** The node's cluster and its stanza; starts the embedded cluster when the node uses it. */
export async function nodeCluster(
  config: LockstepConfig,
  entry: NodeEntry,
  logger: Logger,
): Promise<NodeCluster> {
  const repo = configuredRepo(config);
  const connection = await nodeConnection(entry, config["data-dir"], logger);
  if (connection.cluster) {
    const id = await systemIdentifier(connection.url);
    const pgbackrest = makePgBackRest(
      config,
      embeddedStanza(id),
      embeddedCluster(connection.cluster),
      logger,
      repo,
    );
    return {
      node: entry.name,
      database: connection.database,
      url: connection.url,
      description: `the embedded cluster ${connection.cluster.dir}`,
      systemIdentifier: id,
      embedded: connection.cluster,
      repo,
      pgbackrest,
    };
  }
  const external = entry.config.backup?.pgbackrest;
  if (!external) {
    throw new LockstepError("PGBACKREST_NOT_SET_UP", {
      node: entry.name,
      cluster: connection.description,
      reason:
        "its database is external (storage.url) and its config has no backup.pgbackrest (stanza, pg-data, socket-dir)",
    });
  }
  // A Patroni URL names several servers: pgBackRest backs up the one that accepts writes.
  const url = await storageServerUrl(connection.url, { logger });
  return {
    node: entry.name,
    database: connection.database,
    url,
    description: `the cluster at ${external["pg-data"]}`,
    systemIdentifier: await systemIdentifier(url),
    embedded: undefined,
    repo,
    pgbackrest: makePgBackRest(config, external.stanza, externalCluster(external), logger, repo),
  };
}

/**
 * pgBackRest for a stanza a manifest names, for restore, verify and expire: a node's external
 * stanza from its config, else an embedded cluster's (maybe of a cluster that no longer exists).
 * Those commands read the repository only; PGDATA is the restore's own target. `repo`: the
 * repository the record names (pgbackrest-repo.ts recordRepo); default the current one.
 */
export function stanzaPgBackRest(
  config: LockstepConfig,
  entries: readonly NodeEntry[],
  stanza: string,
  logger: Logger,
  repo: PgBackRestRepo = configuredRepo(config),
): PgBackRest {
  const external = entries.find((e) => e.config.backup?.pgbackrest?.stanza === stanza)?.config.backup
    ?.pgbackrest;
  if (external) return makePgBackRest(config, stanza, externalCluster(external), logger, repo);
  // The embedded cluster as it is now: when the stanza is its own, the config file this writes is
  // the one its archive_command and a later `check` use, so it must name the real port. (Another,
  // older embedded stanza is only read: restore, info, verify, expire.)
  const embedded = new LocalPostgres({ dir: embeddedClusterDir(resolve(config["data-dir"])) });
  return makePgBackRest(
    config,
    stanza,
    { dataDir: embedded.dataDir, port: embedded.port ?? 5432, socketDir: embedded.dir },
    logger,
    repo,
  );
}

export interface SetupState {
  /** archive_mode on and archive_command pushing to this stanza. */
  archiving: boolean;
  /** The stanza exists in the repository. */
  stanza: boolean;
  problems: string[];
  /** The settings the server needs (what `backup setup` prints for an external database). */
  settings: Record<string, string>;
}

/** Whether the node's cluster archives into its stanza; changes nothing. */
export async function inspectSetup(cluster: NodeCluster): Promise<SetupState> {
  const { pgbackrest } = cluster;
  const settings = postgresSettings({
    configFile: pgbackrest.configFile,
    stanza: pgbackrest.stanza,
    socketDir: pgbackrest.cluster.socketDir,
  });
  const problems: string[] = [];
  await withPgClient(cluster.url, async (client) => {
    for (const [name, wanted] of Object.entries(settings)) {
      const row = await client.query<{ setting: string }>("SELECT current_setting($1) AS setting", [name]);
      const actual = row.rows[0]?.setting ?? "";
      const same =
        name === "wal_level" ? actual === "replica" || actual === "logical" : sameSetting(actual, wanted);
      if (!same) problems.push(`${name} is ${JSON.stringify(actual)}, needs ${JSON.stringify(wanted)}`);
    }
  });
  pgbackrest.prepare();
  const info = await pgbackrest.info({ timeoutMs: 60_000 });
  // 1: the stanza's folder is missing in the repository (never created).
  const stanza = info.status.code !== 1 && info.status.code !== 3;
  if (!stanza) problems.push(`stanza ${pgbackrest.stanza}: ${info.status.message}`);
  return { archiving: problems.length === (stanza ? 0 : 1), stanza, problems, settings };
}

/**
 * Refuses a cluster that does not archive into its stanza (PGBACKREST_NOT_SET_UP), naming what is
 * missing. One exception: a new encrypted repository (backup.encryption turned on, or its key
 * changed) whose only lack is the stanza gets it created here: the config file archive_command
 * reads names that repository from now on, so WAL would pile up until someone ran `backup setup`.
 */
export async function requireSetUp(cluster: NodeCluster): Promise<void> {
  let state = await inspectSetup(cluster);
  if (cluster.pgbackrest.encrypted && state.archiving && !state.stanza) {
    await cluster.pgbackrest.stanzaCreate();
    state = await inspectSetup(cluster);
  }
  if (state.problems.length > 0) {
    throw new LockstepError("PGBACKREST_NOT_SET_UP", {
      node: cluster.node,
      cluster: cluster.description,
      reason: state.problems.join("; "),
    });
  }
}

/**
 * Before a recovery to a time: PostgreSQL stops at the first commit after the target and refuses
 * to end recovery without one ("recovery ended before configured recovery target was reached"),
 * and it follows the newest timeline, which may have no commit yet (a cluster just restored to
 * that very time). When the stanza is the running embedded cluster's, this commits an empty
 * transaction now (after any past target) and waits until its WAL is archived. Returns whether it did.
 * Only into the current repository (`repo`, default it): WAL goes nowhere else, so a recovery from
 * an older one (made before the key changed) stops on the commits its own archive holds.
 */
export async function commitPastTarget(
  config: LockstepConfig,
  stanza: string,
  logger: Logger,
  repo?: PgBackRestRepo,
  /** The latest recovery target on this cluster: refused unless the cluster's own clock is past it. */
  target?: { node: string; at: Date; text: string },
): Promise<boolean> {
  if (repo && repo.folder !== configuredRepo(config).folder) return false;
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(resolve(config["data-dir"])), logger });
  if (!(await cluster.isRunning()) || cluster.port === undefined) return false;
  const url = cluster.connectionUrl("postgres");
  if (embeddedStanza(await systemIdentifier(url)) !== stanza) return false;
  const committed = await withPgClient(url, async (client) => {
    // A killed restore's cluster may still be recovering (it promotes by itself): wait for that.
    for (let waited = 0; ; waited += 200) {
      const recovering = await client.query<{ r: boolean }>("SELECT pg_is_in_recovery() AS r");
      if (!recovering.rows[0]?.r) break;
      if (waited >= 60_000) return false;
      await sleep(200);
    }
    // "In the future" is judged by the clock that stamps the commits recovery compares the target
    // with, the server's, not this host's: a host clock behind it would refuse a reachable time,
    // one ahead of it would let recovery run off the end of the WAL.
    if (target) {
      const now = await client.query<{ now: Date }>("SELECT clock_timestamp() AS now");
      const serverNow = now.rows[0]?.now;
      if (serverNow && serverNow.getTime() <= target.at.getTime()) {
        throw new LockstepError("PITR_TARGET_UNREACHABLE", {
          node: target.node,
          target: `time ${target.text}`,
          reason: `it is in the future of the cluster's clock, which reads ${serverNow.toISOString()}`,
        });
      }
    }
    await client.query("SELECT txid_current()");
    return true;
  });
  if (!committed) return false;
  const pgbackrest = stanzaPgBackRest(config, configNodes(config), stanza, logger);
  pgbackrest.prepare();
  await pgbackrest.check();
  return true;
}
