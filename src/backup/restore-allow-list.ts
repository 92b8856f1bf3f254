import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { uniqueIdentifier } from "../common/ids.ts";
import type { Micros } from "../common/time.ts";
import { type RestoreMarker, restoreMarkerPath } from "../node/restore-marker.ts";
import { type Admission, readAdmissions } from "../sequencer/member-admissions.ts";
import type { Queryable } from "../storage/db.ts";
import { createPgDb } from "../storage/pg-db.ts";
import { writeFileAtomic } from "./backup-repository.ts";
import type { NodeBackup } from "./manifest.ts";
import { failed, passed, type RestoreCheck } from "./restore-checks.ts";
import type { PlannedNode } from "./restore-plan.ts";

/**
 * The allow-list across a sequencer restore (docs/restore.md "The allow-list after a restore"). The
 * list lives in the sequencer's database, so a sequencer restored from a set taken before a
 * `synchronizer revoke` would let the revoked member back in, silently. Canton leaves what changed
 * after the backup to the operator (its "Restore caveats": data between the backup and the latest
 * state is lost, docs.digitalasset.com operate/howtos/recover/backup-restore); here the restore
 * carries what is safe to carry:
 *
 * * `restore plan` reads the allow-list of the database the restore replaces (the live sequencer's,
 *   stopped for the restore) and names every change made after the set (check `allow-list`);
 * * `restore apply` writes each **revocation** made after the set into the restored database before
 *   it goes into place (in the same staging database, so a killed run never leaves it behind):
 *   keeping a revoked member out is always safe. It keeps the revocation's own timestamp, so the
 *   restored sequencer's head starts above it and `synchronizer members` shows when it was made;
 * * an **admission** made after the set is not carried: letting a member in is a decision the
 *   operator makes again, deliberately (`synchronizer admit`), once the restored sequencer runs.
 *
 * The live list is read at plan time, before apply changes anything: an in-place restore of the
 * embedded cluster replaces the whole data directory, after which the old database is no longer
 * reachable (it is kept as a data directory, not as a database). So before such a restore, apply
 * saves the list it read in the data dir (saveLiveAllowList), and a rerun after a kill reads it
 * from there; it goes once every restored node is stamped.
 */

/** What changed in the live allow-list after the set. */
export interface AllowListChanges {
  /** Revoked after the set: apply revokes them in the restored sequencer too. */
  revoked: Admission[];
  /** Admitted, or let back in, after the set: not carried. */
  admitted: Admission[];
}

export type LiveAllowList =
  | { status: "read"; database: string; rows: Admission[]; changes: AllowListChanges }
  /** The sequencer was restored from this set by an earlier apply, which carried the list then. */
  | { status: "carried-already" }
  | { status: "unavailable"; reason: string };

/** The live rows changed after the set's head (each change has the sequencing timestamp it took). */
export function changesAfter(live: readonly Admission[], setHead: Micros | null): AllowListChanges {
  const after = live.filter((a) => setHead === null || a.at > setHead);
  return {
    revoked: after.filter((a) => a.state === "revoked"),
    admitted: after.filter((a) => a.state === "admitted"),
  };
}

/**
 * What apply writes into the restored database: each live revocation newer than the restored row of
 * the same member (none, an admission, or an older revocation). A restored row as new or newer is
 * kept: the restored database already holds that decision (a rerun), or a later one.
 */
export function revocationsToCarry(live: readonly Admission[], restored: readonly Admission[]): Admission[] {
  const mine = new Map(restored.map((a) => [a.member, a]));
  return live.filter((a) => {
    const r = mine.get(a.member);
    return a.state === "revoked" && (r === undefined || r.at < a.at);
  });
}

