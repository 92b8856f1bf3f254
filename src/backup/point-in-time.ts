import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { configNodes } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { createPgDb } from "../storage/pg-db.ts";
import { BackupKeys } from "./backup-keys.ts";
import { BackupRepository } from "./backup-repository.ts";
import type { Manifest, RecoveryTarget } from "./manifest.ts";
import { readNodeSnapshotInfo } from "./node-position.ts";
import {
  commitPastTarget,
  type NodeCluster,
  nodeCluster,
  stanzaPgBackRest,
} from "./pgbackrest/node-cluster.ts";
import { recoveryFailure } from "./pgbackrest/pgbackrest-engine.ts";
import type { PgBackRestBackup } from "./pgbackrest/pgbackrest-info.ts";
import { knownRepos, type PgBackRestRepo } from "./pgbackrest/pgbackrest-repo.ts";
import { restoreToScratch } from "./pgbackrest/scratch-restore.ts";
import { beginPointSet, lookupsOf, type PointNode, writePointSet } from "./point-in-time-set.ts";

/**
 * `restore plan|apply --to-time T [--sequencer-to-time S]` (docs/restore.md "Point-in-time
 * recovery"): participants and mediators recovered to T, the sequencer to S (default T; an S before
 * T is allowed only as far as the order check allows it). A time has no positions recorded for it,
 * so they are read here: each cluster is recovered to its time in a scratch cluster, the nodes'
 * identities and positions read there (members first, then the sequencer with their events looked
 * up: the order check on chain hashes), and the result written as a backup set (mode
 * point-in-time) that `restore apply` then restores like any other. Recovery to a time is
 * deterministic, so apply's recovery yields what was read here.
 */

export interface TimeTarget {
  /** As given: passed to PostgreSQL unchanged (microseconds kept). */
  text: string;
  at: Date;
}

const TIME = /^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d{1,6})?(Z|[+-]\d\d(?::?\d\d)?)$/;

/** A recovery target time: a timestamp with an explicit zone (a host's local zone would be a guess). */
export function parseTargetTime(text: string, what = "--to-time"): TimeTarget {
  const m = TIME.exec(text.trim());
  if (!m) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: `${what} ${text}: give a timestamp with its zone, e.g. 2026-12-03 07:30:00.123456+00 or 2026-12-03T07:30:00Z`,
    });
  }
  let zone = m[4] as string;
  if (zone !== "Z" && zone.length === 3) zone = `${zone}:00`;
  else if (zone !== "Z" && !zone.includes(":")) zone = `${zone.slice(0, 3)}:${zone.slice(3)}`;
  const at = new Date(`${m[1]}T${m[2]}${(m[3] ?? "").slice(0, 4)}${zone}`);
  if (Number.isNaN(at.getTime())) {
    throw new LockstepError("INVALID_ARGUMENT", { details: `${what} ${text} is not a valid time` });
  }
  // Not compared with this host's clock: a time is in the future or not by the clock of the cluster
  // that stamped the commits (commitPastTarget; recovery of an external cluster fails with
  // PITR_TARGET_UNREACHABLE when its WAL ends before the time).
  return { text: text.trim(), at };
}

/** Where a node's history before a time is: a stanza and its newest backup that ended before it. */
interface Source {
  entry: NodeEntry;
  stanza: string;
  /** The pgBackRest repository the backup is in (the current one, or an older key's). */
  repo: PgBackRestRepo;
  database: string;
  backup: PgBackRestBackup;
  /** The node's live cluster when the stanza is its current one (its WAL can still be archived). */
  live: NodeCluster | undefined;
  target: TimeTarget;
}

/**
 * The pgBackRest backup a recovery to `target` starts from: the newest that stopped a whole second
 * before it (pgBackRest's stop time is in seconds; a backup must be consistent before the target).
 */
function baseBefore(backups: readonly PgBackRestBackup[], target: Date): PgBackRestBackup | undefined {
  return backups.filter((b) => b.stoppedAt.getTime() + 1000 <= target.getTime()).at(-1);
}

