import { stat } from "node:fs/promises";
import { join } from "node:path";
import { holdsOf, type SequencerRpc } from "./backup-holds.ts";
import type { BackupRepository, InUseMarker, SetSummary } from "./backup-repository.ts";
import {
  expirePgBackRest,
  type PgBackRestExpiryContext,
  type StanzaExpiry,
} from "./pgbackrest/pgbackrest-retention.ts";

export interface RetentionDecision {
  id: string;
  action: "keep" | "delete";
  reason: string;
}

/**
 * Why a set can (or cannot) be the one a disaster needs: it holds every node of the config, its
 * order check passed against its own sequencer (chain hashes), and it has not failed verification.
 * Null when it qualifies.
 */
export function disqualification(set: SetSummary, configNodes: readonly string[]): string | null {
  const m = set.manifest;
  const missing = configNodes.filter((name) => !m.nodes.some((n) => n.name === name));
  if (missing.length > 0) return `partial (lacks ${missing.join(", ")})`;
  if (!m.safe) return `unsafe: fork (${m.unsafe.map((u) => u.node).join(", ")})`;
  if (m.orderCheck !== "checked" || m.manifestVersion < 2)
    return "order not checked on chain hashes (written by an older build)";
  if (set.verification && !set.verification.ok) return `failed verification (${set.verification.verifiedAt})`;
  if (set.damaged) return `damaged: ${set.damaged} (\`lockstep backup verify ${set.id}\`)`;
  return null;
}

/**
 * Each set with retention's quick look at its files: every file exists with the size its manifest
 * records (a stat, no hashing). *Why:* a set never verified would otherwise count as "the newest
 * good set", and `expire` would delete the last one that restores, keeping one whose artifact a
 * full disk truncated or someone deleted. Hashes are `backup verify`'s (too slow to run here).
 */
export async function withDiskState(repository: BackupRepository, sets: readonly SetSummary[]) {
  return Promise.all(
    sets.map(async (summary): Promise<SetSummary> => {
      const users = await repository.inUse(summary.id);
      const set = users.length > 0 ? { ...summary, inUse: describeUsers(users) } : summary;
      const dir = repository.setDir(set.id);
      for (const node of set.manifest.nodes)
        for (const file of node.files) {
          const size = await stat(join(dir, file.path)).then(
            (s) => BigInt(s.size),
            () => null,
          );
          if (size === null) return { ...set, damaged: `${file.path} is missing` };
          if (size.toString() !== file.bytes)
            return { ...set, damaged: `${file.path} has ${size} bytes, the manifest says ${file.bytes}` };
        }
      return set;
    }),
  );
}

/**
 * Which sets `backup expire --keep N` keeps, newest first, with the reason for each (docs/design.md §4.6):
 * the newest N, and always the newest set that could restore the whole network (complete, safe by
 * the chain-hash order check, not failed verification), even beyond N: that is the set a disaster
 * needs. Pure, for --dry-run.
 */
export function planRetention(
  sets: readonly SetSummary[],
  keep: number,
  configNodes: readonly string[],
): RetentionDecision[] {
  // A checkpoint's set lives as long as the checkpoint (`checkpoint delete`); a point-in-time set
  // is what a restore to a time wrote, redone on demand. Neither counts among the newest N.
  const special: RetentionDecision[] = sets.flatMap((set): RetentionDecision[] => {
    const p = set.manifest.pointInTime;
    if (set.manifest.mode === "checkpoint")
      return [
        {
          id: set.id,
          action: "keep",
          reason: `the set of checkpoint ${p && "checkpoint" in p ? p.checkpoint : "?"}: kept until \`lockstep checkpoint delete\``,
        },
      ];
    if (set.manifest.mode === "point-in-time")
      return [
        {
          id: set.id,
          action: "delete",
          reason: "written by a restore to a point in time (written again if that restore is planned again)",
        },
      ];
    return [];
  });
  const ordinary = sets.filter((s) => !special.some((d) => d.id === s.id));
  return [...planOrdinary(ordinary, keep, configNodes), ...special]
    .map((d) => {
      // A set a restore is reading (a point-in-time set included) outlives the restore.
      const inUse = sets.find((s) => s.id === d.id)?.inUse;
      return d.action === "delete" && inUse
        ? {
            id: d.id,
            action: "keep" as const,
            reason: `in use by ${inUse}: kept until it ends (${d.reason})`,
          }
        : d;
    })
    .sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}

