/**
 * pgBackRest's side of `lockstep backup expire` (issue 14): Lockstep's sets decide which of
 * pgBackRest's backups stay, so the two never disagree. pgBackRest never expires on its own
 * (`expire-auto=n`, pgbackrest-config.ts); after Lockstep deleted its sets, every backup no remaining
 * set needs is expired with `pgbackrest expire --set`.
 *
 * A backup is needed when a remaining set restores from it, or a needed backup builds on it (its
 * `references` and `prior` chain). `expire --set L` also removes every backup that builds on L; as the
 * kept backups are closed under "builds on", every dependent of an expired backup is expired too, so
 * expiring a kept one by the way cannot happen. The newest full backup of a stanza is always kept: the
 * next incremental builds on it (and pgBackRest refuses to expire a stanza's only full).
 *
 * Each pgBackRest repository is expired on its own (pgbackrest-repo.ts: the plain one, and one per
 * backup key with backup.encryption), against the sets whose records name it. A repository that is
 * no longer the current one keeps its newest full backup per stanza too (pgBackRest would not
 * expire it): remove its folder by hand once no set names it (`backup expire` says when none does).
 */
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { basename, join } from "node:path";
import { isLockstepError, toLockstepError } from "../../common/errors.ts";
import { type Manifest, nodeEngine, type PgBackRestRecord } from "../manifest.ts";
import type { PgBackRest } from "./pgbackrest-cli.ts";
import type { PgBackRestBackup } from "./pgbackrest-info.ts";

export interface ExpiredLabel {
  label: string;
  reason: string;
}

export interface KeptLabel {
  label: string;
  /** The sets that restore from it or from a backup building on it (empty: kept for another reason). */
  neededBy: string[];
  reason: string;
}

export interface StanzaExpiryPlan {
  stanza: string;
  /** What goes, oldest first (in a dry run: would go). */
  expired: ExpiredLabel[];
  kept: KeptLabel[];
  /** Backups remaining sets restore from that pgBackRest no longer holds: those sets cannot be restored. */
  missing: { label: string; neededBy: string[] }[];
  /** The `expire --set` commands: expired backups building on no other expired one, with what goes along. */
  roots: { label: string; dependents: string[] }[];
}

export interface PlanOptions {
  /** Sets being written (no manifest yet): they may restore from any backup, so none is expired. */
  writing?: readonly string[];
  /** The sets just deleted, to say in a reason which ones needed a backup that goes now. */
  deleted?: readonly Manifest[];
}

type Refs = Map<string, Map<string, string[]>>;

/** stanza → label → the ids of the sets whose nodes restore from that backup. */
function referencesOf(sets: readonly Manifest[]): Refs {
  const refs: Refs = new Map();
  for (const set of sets) {
    for (const node of set.nodes) {
      const engine = nodeEngine(node);
      if (engine.name !== "pgbackrest") continue;
      const labels = refs.get(engine.stanza) ?? new Map<string, string[]>();
      const ids = labels.get(engine.label) ?? [];
      if (!ids.includes(set.id)) ids.push(set.id);
      labels.set(engine.label, ids);
      refs.set(engine.stanza, labels);
    }
  }
  return refs;
}

/** Every backup of the list that `backup` builds on: its references and its prior chain, transitively. */
function ancestorsOf(backup: PgBackRestBackup, byLabel: ReadonlyMap<string, PgBackRestBackup>): Set<string> {
  const out = new Set<string>();
  const queue = [...backup.references, ...(backup.prior ? [backup.prior] : [])];
  for (let label = queue.pop(); label !== undefined; label = queue.pop()) {
    const found = byLabel.get(label);
    if (!found || out.has(label)) continue;
    out.add(label);
    queue.push(...found.references, ...(found.prior ? [found.prior] : []));
  }
  return out;
}

/** label → the sets needing it, directly or through a backup building on it. */
function needs(
  labels: ReadonlyMap<string, string[]> | undefined,
  byLabel: ReadonlyMap<string, PgBackRestBackup>,
  ancestors: ReadonlyMap<string, Set<string>>,
): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const [label, ids] of labels ?? []) {
    if (!byLabel.has(label)) continue;
    for (const needed of [label, ...(ancestors.get(label) ?? [])]) {
      const set = out.get(needed) ?? new Set<string>();
      for (const id of ids) set.add(id);
      out.set(needed, set);
    }
  }
  return out;
}