async function findSource(
  config: LockstepConfig,
  entry: NodeEntry,
  target: TimeTarget,
  sets: readonly Manifest[],
  repos: readonly PgBackRestRepo[],
  infos: Map<string, Promise<PgBackRestBackup[]>>,
  logger: Logger,
): Promise<Source> {
  const candidates: { stanza: string; database: string; live?: NodeCluster }[] = [];
  const live = await nodeCluster(config, entry, logger).catch(() => undefined);
  if (live) candidates.push({ stanza: live.pgbackrest.stanza, database: live.database, live });
  // Stanzas of clusters the node had before (a cluster lost and created anew gets a new stanza).
  for (const set of sets) {
    const node = set.nodes.find((n) => n.name === entry.name);
    const record = node?.engine;
    if (!node || record?.name !== "pgbackrest") continue;
    if (!candidates.some((c) => c.stanza === record.stanza))
      candidates.push({ stanza: record.stanza, database: record.database });
  }
  let best: Source | undefined;
  const seen = new Set<string>();
  for (const c of candidates) {
    if (seen.has(c.stanza)) continue;
    seen.add(c.stanza);
    // Every repository: turning backup.encryption on, or changing its key, starts a new one, and a
    // time before that is in an older one (pgbackrest/pgbackrest-repo.ts). repos[0] is the current.
    for (const repo of repos) {
      if (repo !== repos[0] && !existsSync(join(repo.path, "backup", c.stanza))) continue;
      const key = `${c.stanza}\n${repo.folder}`;
      let backups = infos.get(key);
      if (!backups) {
        const pgbackrest = stanzaPgBackRest(config, configNodes(config), c.stanza, logger, repo);
        pgbackrest.prepare();
        backups = pgbackrest.info().then(
          (i) => i.backups,
          () => [],
        );
        infos.set(key, backups);
      }
      const base = baseBefore(await backups, target.at);
      if (base && (!best || base.stoppedAt > best.backup.stoppedAt)) {
        const live = repo === repos[0] ? c.live : undefined;
        best = { entry, stanza: c.stanza, repo, database: c.database, backup: base, live, target };
      }
    }
  }
  if (!best) {
    throw new LockstepError("PITR_NO_BASE_BACKUP", {
      node: entry.name,
      stanza: [...seen].join(", ") || "none",
      target: `time ${target.text}`,
    });
  }
  return best;
}

export interface PointInTimeOptions {
  config: LockstepConfig;
  time: string;
  /** The sequencer's target; default `time`. */
  sequencerTime?: string;
  /** Default: every node of the config. */
  nodes?: readonly NodeEntry[];
  logger: Logger;
  progress?: (line: string) => void;
}

/** Recovers each cluster to its time in a scratch cluster, reads the nodes there, writes the set. */
export async function pointInTimeSet(options: PointInTimeOptions): Promise<Manifest> {
  const { config, logger } = options;
  const memberTime = parseTargetTime(options.time);
  const sequencerTime = options.sequencerTime
    ? parseTargetTime(options.sequencerTime, "--sequencer-to-time")
    : memberTime;
  const entries = options.nodes ?? configNodes(config);
  const repository = new BackupRepository(config.backup.repository, logger);
  const startedAt = new Date();
  // Begun first: while it is being written, `backup expire` leaves the base backups alone.
  const setId = await beginPointSet(repository, startedAt);
  try {
    return await pointInto(options, repository, setId, startedAt, memberTime, sequencerTime, entries);
  } catch (error) {
    await repository.abandonSet(setId).catch(() => {});
    throw error;
  }
}

