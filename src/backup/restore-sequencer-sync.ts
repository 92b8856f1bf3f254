import type { Client } from "@connectrpc/connect";
import { LockstepError } from "../common/errors.ts";
import { nowMicros } from "../common/time.ts";
import type { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { readHolds, releaseHolds, replaceHolds } from "../sequencer/retention-holds.ts";
import { SequencerStore } from "../sequencer/sequencer-store.ts";
import type { Db } from "../storage/db.ts";
import { createPgDb } from "../storage/pg-db.ts";
import { holdsOf } from "./backup-holds.ts";
import type { NodeBackup } from "./manifest.ts";
import type { RestorePlan } from "./restore-plan.ts";

/** A restored member and the position it will resubscribe from (its last stored event, inclusive). */
function restoredMembers(plan: RestorePlan): { name: string; member: string; timestamp: bigint | null }[] {
  return plan.nodes
    .map((n) => n.backup)
    .filter((b): b is NodeBackup & { member: string } => b.kind !== "sequencer" && b.member !== null)
    .map((b) => ({
      name: b.name,
      member: b.member,
      timestamp:
        b.kind === "sequencer" || !b.position.lastStored ? null : BigInt(b.position.lastStored.timestamp),
    }));
}

/**
 * After the databases are in place, before any restored node starts (docs/design.md §2): the sequencer the
 * restored members will meet must keep everything they will ask for. A restored member goes back
 * behind its own acknowledgement, so its acknowledgement is lowered to the restored position; a
 * restored sequencer also gets the retention holds of every set in the repository (its dump
 * predates the holds of its own set and of later ones). Idempotent: a rerun after a kill redoes it.
 */
export async function syncSequencerAfterRestore(
  plan: RestorePlan,
  live: Client<typeof SequencerService> | undefined,
  step: (node: string, line: string) => void,
): Promise<void> {
  const members = restoredMembers(plan);
  const sequencer = plan.nodes.find((n) => n.backup.kind === "sequencer");
  if (sequencer) {
    const db = createPgDb({
      connectionString: sequencer.target.url,
      applicationName: "lockstep-restore",
      max: 1,
    });
    try {
      await restoreHolds(db, plan, (line) => step(sequencer.backup.name, line));
      const store = new SequencerStore(db);
      for (const m of members) {
        await store.lowerAcknowledgement(m.member, m.timestamp);
        step(m.name, `acknowledgement in the restored sequencer set to ${m.timestamp ?? "its registration"}`);
      }
    } finally {
      await db.close();
    }
    return;
  }
  for (const m of members) {
    if (!live || !plan.sequencerLive) {
      step(
        m.name,
        "the sequencer does not answer: its acknowledgement could not be lowered; the set's retention hold keeps its events",
      );
      continue;
    }
    try {
      await live.lowerAcknowledgement(
        { member: m.member, timestamp: m.timestamp ?? undefined },
        { timeoutMs: 10_000 },
      );
      step(m.name, `acknowledgement at the sequencer lowered to ${m.timestamp ?? "its registration"}`);
    } catch (error) {
      throw new LockstepError("RESTORE_FAILED", {
        node: m.name,
        reason: `lowering its acknowledgement at the sequencer failed (${(error as Error).message}); run restore apply again before starting it`,
      });
    }
  }
}

/** The restored sequencer holds what the repository's sets need, and nothing for sets gone since. */
async function restoreHolds(db: Db, plan: RestorePlan, step: (line: string) => void): Promise<void> {
  const sets = await plan.repository.listSets();
  const ids = new Set(sets.map((s) => s.id));
  const gone = [...new Set((await readHolds(db)).map((h) => h.setId))].filter((id) => !ids.has(id));
  if (gone.length > 0) await releaseHolds(db, gone);
  const registered = new Map(
    (
      await db.query<{ member: string; registered_at: bigint }>(
        "SELECT member, registered_at FROM sequencer_members",
      )
    ).map((r) => [r.member, r.registered_at]),
  );
  let held = 0;
  for (const set of sets) {
    const holds = holdsOf(set.manifest.nodes)
      .filter((h) => h.timestamp > 0n || registered.has(h.member))
      .map((h) => ({
        member: h.member,
        timestamp: h.timestamp > 0n ? h.timestamp : (registered.get(h.member) ?? 0n),
      }));
    if (holds.length === 0) continue;
    try {
      await replaceHolds(db, set.id, holds, nowMicros());
      held++;
    } catch {
      // Older than what the restored sequencer still has: that set cannot be held by it.
    }
  }
  step(`retention holds of ${held} backup set(s) set in the restored sequencer`);
}
