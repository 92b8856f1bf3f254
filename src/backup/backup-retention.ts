import type { BackupRepository, SetSummary } from "./backup-repository.ts";

export interface RetentionDecision {
  id: string;
  action: "keep" | "delete";
  reason: string;
}

/**
 * Which sets `backup expire --keep N` keeps, newest first, with the reason for each (DESIGN §4.6):
 * the newest N; the newest safe set, always (even beyond N: it is the one a restore needs); and
 * any set a kept subset set was order-checked against (a restore pairs them). Pure: for --dry-run.
 */
export function planRetention(sets: readonly SetSummary[], keep: number): RetentionDecision[] {
  const newestFirst = [...sets].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  const newestSafe = newestFirst.find((s) => s.manifest.safe && s.manifest.orderCheck !== "unchecked");
  const decisions = new Map<string, RetentionDecision>();
  newestFirst.forEach((set, index) => {
    if (index < keep) {
      decisions.set(set.id, { id: set.id, action: "keep", reason: `among the newest ${keep}` });
    } else if (set.id === newestSafe?.id) {
      decisions.set(set.id, { id: set.id, action: "keep", reason: "the newest safe set is never deleted" });
    } else {
      decisions.set(set.id, { id: set.id, action: "delete", reason: `older than the newest ${keep}` });
    }
  });
  if (newestSafe && newestFirst.indexOf(newestSafe) < keep) {
    const d = decisions.get(newestSafe.id);
    if (d) d.reason += " (and the newest safe set)";
  }
  for (const set of newestFirst) {
    const against = set.manifest.checkedAgainst;
    const target = against ? decisions.get(against) : undefined;
    if (decisions.get(set.id)?.action === "keep" && target?.action === "delete") {
      target.action = "keep";
      target.reason = `holds the sequencer that kept set ${set.id} was checked against`;
    }
  }
  for (const set of newestFirst) {
    const d = decisions.get(set.id);
    if (d?.action === "delete" && !set.manifest.safe) d.reason += "; unsafe (fork)";
  }
  return newestFirst.map((s) => decisions.get(s.id) as RetentionDecision);
}

/** Applies the plan unless dryRun; returns the decisions with what was deleted. */
export async function expireSets(
  repository: BackupRepository,
  keep: number,
  dryRun: boolean,
  progress: (line: string) => void,
): Promise<{ decisions: RetentionDecision[]; deleted: string[] }> {
  const decisions = planRetention(await repository.listSets(), keep);
  const deleted: string[] = [];
  for (const d of decisions) {
    progress(`${d.action === "keep" ? "keep  " : dryRun ? "would delete" : "delete"} ${d.id}: ${d.reason}`);
    if (d.action === "delete" && !dryRun) {
      await repository.deleteSet(d.id);
      deleted.push(d.id);
    }
  }
  if (!dryRun) await repository.cleanIncomplete();
  return { decisions, deleted };
}