async function pointInto(
  options: PointInTimeOptions,
  repository: BackupRepository,
  setId: string,
  startedAt: Date,
  memberTime: TimeTarget,
  sequencerTime: TimeTarget,
  entries: readonly NodeEntry[],
): Promise<Manifest> {
  const { config, logger } = options;
  const progress = options.progress ?? (() => {});
  const sets = (await repository.listSets()).map((s) => s.manifest);
  const infos = new Map<string, Promise<PgBackRestBackup[]>>();
  // Those whose key is not configured cannot be read: a time only they cover has no base backup.
  const repos = knownRepos(config, new BackupKeys(config.backup.encryption)).flatMap((r) =>
    r.ok ? [r.repo] : [],
  );
  const sources: Source[] = [];
  for (const entry of entries) {
    const target = entry.kind === "sequencer" ? sequencerTime : memberTime;
    sources.push(await findSource(config, entry, target, sets, repos, infos, logger));
  }
  const archived = new Set<string>();
  for (const source of sources) {
    if (!source.live || archived.has(source.stanza)) continue;
    archived.add(source.stanza);
    // The stanza's latest target (the sequencer's may be later than its members'), checked
    // against the cluster's clock before the commit that recovery stops after.
    const latest = sources
      .filter((s) => s.stanza === source.stanza)
      .reduce((a, b) => (b.target.at.getTime() > a.target.at.getTime() ? b : a));
    progress(`${source.stanza}: a commit after the target, archived`);
    await commitPastTarget(config, source.stanza, logger, source.repo, {
      node: latest.entry.name,
      ...latest.target,
    });
  }
  // One scratch recovery per cluster, backup and time; the sequencer's group last.
  const groups = new Map<string, Source[]>();
  for (const s of sources) {
    const key = `${s.stanza}\n${s.repo.folder}\n${s.backup.label}\n${s.target.text}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  const ordered = [...groups.values()].sort(
    (a, b) =>
      Number(a.some((s) => s.entry.kind === "sequencer")) -
      Number(b.some((s) => s.entry.kind === "sequencer")),
  );
  const parentDir = resolve(config["data-dir"], "restore-scratch");
  mkdirSync(parentDir, { recursive: true });
  const read: PointNode[] = [];
  for (const group of ordered) {
    const { stanza, repo, backup, target } = group[0] as Source;
    const recoveryTarget: RecoveryTarget = { type: "time", time: target.text };
    progress(
      `${group.map((s) => s.entry.name).join(", ")}: recovering ${stanza} from ${backup.label} to ${target.text} (scratch cluster)`,
    );
    const pgbackrest = stanzaPgBackRest(config, configNodes(config), stanza, logger, repo);
    pgbackrest.prepare();
    const scratch = await restoreToScratch({
      pgbackrest,
      set: backup.label,
      target: { type: "time", time: target.text },
      databases: group.map((s) => s.database),
      parentDir,
      logger,
    }).catch((error: unknown) => {
      throw recoveryFailure(error, group.map((s) => s.entry.name).join(", "), recoveryTarget);
    });
    try {
      const members = [...group].sort(
        (a, b) => Number(a.entry.kind === "sequencer") - Number(b.entry.kind === "sequencer"),
      );
      for (const source of members) {
        const db = createPgDb({ connectionString: scratch.connectionUrl(source.database), max: 1 });
        try {
          const lookups = source.entry.kind === "sequencer" ? lookupsOf(read.map((r) => r.info)) : [];
          const info = await readNodeSnapshotInfo(db, source.entry.kind, config.synchronizer.id, lookups);
          if (info.nodeName !== source.entry.name || info.kind !== source.entry.kind) {
            throw new LockstepError("PITR_NO_BASE_BACKUP", {
              node: source.entry.name,
              stanza,
              target: `time ${target.text} (database ${source.database} there belongs to ${info.kind} ${info.nodeName})`,
            });
          }
          read.push({
            info,
            database: source.database,
            stanza,
            repo,
            backup,
            target: recoveryTarget,
            cluster: { description: `stanza ${stanza}`, systemIdentifier: info.postgres.systemIdentifier },
            readAt: new Date(),
          });
        } catch (error) {
          if (error instanceof LockstepError) throw error;
          throw new LockstepError("PITR_TARGET_UNREACHABLE", {
            node: source.entry.name,
            target: `time ${target.text}`,
            reason: `the node's database at that time cannot be read (did the node exist yet?): ${(error as Error).message}`,
          });
        } finally {
          await db.close();
        }
      }
    } finally {
      await scratch.cleanup();
    }
  }
  const manifest = await writePointSet({
    config,
    repository,
    setId,
    nodes: read,
    mode: "point-in-time",
    pointInTime: { time: memberTime.text, sequencerTime: sequencerTime.text },
    startedAt,
  });
  progress(`point in time ${memberTime.text}: backup set ${manifest.id}`);
  return manifest;
}
