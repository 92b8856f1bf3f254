import {
  appendFileSync,
  chownSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { LockstepConfig } from "../common/config-schema.ts";
import { configNodes } from "../common/config-schema.ts";
import type { Logger } from "../common/logging.ts";
import { embeddedClusterDir } from "../node/node-database.ts";
import { type RestoreMarker, restoreMarkerPath } from "../node/restore-marker.ts";
import { swapDataDir } from "../storage/data-dir-swap.ts";
import { LocalPostgres } from "../storage/local-postgres.ts";
import { makeTraversable } from "../storage/server-process.ts";
import { BackupKeys } from "./backup-keys.ts";
import { writeFileAtomic } from "./backup-repository.ts";
import { nodeEngine, type PgBackRestRecord } from "./manifest.ts";
import { embeddedCluster, enableArchiving } from "./pgbackrest/embedded-archiving.ts";
import { commitPastTarget, stanzaPgBackRest } from "./pgbackrest/node-cluster.ts";
import { postgresSettings } from "./pgbackrest/pgbackrest-config.ts";
import { cliTarget, describeTarget, recoveryFailure } from "./pgbackrest/pgbackrest-engine.ts";
import { recordRepo } from "./pgbackrest/pgbackrest-repo.ts";
import { waitForPromotion } from "./pgbackrest/scratch-restore.ts";
import type { PlannedNode, RestorePlan } from "./restore-plan.ts";

/**
 * The fast path of a physical restore (docs/restore.md "How a physical restore runs"): when the
 * embedded cluster holds nothing but the databases this apply restores, all from the same pgBackRest
 * backup to the same point (a checkpoint or a time for the whole network, or the one node of a
 * cluster), the cluster's data directory is replaced by the restored one, recovered in place: no
 * scratch cluster, no copy, as fast as pgBackRest itself. The replaced data directory is kept beside
 * it (`data.replaced-<set>`: the way back). The cluster continues on a new timeline from the point,
 * archiving into the stanza it was backed up in.
 *
 * Until every restored node is stamped (new incarnation, recovery record), a marker in the data dir
 * names them and the nodes refuse to start (RESTORE_IN_PROGRESS); a rerun of `restore apply` redoes
 * the whole restore. A kill between the two renames of the swap is finished by the next start of
 * the cluster (storage/data-dir-swap.ts).
 */

export interface ClusterRestore {
  nodes: PlannedNode[];
  record: PgBackRestRecord;
  databases: string[];
}

/** Whether this apply can restore the embedded cluster in place, and for which nodes. */
export async function planClusterRestore(
  plan: Pick<RestorePlan, "nodes">,
  dataDir: string,
  logger: Logger,
): Promise<ClusterRestore | undefined> {
  const todo = plan.nodes.filter((n) => !n.alreadyRestored);
  if (todo.length === 0 || todo.some((n) => n.entry.config.storage.url)) return undefined;
  const records = todo.map((n) => nodeEngine(n.backup));
  const first = records[0];
  if (first?.name !== "pgbackrest") return undefined;
  const same = (r: (typeof records)[number]) =>
    r.name === "pgbackrest" &&
    r.stanza === first.stanza &&
    r.label === first.label &&
    r.encryption?.keyFingerprint === first.encryption?.keyFingerprint &&
    JSON.stringify(r.target) === JSON.stringify(first.target);
  if (!records.every(same)) return undefined;
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir), logger });
  await cluster.start();
  const live = await cluster.listDatabases();
  const ours = (db: string) =>
    todo.some(
      (n) =>
        db === n.target.database ||
        db === n.target.staging ||
        db.startsWith(`${n.target.database.slice(0, 40)}__replaced_`),
    );
  if (!live.every(ours)) return undefined;
  return { nodes: todo, record: first, databases: records.map((r) => (r as PgBackRestRecord).database) };
}

