import type { Client } from "@connectrpc/connect";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { nowMicros } from "../common/time.ts";
import type { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { nodeKindDefinition } from "../node/node-kinds.ts";
import { nodeStateMigrations, stampRestoredDatabase } from "../node/node-state.ts";
import { runMigrations } from "../storage/migrations.ts";
import { createPgDb } from "../storage/pg-db.ts";
import type { BackupEngine } from "./backup-engine.ts";
import type { BackupRepository } from "./backup-repository.ts";
import type { PlannedNode, RestorePlan } from "./restore-plan.ts";
import { createStaging, dropStaging, swapIntoPlace } from "./restore-target.ts";

/** How far a restored member's writer epoch jumps when the sequencer's record of it is unknown. */
const UNKNOWN_EPOCH_MARGIN = 1000n;

export interface ApplyOptions {
  engine: BackupEngine;
  /** The live sequencer, when it answers: restored members take at least its writer epoch record. */
  sequencer?: Client<typeof SequencerService>;
  jobs: number;
  logger: Logger;
  onStep?: (node: string, step: string) => void;
}

export interface RestoredNode {
  name: string;
  kind: string;
  skipped: boolean;
  incarnation: string | null;
  previousIncarnation: string | null;
  writerEpoch: string | null;
  /** A participant recovers its deduplication state after start (DESIGN §4.5). */
  deduplicationRecovery: boolean;
  forced: string[];
  durationMs: number;
}

/**
 * `restore apply` (DESIGN §4.4) for a plan whose checks passed (or were forced): per node, in the
 * order sequencer → mediator → participants, pg_restore into a staging database, bring its schema
 * up to this build, stamp a new incarnation and a recovery record, and rename it into place. The
 * node's own database changes only in that last, atomic step; a run killed before it leaves the
 * staging database behind, which the next run drops and redoes.
 */
export async function applyRestore(plan: RestorePlan, options: ApplyOptions): Promise<RestoredNode[]> {
  if (!plan.ok) {
    const refused = plan.checks.filter((c) => c.verdict === "refuse");
    throw new LockstepError("RESTORE_REFUSED", {
      set: plan.set,
      checks: refused.map((c) => `${c.node}:${c.check} (${c.code})`).join(", "),
    });
  }
  const repository = plan.repository;
  const restored: RestoredNode[] = [];
  for (const node of plan.nodes) {
    const started = Date.now();
    const forced = plan.forced.filter((f) => f.startsWith(`${node.backup.name}:`));
    if (node.alreadyRestored) {
      options.onStep?.(node.backup.name, "already restored from this set and not started since: skipped");
      restored.push({
        name: node.backup.name,
        kind: node.backup.kind,
        skipped: true,
        incarnation: null,
        previousIncarnation: null,
        writerEpoch: null,
        deduplicationRecovery: node.backup.kind === "participant",
        forced,
        durationMs: 0,
      });
      continue;
    }
    try {
      const done = await restoreNode(plan, node, forced, repository, options, restored);
      restored.push({ ...done, durationMs: Date.now() - started });
    } catch (error) {
      const failure = toLockstepError(error);
      if (failure.category === "safety") throw failure;
      throw new LockstepError(
        "RESTORE_FAILED",
        { node: node.backup.name, reason: `${failure.code}: ${failure.message}` },
        { cause: error },
      );
    }
  }
  return restored;
}

async function restoreNode(
  plan: RestorePlan,
  node: PlannedNode,
  forced: string[],
  repository: BackupRepository,
  options: ApplyOptions,
  earlier: readonly RestoredNode[],
): Promise<RestoredNode> {
  const { backup, target, entry } = node;
  const step = (s: string) => options.onStep?.(backup.name, s);
  step(`creating staging database ${target.staging}`);
  await createStaging(target);
  step(`pg_restore of ${backup.artifact} (${backup.format}, ${options.jobs} job(s))`);
  await options.engine.restore(
    { path: repository.artifactPath(plan.set, backup), format: backup.format },
    target.stagingUrl,
    { jobs: options.jobs },
  );
  const db = createPgDb({ connectionString: target.stagingUrl, applicationName: "lockstep-restore", max: 2 });
  try {
    step("bringing the schema up to this build");
    await runMigrations(db, entry.kind, [
      ...nodeStateMigrations,
      ...nodeKindDefinition(entry.kind).migrations,
    ]);
    const minWriterEpoch = await sequencerWriterEpoch(plan, node, options.sequencer, earlier);
    step("stamping a new incarnation and the recovery record");
    const stamp = await stampRestoredDatabase(db, {
      backupSet: plan.set,
      forcedChecks: forced,
      minWriterEpoch,
      recovering: backup.kind === "participant",
      restoredAtMicros: nowMicros(),
    });
    await db.close();
    step(`renaming ${target.staging} to ${target.database}`);
    await swapIntoPlace(target);
    return {
      name: backup.name,
      kind: backup.kind,
      skipped: false,
      incarnation: stamp.incarnation,
      previousIncarnation: stamp.previousIncarnation,
      writerEpoch: stamp.writerEpoch.toString(),
      deduplicationRecovery: backup.kind === "participant",
      forced,
      durationMs: 0,
    };
  } catch (error) {
    await db.close().catch(() => {});
    // The staging database is of no use half-done; the target was not touched.
    await dropStaging(target).catch(() => {});
    throw error;
  }
}

/**
 * The writer epoch the sequencer last saw from the member: the restored node must start above it,
 * else the sequencer refuses it as a stale writer (DESIGN §3). From the live sequencer, or from
 * the sequencer this apply restored.
 */
async function sequencerWriterEpoch(
  plan: RestorePlan,
  node: PlannedNode,
  sequencer: Client<typeof SequencerService> | undefined,
  earlier: readonly RestoredNode[],
): Promise<bigint> {
  const member = node.backup.member;
  if (!member || node.backup.kind === "sequencer") return 0n;
  const restoredSequencer = plan.nodes.find(
    (n) => n.backup.kind === "sequencer" && earlier.some((r) => r.name === n.backup.name),
  );
  if (restoredSequencer) {
    const db = createPgDb({ connectionString: restoredSequencer.target.url, max: 1 });
    try {
      const row = await db.maybeOne<{ writer_epoch: bigint }>(
        "SELECT writer_epoch FROM sequencer_members WHERE member = $1",
        [member],
      );
      return row?.writer_epoch ?? 0n;
    } finally {
      await db.close();
    }
  }
  if (sequencer && plan.sequencerLive) {
    const status = await sequencer.getSequencerStatus({}, { timeoutMs: 5000 });
    const epoch = status.members.find((m) => m.member === member)?.writerEpoch;
    if (epoch !== undefined) return epoch;
  }
  // The sequencer's record is unknown (it does not answer): the node may have been activated many
  // times since the backup, so jump well ahead. Epochs only fence; a gap is harmless.
  return BigInt(node.backup.writerEpoch) + UNKNOWN_EPOCH_MARGIN;
}