function describeUsers(users: readonly InUseMarker[]): string {
  return users.map((u) => `${u.purpose} (pid ${u.pid} on ${u.host}, since ${u.since})`).join(", ");
}

function planOrdinary(
  sets: readonly SetSummary[],
  keep: number,
  configNodes: readonly string[],
): RetentionDecision[] {
  const newestFirst = [...sets].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  const protectedSet = newestFirst.find((s) => disqualification(s, configNodes) === null);
  const newestOfNodes = newestPerNode(newestFirst, configNodes);
  return newestFirst.map((set, index) => {
    const isProtected = set.id === protectedSet?.id;
    const newestOf = newestOfNodes.get(set.id) ?? [];
    if (index < keep) {
      const also = isProtected ? " (and the newest complete, safe, verified set)" : "";
      return { id: set.id, action: "keep", reason: `among the newest ${keep}${also}` };
    }
    if (isProtected) {
      return {
        id: set.id,
        action: "keep",
        reason: "the newest set that holds every node, is safe and did not fail verification: never deleted",
      };
    }
    if (newestOf.length > 0) {
      return {
        id: set.id,
        action: "keep",
        reason: `the newest safe backup of ${newestOf.join(", ")}, so it holds the newest keys they rotated to: never deleted`,
      };
    }
    const why = disqualification(set, configNodes);
    const note = protectedSet
      ? ""
      : "; no set qualifies as the one to keep for a disaster (take a full `lockstep backup create`)";
    return {
      id: set.id,
      action: "delete",
      reason: `older than the newest ${keep}${why ? `; ${why}` : `; ${protectedSet?.id} is newer and complete`}${note}`,
    };
  });
}

/**
 * Per node of the config, the newest set that holds it safely (not in the set's unsafe list, not
 * failed verification): set id → those nodes. *Why:* a key rotation backs up only the rotating node
 * (docs/keys.md); that set, or a newer one of the node, is the only one holding the node's new key,
 * and deleting it would leave every remaining set restoring the node without the key topology
 * expects (MISSING_PRIVATE_KEY).
 */
function newestPerNode(
  newestFirst: readonly SetSummary[],
  configNodes: readonly string[],
): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const node of configNodes) {
    const set = newestFirst.find(
      (s) =>
        s.manifest.nodes.some((n) => n.name === node) &&
        !s.manifest.unsafe.some((u) => u.node === node) &&
        !(s.verification && !s.verification.ok) &&
        !s.damaged,
    );
    if (set) out.set(set.id, [...(out.get(set.id) ?? []), node]);
  }
  return out;
}

/**
 * Applies the plan unless dryRun; returns the decisions with what was deleted. The live sequencer
 * releases the deleted sets' retention holds, and any hold of a set no longer in the repository; a
 * kept set that lacks its holds gets them (e.g. the sequencer was down when it was taken). With
 * `pgbackrest`, pgBackRest's backups that no remaining set needs are expired after the sets
 * (pgbackrest-retention.ts), so the two repositories never disagree.
 */
