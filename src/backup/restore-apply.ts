import type { Client } from "@connectrpc/connect";
import type { LockstepConfig } from "../common/config-schema.ts";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { msToMicros, nowMicros } from "../common/time.ts";
import type { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { nodeKindDefinition } from "../node/node-kinds.ts";
import { type AnchorSource, nodeStateMigrations, stampRestoredDatabase } from "../node/node-state.ts";
import { clearRestoreMarker } from "../node/restore-marker.ts";
import { readSequencerHead } from "../sequencer/sequencer-head.ts";
import { fetchTopology } from "../sequencer-client/topology-bootstrap.ts";
import { registerBackupTaken } from "../storage/backups-taken.ts";
import { runMigrations } from "../storage/migrations.ts";
import { createPgDb } from "../storage/pg-db.ts";
import type { BackupEngines } from "./backup-engines.ts";
import type { BackupRepository } from "./backup-repository.ts";
import { planClusterRestore, restoreClusterInPlace } from "./cluster-restore.ts";
import { carryAllowList, clearSavedAllowList, saveLiveAllowList } from "./restore-allow-list.ts";
import type { PlannedNode, RestorePlan } from "./restore-plan.ts";
import { syncSequencerAfterRestore } from "./restore-sequencer-sync.ts";
import { createStaging, dropStaging, keptDatabaseName, swapIntoPlace } from "./restore-target.ts";

export interface ApplyOptions {
  /** Each node is restored by the engine that made its artifact. */
  engines: BackupEngines;
  /**
   * The config, for the physical fast path (cluster-restore.ts): the embedded cluster restored in
   * place when it holds only the restored nodes' databases. Without it, every node is restored by copy.
   */
  config?: LockstepConfig;
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
  /** The epoch was stamped without the sequencer's record; the node raises it on start. */
  epochUnverified: boolean;
  /** A participant recovers its deduplication state after start (docs/design.md §4.5). */
  deduplicationRecovery: boolean;
  /** The window's anchor in sequencer time (null: the node fixes it after it starts). */
  anchor: string | null;
  anchorSource: AnchorSource | null;
  /** The replaced database, kept under this name (`lockstep restore drop-kept` drops it). */
  keptDatabase: string | null;
  forced: string[];
  durationMs: number;
}

/**
 * `restore apply` (docs/design.md §4.4) for a plan whose checks passed (or were forced): per node, in the
 * order sequencer → mediator → participants, restore it into a staging database with the engine that
 * made its artifact (pg-dump: pg_restore), bring its schema up to this build, stamp a new
 * incarnation and a recovery record, and rename it into place, the
 * replaced database renamed aside and kept (the way back) in the same transaction. The node's own
 * database changes only in that last, atomic step, so a run killed at any step leaves the old or the
 * new database in place, never neither: before it, the staging database is left behind, which the
 * next run drops and redoes; after it, the next run sees the node restored from this set and skips it.
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
  // `backup expire` keeps the set while this runs (markInUse); one deleted since the plan is found
  // gone here, before anything changed.
  const release = await repository.markInUse(plan.set, "restore apply").catch((error: unknown) => {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT")
      throw new LockstepError(
        "BACKUP_NOT_FOUND",
        { set: plan.set, repository: repository.dir },
        { cause: error },
      );
    // A repository this host may only read (a DR site's read-only mount): nothing here can expire
    // the set either, so the restore goes on unmarked.
    options.logger.warn(
      { err: error, set: plan.set },
      "could not mark the set as in use (a read-only repository?): restoring without the mark",
    );
    return async () => {};
  });
  try {
    await repository.readManifest(plan.set);
    return await applyMarked(plan, options, repository);
  } finally {
    await release();
  }
}

async function applyMarked(
  plan: RestorePlan,
  options: ApplyOptions,
  repository: BackupRepository,
): Promise<RestoredNode[]> {
  const restored: RestoredNode[] = [];
  const config = options.config;
  const inPlace = config && (await planClusterRestore(plan, config["data-dir"], options.logger));
  if (config && inPlace) {
    const names = inPlace.nodes.map((n) => n.backup.name).join(", ");
    // The replaced cluster is out of reach after the swap: a rerun after a kill reads the list here.
    const sequencer = inPlace.nodes.find((n) => n.backup.kind === "sequencer");
    if (sequencer) await saveLiveAllowList(config["data-dir"], plan.set, sequencer.backup, plan.allowList);
    try {
      await restoreClusterInPlace(inPlace, plan, config, options.logger, (line) =>
        options.onStep?.(names, line),
      );
    } catch (error) {
      const failure = toLockstepError(error);
      if (failure.category === "safety") throw failure;
      throw new LockstepError(
        "RESTORE_FAILED",
        { node: names, reason: `${failure.code}: ${failure.message}` },
        { cause: error },
      );
    }
  }
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
        epochUnverified: false,
        deduplicationRecovery: node.backup.kind === "participant",
        anchor: null,
        anchorSource: null,
        keptDatabase: null,
        forced,
        durationMs: 0,
      });
    } else {
      try {
        const done = inPlace?.nodes.includes(node)
          ? await stampRestored(node.target.url, plan, node, forced, options, restored, {
              replacedDatabase: null,
            })
          : await restoreNode(plan, node, forced, repository, options, restored);
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
    // ── Per-node finishing step (lead): the node's restored database is in place here, whether
    // this run put it there or an earlier, killed run did (skipped above). Lower the restored
    // member's acknowledgement at the sequencer and re-register retention holds here; it must be
    // idempotent, since a rerun after a kill reaches this spot again for the skipped node.
  }
  // Every node of an in-place cluster restore is stamped: they may start.
  if (config && inPlace) {
    clearRestoreMarker(config["data-dir"]);
    clearSavedAllowList(config["data-dir"]);
  }
  // Lead: the sequencer keeps what the restored members will ask for (also after a rerun).
  await syncSequencerAfterRestore(plan, options.sequencer, (node, line) => options.onStep?.(node, line));
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
  const { backup, target } = node;
  const step = (s: string) => options.onStep?.(backup.name, s);
  const artifact = repository.artifact(plan.set, backup);
  const engine = options.engines.forArtifact(artifact);
  step(`creating staging database ${target.staging}`);
  await createStaging(target);
  try {
    await engine.restore(
      artifact,
      { kind: "database", url: target.stagingUrl },
      { jobs: options.jobs, onStep: step },
    );
    const kept = keptDatabaseName(target);
    const stamped = await stampRestored(target.stagingUrl, plan, node, forced, options, earlier, {
      replacedDatabase: node.state.exists ? kept : null,
    });
    step(
      node.state.exists
        ? `renaming ${target.database} to ${kept} (kept) and ${target.staging} to ${target.database}`
        : `renaming ${target.staging} to ${target.database}`,
    );
    const replaced = await swapIntoPlace(target, kept);
    return { ...stamped, keptDatabase: replaced ? kept : null };
  } catch (error) {
    // The staging database is of no use half-done; the target was not touched.
    await dropStaging(target).catch(() => {});
    throw error;
  }
}

/**
 * Makes a restored database (at `url`: the staging database, or the node's own after a whole
 * cluster was restored in place) a new incarnation: its schema brought up to this build, the
 * writer epoch above the sequencer's record, the deduplication window's anchor, the recovery
 * record, and the set registered in it.
 */
export async function stampRestored(
  url: string,
  plan: RestorePlan,
  node: PlannedNode,
  forced: string[],
  options: ApplyOptions,
  earlier: readonly RestoredNode[],
  where: { replacedDatabase: string | null },
): Promise<RestoredNode> {
  const { backup, entry } = node;
  const step = (s: string) => options.onStep?.(backup.name, s);
  const db = createPgDb({ connectionString: url, applicationName: "lockstep-restore", max: 2 });
  try {
    step("bringing the schema up to this build");
    await runMigrations(db, entry.kind, [
      ...nodeStateMigrations,
      ...nodeKindDefinition(entry.kind).migrations,
    ]);
    // Before the stamp, in the database that goes into place: a revoked member stays out.
    if (backup.kind === "sequencer") await carryAllowList(db, plan.allowList, step);
    step("reading the sequencer's head and its writer epoch record of the member");
    const epoch = await sequencerWriterEpoch(plan, node, options.sequencer, earlier);
    const anchor =
      backup.kind === "participant" ? await sequencerAnchor(plan, options.sequencer, earlier) : NO_ANCHOR;
    step("stamping a new incarnation and the recovery record");
    const stamp = await stampRestoredDatabase(db, {
      backupSet: plan.set,
      forcedChecks: forced,
      minWriterEpoch: epoch.epoch,
      epochUnverified: epoch.unverified,
      recovering: backup.kind === "participant",
      // The host's wall clock, kept for the record only: the deduplication window is anchored on
      // sequencer time (a lagging host clock closed it too early, issue 9 defect 4).
      restoredAtMicros: nowMicros(),
      anchor: anchor.anchor,
      anchorSource: anchor.source,
      expectedEnd: anchor.expectedEnd,
      replacedDatabase: where.replacedDatabase,
    });
    // The set holds this very database: registered in it, so that `keys list` names it and a key
    // rotation started from the restored node counts it (the set was registered in the source only
    // after its dump's snapshot).
    await registerBackupTaken(db, {
      setId: plan.set,
      repository: plan.repository.dir,
      takenAt: new Date(backup.startedAt),
      keyFingerprints: backup.keyFingerprints,
      position: backup.position,
      safe: plan.manifest.safe || !plan.manifest.unsafe.some((u) => u.node === backup.name),
      wrapperFingerprint: backup.wrapperFingerprint ?? null,
    });
    return {
      name: backup.name,
      kind: backup.kind,
      skipped: false,
      incarnation: stamp.incarnation,
      previousIncarnation: stamp.previousIncarnation,
      writerEpoch: stamp.writerEpoch.toString(),
      epochUnverified: epoch.unverified,
      deduplicationRecovery: backup.kind === "participant",
      anchor: anchor.anchor?.toString() ?? null,
      anchorSource: anchor.source,
      keptDatabase: null,
      forced,
      durationMs: 0,
    };
  } finally {
    await db.close().catch(() => {});
  }
}

/** The sequencer restored by this apply (already in place), if any. */
function restoredSequencer(plan: RestorePlan, earlier: readonly RestoredNode[]): PlannedNode | undefined {
  return plan.nodes.find(
    (n) => n.backup.kind === "sequencer" && earlier.some((r) => r.name === n.backup.name),
  );
}

interface Anchor {
  anchor: bigint | null;
  source: AnchorSource | null;
  expectedEnd: bigint | null;
}

const NO_ANCHOR: Anchor = { anchor: null, source: null, expectedEnd: null };

/**
 * The deduplication window's anchor in sequencer time (docs/design.md §4.5): the restored sequencer's head,
 * else the live sequencer's time (its clock now, never below its head) with expected end = that +
 * tolerance (topology at that time), else
 * none: the node anchors on the first time proof it gets back after it starts. Never a host's clock.
 */
async function sequencerAnchor(
  plan: RestorePlan,
  sequencer: Client<typeof SequencerService> | undefined,
  earlier: readonly RestoredNode[],
): Promise<Anchor> {
  const restored = restoredSequencer(plan, earlier);
  if (restored) {
    const db = createPgDb({ connectionString: restored.target.url, max: 1 });
    try {
      // The head as the sequencer store computes it (allow-list changes count), or the lower bound.
      const lower = await db.maybeOne<{ bound: bigint | null }>(
        "SELECT pruning_lower_bound AS bound FROM sequencer_state",
      );
      const head = maxOrNull(await readSequencerHead(db), lower?.bound ?? null);
      // The node computes the expected end from its topology once it processed the anchor.
      if (head !== null) return { anchor: head, source: "restored-sequencer-head", expectedEnd: null };
      return NO_ANCHOR;
    } finally {
      await db.close();
    }
  }
  if (!sequencer || !plan.sequencerLive) return NO_ANCHOR;
  try {
    const status = await sequencer.getSequencerStatus({}, { timeoutMs: 5000 });
    // The sequencer's own clock now (never below its head): an idle sequencer's head can be old,
    // and a submission still on its way could be sequenced up to clock + tolerance.
    const head = status.sequencerTime > 0n ? status.sequencerTime : status.headTimestamp;
    if (head === undefined) return NO_ANCHOR;
    const { state } = await fetchTopology(sequencer, head);
    const tolerance = msToMicros(state.parameters(head).ledgerTimeRecordTimeToleranceMs);
    return { anchor: head, source: "live-sequencer-head", expectedEnd: head + tolerance };
  } catch {
    return NO_ANCHOR; // it stopped answering since the plan: the node anchors after it starts
  }
}

function maxOrNull(a: bigint | null, b: bigint | null): bigint | null {
  return a === null ? b : b === null || a > b ? a : b;
}

/**
 * The writer epoch the sequencer last saw from the member: the restored node must start above it,
 * else the sequencer refuses it as a stale writer (docs/design.md §3). From the sequencer this apply
 * restored, or the live one. When neither is known, the backup's own epoch, marked unverified: the
 * node raises it above the sequencer's record when it starts (no guessed margin).
 */
async function sequencerWriterEpoch(
  plan: RestorePlan,
  node: PlannedNode,
  sequencer: Client<typeof SequencerService> | undefined,
  earlier: readonly RestoredNode[],
): Promise<{ epoch: bigint; unverified: boolean }> {
  const member = node.backup.member;
  if (!member || node.backup.kind === "sequencer") return { epoch: 0n, unverified: false };
  const restored = restoredSequencer(plan, earlier);
  if (restored) {
    const db = createPgDb({ connectionString: restored.target.url, max: 1 });
    try {
      const row = await db.maybeOne<{ writer_epoch: bigint }>(
        "SELECT writer_epoch FROM sequencer_members WHERE member = $1",
        [member],
      );
      return { epoch: row?.writer_epoch ?? 0n, unverified: false };
    } finally {
      await db.close();
    }
  }
  if (sequencer && plan.sequencerLive) {
    try {
      const status = await sequencer.getSequencerStatus({}, { timeoutMs: 5000 });
      const epoch = status.members.find((m) => m.member === member)?.writerEpoch;
      // A live sequencer that does not know the member holds no epoch to be above.
      return { epoch: epoch ?? 0n, unverified: false };
    } catch {
      // stopped answering since the plan: unverified below
    }
  }
  return { epoch: BigInt(node.backup.writerEpoch), unverified: true };
}