const sorted = (ids: Iterable<string>): string[] => [...ids].sort();
const plural = (ids: readonly string[], one: string, many: string): string =>
  `${ids.length > 1 ? many : one} ${ids.join(", ")}`;

/**
 * Per stanza (of `stanzaBackups`, pgBackRest's `info`, oldest first), which backups to expire and which
 * to keep, each with its reason. Pure, for --dry-run and the tests.
 */
export function planPgBackRestExpiry(
  remainingSets: readonly Manifest[],
  stanzaBackups: ReadonlyMap<string, readonly PgBackRestBackup[]>,
  options: PlanOptions = {},
): StanzaExpiryPlan[] {
  const remaining = referencesOf(remainingSets);
  const deleted = referencesOf(options.deleted ?? []);
  const writing = sorted(options.writing ?? []);
  const plans: StanzaExpiryPlan[] = [];
  for (const stanza of sorted(stanzaBackups.keys())) {
    const backups = stanzaBackups.get(stanza) ?? [];
    const byLabel = new Map(backups.map((b) => [b.label, b]));
    const ancestors = new Map(backups.map((b) => [b.label, ancestorsOf(b, byLabel)]));
    const needed = needs(remaining.get(stanza), byLabel, ancestors);
    const direct = remaining.get(stanza) ?? new Map<string, string[]>();
    const formerly = needs(deleted.get(stanza), byLabel, ancestors);
    const newestFull = backups
      .filter((b) => b.type === "full")
      .map((b) => b.label)
      .sort()
      .at(-1);
    const plan: StanzaExpiryPlan = { stanza, expired: [], kept: [], missing: [], roots: [] };
    for (const [label, ids] of direct) {
      if (!byLabel.has(label)) plan.missing.push({ label, neededBy: sorted(ids) });
    }
    // The kept backups, closed under "builds on" (needed already is; the newest full builds on none).
    const keep = new Set([...needed.keys(), ...(newestFull ? [newestFull] : [])]);
    if (writing.length > 0) for (const b of backups) keep.add(b.label);
    for (const b of backups) {
      const ids = needed.get(b.label);
      if (ids) {
        plan.kept.push({
          label: b.label,
          neededBy: sorted(ids),
          reason: keptReason(b.label, direct, ancestors),
        });
        if (b.label === newestFull) plan.kept.at(-1)!.reason += "; also the newest full backup";
      } else if (b.label === newestFull) {
        plan.kept.push({
          label: b.label,
          neededBy: [],
          reason: `the newest full backup of stanza ${stanza}: the base the next incremental or differential backup builds on, never expired`,
        });
      } else if (keep.has(b.label)) {
        plan.kept.push({
          label: b.label,
          neededBy: writing,
          reason: `${plural(writing, "set", "sets")} ${writing.length > 1 ? "are" : "is"} being written and may restore from it: left to the next \`lockstep backup expire\``,
        });
      }
    }
    for (const b of backups) {
      if (keep.has(b.label)) continue;
      const base = [...(ancestors.get(b.label) ?? [])].filter((a) => !keep.has(a)).sort();
      const was = formerly.get(b.label);
      const why = was
        ? `no remaining set needs it (${plural(sorted(was), "set", "sets")}, deleted now, did)`
        : "no set restores from it or from a backup building on it (taken by hand, or of a set that is gone)";
      // The expired backup it builds on that builds on no other: the one `expire --set` names.
      const root = base.find((a) => [...(ancestors.get(a) ?? [])].every((x) => keep.has(x)));
      const along = root ? `; goes with ${root}, which it builds on` : "";
      plan.expired.push({ label: b.label, reason: `${why}${along}` });
      if (base.length === 0) {
        // None of them is kept: a kept backup's ancestors are all kept.
        const dependents = backups.filter((d) => ancestors.get(d.label)?.has(b.label)).map((d) => d.label);
        plan.roots.push({ label: b.label, dependents });
      }
    }
    plans.push(plan);
  }
  return plans;
}