export async function expireSets(
  repository: BackupRepository,
  keep: number,
  dryRun: boolean,
  configNodes: readonly string[],
  progress: (line: string) => void,
  sequencer?: SequencerRpc,
  /** One pgBackRest repository, or each of them (plain, and one per backup key: pgbackrest-repo.ts). */
  pgbackrest?: PgBackRestExpiryContext | readonly PgBackRestExpiryContext[],
): Promise<{
  decisions: RetentionDecision[];
  deleted: string[];
  released: string[];
  held: string[];
  pgbackrest: StanzaExpiry[];
}> {
  const sets = await withDiskState(repository, await repository.listSets());
  const decisions = planRetention(sets, keep, configNodes);
  const deleted: string[] = [];
  for (const d of decisions) {
    if (d.action === "delete" && !dryRun) {
      // A restore that began since the listing: its set stays (the restore reads it after marking it).
      const users = await repository.inUse(d.id);
      if (users.length > 0) {
        d.action = "keep";
        d.reason = `in use by ${describeUsers(users)}: kept until it ends (${d.reason})`;
      }
    }
    progress(`${d.action === "keep" ? "keep  " : dryRun ? "would delete" : "delete"} ${d.id}: ${d.reason}`);
    if (d.action === "delete" && !dryRun) {
      await repository.deleteSet(d.id);
      deleted.push(d.id);
    }
  }
  const doomed = new Set(decisions.filter((d) => d.action === "delete").map((d) => d.id));
  const physical = (current: () => Promise<SetSummary[]>) =>
    pgbackrest
      ? expirePgBackRest({
          context: pgbackrest,
          dryRun,
          deleted: sets.filter((s) => doomed.has(s.id)).map((s) => s.manifest),
          current: async () => ({
            remaining: (await current()).map((s) => s.manifest),
            writing: await repository.inProgress(),
          }),
          progress,
        })
      : Promise.resolve([]);
  if (dryRun) {
    const kept = sets.filter((s) => !doomed.has(s.id));
    return { decisions, deleted, released: [], held: [], pgbackrest: await physical(async () => kept) };
  }
  await repository.cleanIncomplete();
  const kept = sets.filter((s) => !deleted.includes(s.id));
  // A set being written has provisional holds: never release those.
  const writing = await repository.inProgress();
  const { released, held } = sequencer
    ? await reconcileHolds(sequencer, kept, writing, progress)
    : { released: [], held: [] };
  // Read afresh: a set completed since the listing above needs its backups too.
  const expired = await physical(() => repository.listSets());
  return { decisions, deleted, released, held, pgbackrest: expired };
}

/** Makes the sequencer's holds match the repository's sets (see expireSets). */
async function reconcileHolds(
  rpc: SequencerRpc,
  kept: readonly SetSummary[],
  writing: readonly string[],
  progress: (line: string) => void,
): Promise<{ released: string[]; held: string[] }> {
  let status: Awaited<ReturnType<SequencerRpc["getSequencerStatus"]>>;
  try {
    status = await rpc.getSequencerStatus({}, { timeoutMs: 5000 });
  } catch (error) {
    progress(
      `WARNING: the sequencer does not answer (${(error as Error).message}): the deleted sets' retention holds stay until the next \`lockstep backup expire\``,
    );
    return { released: [], held: [] };
  }
  const keptIds = new Set([...kept.map((s) => s.id), ...writing]);
  const released = [...new Set(status.holds.map((h) => h.setId))].filter((id) => !keptIds.has(id));
  if (released.length > 0) {
    await rpc.releaseRetentionHolds({ setIds: released });
    progress(`released the retention holds of ${released.join(", ")}`);
  }
  const held: string[] = [];
  const stranded = new Set(status.stranded.map((s) => s.setId));
  for (const set of kept) {
    const holds = holdsOf(set.manifest.nodes);
    if (holds.length === 0 || stranded.has(set.id) || status.holds.some((h) => h.setId === set.id)) continue;
    try {
      await rpc.setRetentionHolds({ setId: set.id, holds });
      held.push(set.id);
      progress(`set the missing retention holds of ${set.id}`);
    } catch (error) {
      progress(`${set.id}: cannot be held (${(error as Error).message})`);
    }
  }
  return { released, held };
}