/** Live admissions the restored database does not have (the member unknown to it, or revoked in it before). */
export function admissionsNotCarried(
  live: readonly Admission[],
  restored: readonly Admission[],
): Admission[] {
  const mine = new Map(restored.map((a) => [a.member, a]));
  return live.filter((a) => {
    const r = mine.get(a.member);
    return a.state === "admitted" && (r === undefined || (r.state === "revoked" && r.at < a.at));
  });
}

const listed = (admissions: readonly Admission[]) =>
  admissions.map((a) => `${a.member} (at ${a.at})`).join(", ");

/** Reads the allow-list of the database a sequencer restore replaces, when there is one. */
export async function readLiveAllowList(
  node: PlannedNode,
  set: string,
  dataDir: string,
): Promise<LiveAllowList> {
  const { backup, target, state } = node;
  if (node.alreadyRestored) return { status: "carried-already" };
  if (inPlaceRestoreInterrupted(dataDir, backup.name)) {
    const saved = savedAllowList(dataDir, set);
    if (saved) return saved;
    return {
      status: "unavailable",
      reason:
        "an in-place restore of the embedded cluster was interrupted, so the database in place is a restored one; the live list is in the replaced data directory it kept",
    };
  }
  if (!state.exists || state.empty) {
    return { status: "unavailable", reason: `there is no live sequencer database ${target.database}` };
  }
  const db = createPgDb({ connectionString: target.url, applicationName: "lockstep-restore", max: 1 });
  try {
    const found = await db.one<{ t: string | null }>("SELECT to_regclass('sequencer_admissions')::text AS t");
    if (found.t === null) {
      return {
        status: "unavailable",
        reason: `${target.database} holds no allow-list (not a sequencer database of this version)`,
      };
    }
    const live = await liveMember(db);
    if (backup.member !== null && live !== null && live !== backup.member) {
      return {
        status: "unavailable",
        reason: `${target.database} belongs to sequencer ${live}, not to the set's ${backup.member} (another synchronizer): its list is not carried`,
      };
    }
    const rows = await readAdmissions(db);
    return { status: "read", database: target.database, rows, changes: changesAfter(rows, setHead(backup)) };
  } catch (error) {
    return {
      status: "unavailable",
      reason: `reading ${target.database} failed: ${(error as Error).message}`,
    };
  } finally {
    await db.close().catch(() => {});
  }
}

/** The sequencer's member id in a database: node name and namespace key, as the manifest records it. */
async function liveMember(q: Queryable): Promise<string | null> {
  const row = await q.maybeOne<{ name: string; namespace: string | null }>(
    `SELECT s.node_name AS name,
            (SELECT fingerprint FROM crypto_private_keys WHERE purpose = 'namespace' AND state = 'active' LIMIT 1) AS namespace
       FROM node_state s`,
  );
  return row?.namespace ? uniqueIdentifier(row.name, row.namespace) : null;
}

function setHead(backup: NodeBackup): Micros | null {
  const head = backup.kind === "sequencer" ? backup.position.head : null;
  return head === null ? null : BigInt(head);
}

const SAVED_FILE = "restore-allow-list.json";

interface SavedAllowList {
  set: string;
  database: string;
  /** As `changes` needs them again: the set's head, and the rows with their timestamps as strings. */
  head: string | null;
  rows: { member: string; state: Admission["state"]; at: string; by: Admission["by"] }[];
}

/** Before an in-place restore of the embedded cluster: the live list, for a rerun after a kill. */
export async function saveLiveAllowList(
  dataDir: string,
  set: string,
  backup: NodeBackup,
  live: LiveAllowList | undefined,
): Promise<void> {
  if (live?.status !== "read") return;
  const saved: SavedAllowList = {
    set,
    database: live.database,
    head: setHead(backup)?.toString() ?? null,
    rows: live.rows.map((a) => ({ ...a, at: a.at.toString() })),
  };
  await writeFileAtomic(join(dataDir, SAVED_FILE), JSON.stringify(saved));
}