/** Restores the whole embedded cluster in place (see the file comment); the caller stamps the nodes after. */
export async function restoreClusterInPlace(
  restore: ClusterRestore,
  plan: RestorePlan,
  config: LockstepConfig,
  logger: Logger,
  step: (line: string) => void,
): Promise<void> {
  const { record } = restore;
  const dataDir = config["data-dir"];
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir), logger });
  const incoming = "data.restoring";
  const restoring = join(cluster.dir, incoming);
  rmSync(restoring, { recursive: true, force: true }); // a killed run's, of no use
  // Restored from the repository the set names (an older key's, maybe); archiving goes on into the
  // current one (pgbackrest/pgbackrest-repo.ts): the stanza's own config file, which names it.
  const first = restore.nodes[0] as PlannedNode;
  const repo = recordRepo(config, new BackupKeys(config.backup.encryption), record, {
    set: plan.set,
    artifact: first.backup.artifact,
  });
  const source = stanzaPgBackRest(config, configNodes(config), record.stanza, logger, repo);
  source.prepare();
  const pgbackrest = stanzaPgBackRest(config, configNodes(config), record.stanza, logger);
  pgbackrest.prepare();
  mkdirSync(restoring, { mode: 0o700 });
  if (pgbackrest.runAs) {
    chownSync(restoring, pgbackrest.runAs.uid, pgbackrest.runAs.gid);
    makeTraversable(cluster.dir, pgbackrest.runAs);
  }
  if (record.target.type === "time") await commitPastTarget(config, record.stanza, logger, repo);
  step(
    `pgBackRest restore of the embedded cluster (${restore.databases.join(", ")}) from ${record.label} to ${describeTarget(record.target)}, in place`,
  );
  await source.restore({
    dataDir: restoring,
    set: record.label,
    target: cliTarget(record.target),
    targetAction: "promote",
    databases: restore.databases,
  });
  // The restored settings name the source's paths: point archiving and the socket at this cluster
  // (same stanza: the restored cluster has the backed-up one's system identifier).
  // Archiving stays on through recovery: the promotion's timeline history file must reach the
  // stanza, or a later recovery could not follow the new timeline.
  const settings = postgresSettings({
    configFile: pgbackrest.configFile,
    stanza: pgbackrest.stanza,
    socketDir: cluster.dir,
  });
  // pgBackRest's restore_command names the directory it restored into: the data dir, after the swap.
  const autoConf = join(restoring, "postgresql.auto.conf");
  writeFileSync(autoConf, readFileSync(autoConf, "utf8").split(restoring).join(cluster.dataDir));
  appendFileSync(
    autoConf,
    `\n# Lockstep: restored in place from ${plan.set}\n${Object.entries(settings)
      .map(([k, v]) => `${k} = '${v.replace(/'/g, "''")}'`)
      .join("\n")}\n`,
  );
  await writeMarker(dataDir, { set: plan.set, nodes: restore.nodes.map((n) => n.backup.name) });
  step("stopping the embedded cluster and putting the restored data directory in its place");
  await cluster.stop();
  // A rerun after a kill keeps the earlier run's replaced data too: the first is the way back.
  let kept = `data.replaced-${plan.set}`;
  for (let n = 2; existsSync(join(cluster.dir, kept)); n++) kept = `data.replaced-${plan.set}-${n}`;
  swapDataDir(cluster.dir, incoming, kept);
  step(`recovering to ${describeTarget(record.target)} (the replaced data directory is kept as ${kept})`);
  await cluster.start();
  await waitForPromotion(cluster, Date.now() + 30 * 60_000).catch((error: unknown) => {
    throw recoveryFailure(error, restore.databases.join(", "), record.target);
  });
  for (const db of await cluster.listDatabases()) {
    if (!restore.databases.includes(db)) await cluster.dropDatabase(db); // left zeroed by --db-include
  }
  // The config names the port the server came up on; ALTER SYSTEM makes the settings the cluster's own.
  pgbackrest.prepare(embeddedCluster(cluster));
  await enableArchiving(cluster, pgbackrest);
  // Restored from an older repository while the current one is a new encrypted one: its stanza
  // (idempotent), so that the archiving just pointed at it works.
  if (source.repoPath !== pgbackrest.repoPath && pgbackrest.encrypted) await pgbackrest.stanzaCreate();
}

async function writeMarker(dataDir: string, marker: RestoreMarker): Promise<void> {
  await writeFileAtomic(restoreMarkerPath(dataDir), JSON.stringify(marker));
}