/** Why a needed backup stays: the sets restoring from it, and the needed backups building on it. */
function keptReason(
  label: string,
  direct: ReadonlyMap<string, string[]>,
  ancestors: ReadonlyMap<string, Set<string>>,
): string {
  const own = direct.get(label);
  const builders = [...direct.keys()].filter((other) => ancestors.get(other)?.has(label)).sort();
  const parts: string[] = [];
  if (own) parts.push(`${plural(sorted(own), "set", "sets")} restore${own.length > 1 ? "" : "s"} from it`);
  if (builders.length > 0) {
    const ids = sorted(new Set(builders.flatMap((b) => direct.get(b) ?? [])));
    const verb = builders.length > 1 ? "build" : "builds";
    parts.push(`${builders.join(", ")} ${verb} on it (restored by ${plural(ids, "set", "sets")})`);
  }
  return parts.join("; ");
}

/** Where one repository's pgBackRest backups are, and how to reach them. */
export interface PgBackRestExpiryContext {
  /** pgBackRest's repository (`<backup.repository>/pgbackrest`, or `pgbackrest-<fingerprint>`). */
  repoPath: string;
  /** The backup key it is encrypted under (records naming it are its); absent: the plain one. */
  keyFingerprint?: string;
  /** false: no longer written to (an older key's, or plain while encryption is on). Default true. */
  current?: boolean;
  /** Why it cannot be opened (its key is not configured): left alone, said so. */
  unavailable?: string;
  /**
   * pgBackRest for a stanza, prepared (may throw PGBACKREST_NOT_INSTALLED, or BACKUP_KEY_MISSING /
   * _MISMATCH for a repository whose key is not configured: it is then left alone, and said so).
   */
  forStanza: (stanza: string) => PgBackRest;
}

export interface ExpirePgBackRestRequest {
  /** One repository, or each of them (every one is expired against the sets that name it). */
  context: PgBackRestExpiryContext | readonly PgBackRestExpiryContext[];
  dryRun: boolean;
  /** The sets Lockstep deletes (dry run) or deleted. */
  deleted: readonly Manifest[];
  /**
   * The sets that remain and those being written. Called again after pgBackRest's `info`: a set that
   * completed or started meanwhile then counts, so no backup in that `info` belongs to a set unseen.
   */
  current: () => Promise<{ remaining: Manifest[]; writing: string[] }>;
  progress: (line: string) => void;
}

/** What was done on a stanza: the plan, `expired` only what pgBackRest did expire (dry run: would). */
export interface StanzaExpiry {
  stanza: string;
  /** An encrypted repository's folder (`pgbackrest-<fingerprint>`); absent: the plain one. */
  repository?: string;
  expired: ExpiredLabel[];
  kept: KeptLabel[];
  missing: { label: string; neededBy: string[] }[];
  /** Why the stanza was left (partly) alone: pgBackRest failed, or a backup is running. */
  error?: string;
}

/** The stanzas the sets name, and those with a folder in pgBackRest's repository. */
async function stanzasOf(repoPath: string, sets: readonly Manifest[]): Promise<string[]> {
  const named = [...referencesOf(sets).keys()];
  const folders = await readdir(join(repoPath, "backup"), { withFileTypes: true }).catch(() => []);
  return sorted(new Set([...named, ...folders.filter((d) => d.isDirectory()).map((d) => d.name)]));
}

/** The sets as far as one repository goes: only their nodes whose backup is in it. */
function inRepository(sets: readonly Manifest[], keyFingerprint: string | undefined): Manifest[] {
  return sets.map((set) => ({
    ...set,
    nodes: set.nodes.filter((node) => {
      const engine = nodeEngine(node);
      return (
        engine.name === "pgbackrest" &&
        (engine as PgBackRestRecord).encryption?.keyFingerprint === keyFingerprint
      );
    }),
  }));
}

/**
 * Expires, repository by repository and stanza by stanza, the pgBackRest backups no remaining set
 * needs (planPgBackRestExpiry), or only reports them when dryRun. Nothing to do without pgBackRest
 * or without a repository folder. A stanza pgBackRest fails on is reported (error) and left as it
 * is: the next run expires it.
 */
