import type { Client } from "@connectrpc/connect";
import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { configNodes } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { refusalNotOutage } from "../common/tls-diagnosis.ts";
import type { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { nodeAdminClient } from "../node/clients.ts";
import { livePid, processFiles } from "../node/process-files.ts";
import { BackupEngines } from "./backup-engines.ts";
import { liveSequencerStatus, sequencerRpc } from "./backup-holds.ts";
import { BackupRepository } from "./backup-repository.ts";
import { planClusterRestore } from "./cluster-restore.ts";
import { type Manifest, type NodeBackup, nodeEngine } from "./manifest.ts";
import { allowListCheck, type LiveAllowList, readLiveAllowList } from "./restore-allow-list.ts";
import {
  checkAgainstSequencer,
  checkArtifact,
  checkChecksums,
  checkEncrypted,
  checkKeys,
  checkOrder,
  checkStranded,
  checkSynchronizer,
  checkWrapperKey,
  FORCE_NAMES,
  failed,
  isForceable,
  passed,
  type RestoreCheck,
} from "./restore-checks.ts";
import { inspectTarget, type RestoreTarget, restoreTargetFor, type TargetState } from "./restore-target.ts";

export interface RestorePlanOptions {
  config: LockstepConfig;
  set: string;
  /** Node names; default: every node in the set. */
  nodes?: string[];
  replace?: boolean;
  /**
   * The refusals to override, by check name (`order`) or node and check (`participant1:order`);
   * only refusals of the nodes being restored, and only of the overridable kinds (isForceable).
   */
  force?: readonly string[];
  logger: Logger;
}

export interface PlannedNode {
  entry: NodeEntry;
  backup: NodeBackup;
  target: RestoreTarget;
  state: TargetState;
  /** Restored from this very set by an earlier apply and not started since: apply skips it. */
  alreadyRestored: boolean;
}

export interface RestorePlan {
  set: string;
  ok: boolean;
  checks: RestoreCheck[];
  manifest: Manifest;
  repository: BackupRepository;
  nodes: PlannedNode[];
  sequencerLive: boolean;
  /** The refusals --force overrode ("node:check"), recorded in the recovery records. */
  forced: string[];
  /** Restoring the sequencer: the live allow-list it replaces (restore-allow-list.ts). */
  allowList?: LiveAllowList;
}

const KIND_ORDER = { sequencer: 0, mediator: 1, participant: 2 } as const;

export { sequencerRpc };

async function answers(probe: () => Promise<unknown>): Promise<boolean> {
  try {
    await probe();
    return true;
  } catch (error) {
    // A node that refuses us is running: as for the sequencer (backup-holds.ts), the operator gets
    // the refusal, not a plan that took the node for stopped.
    const refusal = await refusalNotOutage(error);
    if (refusal) throw refusal;
    return false;
  }
}

/** docs/design.md §4.4 preflight: every check of every selected node, nothing changed (but the embedded cluster started). */
export async function planRestore(options: RestorePlanOptions): Promise<RestorePlan> {
  const { config, set, logger } = options;
  const repository = new BackupRepository(config.backup.repository, logger);
  const manifest = await repository.readManifest(set);
  const backups = selectBackups(manifest, options.nodes);
  const entries = new Map(configNodes(config).map((e) => [e.name, e]));
  const force = parseForce(options.force ?? [], backups);
  const engines = new BackupEngines(config, logger);
  const rpc = sequencerRpc(config);
  const live = await liveSequencerStatus(rpc);
  const sequencerLive = live !== undefined;
  const restoresSequencer = backups.some((b) => b.kind === "sequencer");
  const checks: RestoreCheck[] = [passed("*", "manifest", `manifest of ${set} verifies (checksum)`)];
  const nodes: PlannedNode[] = [];
  for (const backup of backups) {
    const entry = entries.get(backup.name);
    if (!entry || entry.kind !== backup.kind) {
      throw new LockstepError("NODE_UNKNOWN", {
        node: `${backup.name} (${backup.kind})`,
        known: [...entries.values()].map((e) => e.name).join(", "),
      });
    }
    const target = await restoreTargetFor(entry, config["data-dir"], logger);
    const state = await inspectTarget(target);
    const alreadyRestored =
      state.exists && !state.empty && state.lastRestore?.backupSet === set && !state.lastRestore.startedSince;
    nodes.push({ entry, backup, target, state, alreadyRestored });
    checks.push(await checkChecksums(repository.setDir(set), set, backup));
    const artifact = repository.artifact(set, backup);
    const present = await checkArtifact(engines.forArtifact(artifact), artifact, backup);
    if (present) checks.push(present);
    const plain = checkEncrypted(config, manifest, backup);
    if (plain) checks.push(plain);
    checks.push(checkWrapperKey(backup, entry));
    checks.push(checkOrder(manifest, backup, restoresSequencer));
    if (!restoresSequencer && backup.kind !== "sequencer" && live) {
      const stranded = checkStranded(manifest, backup, live);
      if (stranded) checks.push(stranded);
    }
    if (backup.kind === "participant")
      checks.push(checkSynchronizer(set, backup, state, config.synchronizer.id));
    checks.push(checkTarget(backup, target, state, Boolean(options.replace), alreadyRestored));
    checks.push(await checkStopped(entry, config["data-dir"], state));
    if (state.stagingLeft) {
      checks.push(
        failed(backup.name, "restore-incomplete", "warn", "RESTORE_INCOMPLETE", {
          node: backup.name,
          staging: target.staging,
        }),
      );
    }
    checks.push(
      ...(await sequencerChecks(rpc, backup, sequencerLive, restoresSequencer, Boolean(options.replace))),
    );
  }
  const sequencerBackup = backups.find((b) => b.kind === "sequencer");
  if (sequencerBackup?.kind === "sequencer") {
    const others = [...entries.values()].filter(
      (e) => e.kind !== "sequencer" && !backups.some((b) => b.name === e.name),
    );
    checks.push(...(await membersAhead(others, sequencerBackup)));
  }
  const sequencerNode = nodes.find((n) => n.backup.kind === "sequencer");
  const allowList = sequencerNode && (await readLiveAllowList(sequencerNode, set, config["data-dir"]));
  if (sequencerNode && allowList) checks.push(allowListCheck(sequencerNode.backup, set, allowList));
  const forced: string[] = [];
  const restored = new Set(backups.map((b) => b.name));
  for (const check of checks) {
    // Only the nodes being restored: a forced override for one node never silences another's refusal.
    if (check.verdict !== "refuse" || !restored.has(check.node) || !isForceable(check)) continue;
    if (!force.some((f) => f.check === check.check && (f.node === null || f.node === check.node))) continue;
    check.verdict = "warn";
    check.forced = true;
    check.message = `FORCED: ${check.message}`;
    forced.push(`${check.node}:${check.check}`);
  }
  nodes.sort((a, b) => KIND_ORDER[a.backup.kind] - KIND_ORDER[b.backup.kind]);
  checks.push(...(await restorePaths(nodes, config["data-dir"], logger)));
  const ok = checks.every((c) => c.verdict !== "refuse");
  return { set, ok, checks, manifest, repository, nodes, sequencerLive, forced, allowList };
}

/** For physical nodes: whether apply restores the embedded cluster in place or by copy (cluster-restore.ts). */
async function restorePaths(nodes: PlannedNode[], dataDir: string, logger: Logger): Promise<RestoreCheck[]> {
  const physical = nodes.filter((n) => !n.alreadyRestored && nodeEngine(n.backup).name === "pgbackrest");
  if (physical.length === 0) return [];
  const inPlace = await planClusterRestore({ nodes }, dataDir, logger).catch(() => undefined);
  return physical.map((n) =>
    passed(
      n.backup.name,
      "restore-path",
      inPlace?.nodes.includes(n)
        ? "physical, in place: the embedded cluster holds only the restored databases (its data directory is replaced and kept)"
        : "physical, by copy: recovered in a scratch cluster, copied into the staging database",
    ),
  );
}

/** `--force order,participant1:sequencer-fork` → what it names; unknown names are a usage error. */
function parseForce(
  names: readonly string[],
  backups: readonly NodeBackup[],
): { node: string | null; check: string }[] {
  return names
    .flatMap((n) => n.split(","))
    .map((n) => n.trim())
    .filter(Boolean)
    .map((entry) => {
      const [node, check] = entry.includes(":") ? entry.split(":", 2) : [null, entry];
      if (!check || !FORCE_NAMES.includes(check)) {
        throw new LockstepError("INVALID_ARGUMENT", {
          details: `--force ${entry}: name the refused checks to override (${FORCE_NAMES.join(", ")}), optionally as NODE:CHECK`,
        });
      }
      if (node !== null && !backups.some((b) => b.name === node)) {
        throw new LockstepError("INVALID_ARGUMENT", {
          details: `--force ${entry}: ${node} is not among the nodes being restored (${backups.map((b) => b.name).join(", ")})`,
        });
      }
      return { node, check };
    });
}

function selectBackups(manifest: Manifest, names: string[] | undefined): NodeBackup[] {
  if (!names || names.length === 0) return manifest.nodes;
  return names.map((name) => {
    const node = manifest.nodes.find((n) => n.name === name);
    if (!node) {
      throw new LockstepError("INVALID_ARGUMENT", {
        details: `backup set ${manifest.id} holds no node ${name} (it holds ${manifest.nodes.map((n) => n.name).join(", ")})`,
      });
    }
    return node;
  });
}

function checkTarget(
  backup: NodeBackup,
  target: RestoreTarget,
  state: TargetState,
  replace: boolean,
  alreadyRestored: boolean,
): RestoreCheck {
  const name = backup.name;
  if (!state.exists) return passed(name, "target-empty", `database ${target.database} does not exist yet`);
  if (state.empty) return passed(name, "target-empty", `database ${target.database} is empty`);
  if (alreadyRestored) {
    return passed(name, "target-empty", `already restored from this set and not started since: skipped`);
  }
  const metadata = { database: target.database, node: name };
  if (replace) {
    return failed(
      name,
      "target-empty",
      "warn",
      "RESTORE_TARGET_NOT_EMPTY",
      metadata,
      `database ${target.database} is not empty: --replace puts the restore in its place and keeps it renamed (restore drop-kept drops it)`,
    );
  }
  return failed(name, "target-empty", "refuse", "RESTORE_TARGET_NOT_EMPTY", metadata);
}

/** The node's process must not run: no live pid file, no answer on its port, its database lock free. */
async function checkStopped(entry: NodeEntry, dataDir: string, state: TargetState): Promise<RestoreCheck> {
  const pid = livePid(processFiles(dataDir, entry.name).pidFile);
  let reason: string | undefined;
  if (pid) reason = `pid ${pid}`;
  else if (state.lockHeld) reason = "a process holds its database's single-writer lock";
  else if (await answers(() => nodeAdminClient(entry).getStatus({}, { timeoutMs: 1500 })))
    reason = `it answers at ${nodeEndpoint(entry).address}`;
  if (reason)
    return failed(entry.name, "node-stopped", "refuse", "RESTORE_NODE_RUNNING", { node: entry.name, reason });
  return passed(entry.name, "node-stopped", "no process of the node runs and its database lock is free");
}

async function sequencerChecks(
  rpc: Client<typeof SequencerService>,
  backup: NodeBackup,
  sequencerLive: boolean,
  restoresSequencer: boolean,
  replace: boolean,
): Promise<RestoreCheck[]> {
  const name = backup.name;
  if (restoresSequencer) {
    // Restored together: the set's own order check says whether they agree.
    return backup.kind === "sequencer"
      ? []
      : [passed(name, "sequencer-events", "restored with the sequencer of the same set (see order)")];
  }
  // Checks that could not run (issue 9, defect 5): replacing a node's database without them is
  // refused unless each is overridden by name (--force CHECK); into an empty target, a warning.
  const skipped = (reason: string) =>
    ["sequencer-events", "sequencer-fork", "keys"].map((check) =>
      failed(name, check, replace ? "refuse" : "warn", "RESTORE_CHECK_SKIPPED", {
        check,
        node: name,
        reason,
      }),
    );
  if (!sequencerLive) return skipped("the sequencer does not answer");
  try {
    return [...(await checkAgainstSequencer(rpc, backup)), await checkKeys(rpc, backup)];
  } catch (error) {
    return skipped(`asking the sequencer failed: ${(error as Error).message}`);
  }
}

/**
 * Restoring the sequencer while other members stay as they are: a member whose clean position is
 * beyond the restored sequencer's record of it will detect a fork on reconnect. Warned, not refused:
 * restoring the synchronizer is the remedy of a disaster; the members are then restored from the same set.
 */
async function membersAhead(
  others: NodeEntry[],
  sequencer: NodeBackup & { kind: "sequencer" },
): Promise<RestoreCheck[]> {
  const checks: RestoreCheck[] = [];
  for (const entry of others) {
    let clean: string | null = null;
    try {
      const status = await nodeAdminClient(entry).getStatus({}, { timeoutMs: 1500 });
      clean = (JSON.parse(status.positionJson || "{}") as { clean?: string | null }).clean ?? null;
    } catch {
      continue; // not running: its own restore plan compares it when it is restored
    }
    const member = Object.keys(sequencer.position.members).find((m) => m.startsWith(`${entry.name}::`));
    const delivered = member ? sequencer.position.members[member] : null;
    if (clean === null || (delivered != null && BigInt(clean) <= BigInt(delivered))) continue;
    checks.push(
      failed(
        entry.name,
        "members-ahead",
        "warn",
        "SEQUENCER_FORK_DETECTED",
        { timestamp: clean, storedHash: "-", receivedHash: "-" },
        `${entry.name} is at ${clean}, beyond the restored sequencer's last event for it (${delivered ?? "none"}): it will refuse to connect until restored from this set too`,
      ),
    );
  }
  return checks;
}