/** Every restored node is stamped: the saved list is of no more use. */
export function clearSavedAllowList(dataDir: string): void {
  rmSync(join(dataDir, SAVED_FILE), { force: true });
}

function savedAllowList(dataDir: string, set: string): LiveAllowList | undefined {
  const path = join(dataDir, SAVED_FILE);
  if (!existsSync(path)) return undefined;
  try {
    const saved = JSON.parse(readFileSync(path, "utf8")) as SavedAllowList;
    if (saved.set !== set) return undefined;
    const rows = saved.rows.map((a) => ({ ...a, at: BigInt(a.at) }));
    const head = saved.head === null ? null : BigInt(saved.head);
    return {
      status: "read",
      database: `${saved.database} (as read before the interrupted in-place restore)`,
      rows,
      changes: changesAfter(rows, head),
    };
  } catch {
    return undefined;
  }
}

function inPlaceRestoreInterrupted(dataDir: string, node: string): boolean {
  const path = restoreMarkerPath(dataDir);
  if (!existsSync(path)) return false;
  try {
    return (JSON.parse(readFileSync(path, "utf8")) as RestoreMarker).nodes.includes(node);
  } catch {
    return false;
  }
}

/** The plan's `allow-list` check for the sequencer being restored. */
export function allowListCheck(backup: NodeBackup, set: string, live: LiveAllowList): RestoreCheck {
  const name = backup.name;
  if (live.status === "carried-already") {
    return passed(
      name,
      "allow-list",
      "already restored from this set: revocations made after it were carried into it then",
    );
  }
  if (live.status === "unavailable") {
    return failed(name, "allow-list", "warn", "RESTORE_ALLOW_LIST_UNREAD", {
      node: name,
      set,
      reason: live.reason,
    });
  }
  const { revoked, admitted } = live.changes;
  const carried =
    revoked.length > 0 ? `revoked after the set, carried into the restore: ${listed(revoked)}` : "";
  if (admitted.length > 0) {
    return failed(
      name,
      "allow-list",
      "warn",
      "RESTORE_ADMISSIONS_AFTER_SET",
      { members: admitted.map((a) => a.member).join(", "), set },
      [
        `admitted after the set, NOT carried (admit again once the sequencer runs): ${listed(admitted)}`,
        carried,
      ]
        .filter(Boolean)
        .join("; "),
    );
  }
  return passed(
    name,
    "allow-list",
    carried || `no allow-list change after the set in the live database ${live.database}`,
  );
}

/**
 * In apply, on the restored sequencer database (staging, or in place) before it is stamped: the
 * revocations made after the set, as the plan read them from the live database.
 */
export async function carryAllowList(
  db: Queryable,
  live: LiveAllowList | undefined,
  step: (line: string) => void,
): Promise<Admission[]> {
  if (live?.status !== "read") {
    if (live?.status === "unavailable") step(`allow-list: not carried (${live.reason})`);
    return [];
  }
  const restored = await readAdmissions(db);
  const carry = revocationsToCarry(live.rows, restored);
  if (carry.length > 0) {
    await db.execute(
      `INSERT INTO sequencer_admissions (member, state, changed_at, changed_by)
       SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
       ON CONFLICT (member) DO UPDATE
         SET state = EXCLUDED.state, changed_at = EXCLUDED.changed_at,
             changed_by = EXCLUDED.changed_by, recorded_at = now()
         WHERE sequencer_admissions.changed_at < EXCLUDED.changed_at`,
      [carry.map((a) => a.member), carry.map((a) => a.state), carry.map((a) => a.at), carry.map((a) => a.by)],
    );
    step(`allow-list: carried the revocation(s) made after the set: ${listed(carry)}`);
  }
  const notCarried = admissionsNotCarried(live.rows, restored);
  if (notCarried.length > 0) {
    step(
      `allow-list: admitted after the set, not carried (\`lockstep synchronizer admit\` them again if they belong): ${listed(notCarried)}`,
    );
  }
  return carry;
}