export async function expirePgBackRest(request: ExpirePgBackRestRequest): Promise<StanzaExpiry[]> {
  const contexts = "repoPath" in request.context ? [request.context] : request.context;
  const results: StanzaExpiry[] = [];
  for (const context of contexts) {
    const done = await expireRepository(request, context);
    if (done === null) break; // pgBackRest is not installed: said once
    results.push(...done);
  }
  return results;
}

async function expireRepository(
  request: ExpirePgBackRestRequest,
  context: PgBackRestExpiryContext,
): Promise<StanzaExpiry[] | null> {
  const { dryRun } = request;
  if (!existsSync(context.repoPath)) return [];
  const fingerprint = context.keyFingerprint;
  const repository = fingerprint ? basename(context.repoPath) : undefined;
  const own = (stanza: string) => (repository ? `${repository}/${stanza}` : stanza);
  const progress = (line: string) => request.progress(line);
  const current = async () => {
    const now = await request.current();
    return { remaining: inRepository(now.remaining, fingerprint), writing: now.writing };
  };
  if (context.unavailable) {
    progress(
      `WARNING: pgBackRest repository ${basename(context.repoPath)}: ${context.unavailable}; its backups are left alone`,
    );
    return [];
  }
  const deleted = inRepository(request.deleted, fingerprint);
  const before = await current();
  if (
    context.current === false &&
    before.writing.length === 0 &&
    before.remaining.every((s) => s.nodes.length === 0)
  ) {
    progress(
      `pgBackRest repository ${basename(context.repoPath)}: no set restores from it and nothing is written to it any more; remove it by hand unless you want its point-in-time history`,
    );
  }
  const stanzas = await stanzasOf(context.repoPath, [...deleted, ...before.remaining]);
  const tools = new Map<string, PgBackRest>();
  const backups = new Map<string, PgBackRestBackup[]>();
  const results: StanzaExpiry[] = [];
  const left = (stanza: string, error: string) => {
    results.push({
      stanza,
      ...(repository ? { repository } : {}),
      expired: [],
      kept: [],
      missing: [],
      error,
    });
    progress(`WARNING: pgBackRest stanza ${own(stanza)}: ${error}; its backups are expired by a later run`);
  };
  for (const stanza of stanzas) {
    try {
      const pgbackrest = context.forStanza(stanza);
      const info = await pgbackrest.info();
      if (info.backupRunning) {
        left(stanza, "a pgBackRest backup is running");
        continue;
      }
      tools.set(stanza, pgbackrest);
      backups.set(stanza, info.backups);
    } catch (error) {
      if (isLockstepError(error, "PGBACKREST_NOT_INSTALLED")) {
        progress(`pgBackRest is not installed: its backups are left alone (${error.message})`);
        return null;
      }
      left(stanza, toLockstepError(error).message);
    }
  }
  const now = await current();
  const plans = planPgBackRestExpiry(now.remaining, backups, { writing: now.writing, deleted });
  for (const plan of plans) {
    const say = (line: string) => progress(`pgBackRest ${own(plan.stanza)}: ${line}`);
    for (const m of plan.missing) {
      say(`WARNING: ${m.label} is gone: ${plural(m.neededBy, "set", "sets")} cannot be restored from it`);
    }
    for (const k of plan.kept) say(`keep ${k.label}: ${k.reason}`);
    for (const e of plan.expired) say(`${dryRun ? "would expire" : "expire"} ${e.label}: ${e.reason}`);
    const result: StanzaExpiry = {
      stanza: plan.stanza,
      ...(repository ? { repository } : {}),
      expired: [],
      kept: plan.kept,
      missing: plan.missing,
    };
    results.push(result);
    if (dryRun) {
      result.expired = plan.expired;
      continue;
    }
    const done = new Set<string>();
    try {
      for (const root of plan.roots) {
        await tools.get(plan.stanza)!.expire({ set: root.label });
        for (const label of [root.label, ...root.dependents]) done.add(label);
      }
    } catch (error) {
      result.error = toLockstepError(error).message;
      say(`WARNING: ${result.error}; the rest is expired by a later run`);
    }
    result.expired = plan.expired.filter((e) => done.has(e.label));
    if (done.size > 0) say(`expired ${done.size} backup${done.size > 1 ? "s" : ""}`);
  }
  return results.sort((a, b) => (a.stanza < b.stanza ? -1 : a.stanza > b.stanza ? 1 : 0));
}
