import { spawn } from "node:child_process";
import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { LOCKSTEP_VERSION } from "../common/version.ts";
import { type NodeConnection, nodeConnection } from "../node/node-database.ts";
import { registerBackupTaken } from "../storage/backups-taken.ts";
import { createStorageDb } from "../storage/storage-db.ts";
import type { BackupEngines } from "./backup-engines.ts";
import {
  holdSet,
  liveSequencerStatus,
  provisionalHolds,
  type SequencerRpc,
  sequencerRpc,
} from "./backup-holds.ts";
import type { BackupRepository } from "./backup-repository.ts";
import { MANIFEST_VERSION, type Manifest, type NodeBackup, type UnsignedManifest } from "./manifest.ts";
import { dumpNode } from "./node-dump.ts";
import { readMemberEvents } from "./node-position.ts";
import { checkOrder, memberLookups } from "./order-check.ts";

export interface CreateBackupOptions {
  config: LockstepConfig;
  /** The nodes to back up (a subset makes its own set, checked against the newest set with a sequencer). */
  nodes: NodeEntry[];
  repository: BackupRepository;
  /** Where each node's engine comes from (config, per-node override, `--engine`). */
  engines: BackupEngines;
  logger: Logger;
  /** A progress line (stderr in the CLI). */
  progress: (line: string) => void;
  /**
   * Called with the nodes to dump when --quiesce: pauses the sequencer's intake, waits until every
   * node is clean at the head, and returns the function that resumes intake.
   */
  quiesce?: (nodes: NodeEntry[]) => Promise<() => Promise<void>>;
  connect?: (entry: NodeEntry) => Promise<NodeConnection>;
  /** The live sequencer's API (default: from the config). */
  sequencer?: SequencerRpc;
}

/** Runs the app hook (a shell command) with the set's id and folder in its environment. */
async function runAppHook(command: string, setId: string, setDir: string): Promise<Manifest["appHook"]> {
  const startedAt = new Date().toISOString();
  const child = spawn("/bin/sh", ["-c", command], {
    stdio: ["ignore", process.stderr, process.stderr],
    env: { ...process.env, LOCKSTEP_BACKUP_SET: setId, LOCKSTEP_BACKUP_SET_DIR: setDir },
  });
  const exitCode = await new Promise<number>((resolve) => {
    child.on("error", () => resolve(127));
    child.on("close", (code) => resolve(code ?? 128));
  });
  if (exitCode !== 0) throw new LockstepError("BACKUP_APP_HOOK_FAILED", { command, exitCode });
  return { command, exitCode, startedAt, finishedAt: new Date().toISOString() };
}

/**
 * `lockstep backup create` (docs/design.md §4.3): app hook first, then participants and mediators in
 * parallel, then the sequencer last, then the order check; the manifest is written last. On any
 * failure the set's folder is removed (a crash leaves it without manifest: never listed, cleaned later).
 */
export async function createBackup(input: CreateBackupOptions): Promise<Manifest> {
  const { repository, progress, config } = input;
  // One lookup per node (it may start or probe the embedded cluster): dump and registration share it.
  const connections = new Map<string, Promise<NodeConnection>>();
  const baseConnect =
    input.connect ?? ((e: NodeEntry) => nodeConnection(e, config["data-dir"], input.logger));
  const connect = (entry: NodeEntry) => {
    let c = connections.get(entry.name);
    if (!c) {
      c = baseConnect(entry);
      connections.set(entry.name, c);
    }
    return c;
  };
  const options: CreateBackupOptions = { ...input, connect };
  // Every node's engine before anything starts: an engine this build lacks refuses the whole run.
  for (const entry of options.nodes) options.engines.forNode(entry);
  // Asked before the set is begun: a sequencer refusing our admin token fails the run here.
  const rpc = input.sequencer ?? sequencerRpc(config);
  const live = await liveSequencerStatus(rpc);
  const setId = await repository.beginSet(setClock(live, progress));
  const setDir = repository.setDir(setId);
  const startedAt = new Date().toISOString();
  progress(`backup set ${setId} in ${repository.dir}`);
  let resume: (() => Promise<void>) | undefined;
  let held = false;
  try {
    held = await holdProvisionally(rpc, live, setId, options.nodes, progress);
    const hookCommand = config.backup["app-hook"].trim();
    let appHook: Manifest["appHook"] = null;
    if (hookCommand) {
      progress(`app-hook: ${hookCommand}`);
      appHook = await runAppHook(hookCommand, setId, setDir);
    }
    const dump = (entry: NodeEntry, lookups?: NodeBackup[]) =>
      dumpNode({
        lookups: lookups && memberLookups(lookups),
        entry,
        dataDir: config["data-dir"],
        synchronizerId: config.synchronizer.id,
        setDir,
        engine: options.engines.forNode(entry),
        logger: options.logger,
        progress,
        connect,
      });
    let nodes: NodeBackup[];
    if (options.quiesce) {
      resume = await options.quiesce(options.nodes);
      try {
        nodes = await Promise.all(options.nodes.map((n) => dump(n)));
        // Intake is paused: the sequencer's tables are as its dump holds them.
        await lookUpAfterQuiesce(nodes, options.nodes, connect, options.logger);
      } finally {
        // Intake must resume whatever happened to the dumps.
        const r = resume;
        resume = undefined;
        await r();
        progress("sequencer intake resumed");
      }
    } else {
      const members = options.nodes.filter((n) => n.kind !== "sequencer");
      const sequencers = options.nodes.filter((n) => n.kind === "sequencer");
      nodes = await Promise.all(members.map((n) => dump(n)));
      // The sequencer last: everything the members processed is then in its dump (docs/design.md §4.3), and
      // its side of the order check is read in its own snapshot.
      const memberNodes = [...nodes];
      for (const s of sequencers) nodes.push(await dump(s, memberNodes));
    }
    const order = await checkOrder(nodes, setId, live && { rpc, sequencerId: live.sequencerId }).catch(
      (error) => {
        progress(`order not checked: asking the live sequencer failed: ${(error as Error).message}`);
        return { orderCheck: "unchecked" as const, checkedAgainst: null, unsafe: [] };
      },
    );
    for (const f of order.unsafe) {
      progress(
        `UNSAFE (fork): ${f.node}'s last stored event at ${f.lastStored} (chain hash ${f.storedHash?.slice(0, 16)}…) is ${f.sequencerHash ? `not the sequencer's (${f.sequencerHash.slice(0, 16)}…)` : "not held by the sequencer"} (${f.sequencerSet ? `set ${f.sequencerSet}` : "the live sequencer"}): restoring them together would fork`,
      );
    }
    if (order.orderCheck === "unchecked")
      progress(
        "order not checked: the live sequencer does not answer (restore checks the set against it again)",
      );
    const unsigned: UnsignedManifest = {
      manifestVersion: MANIFEST_VERSION,
      id: setId,
      lockstepVersion: LOCKSTEP_VERSION,
      synchronizerId: config.synchronizer.id,
      mode: options.quiesce ? "quiesced" : "ordered",
      startedAt,
      finishedAt: new Date().toISOString(),
      appHook,
      nodes,
      orderCheck: order.orderCheck,
      checkedAgainst: order.checkedAgainst,
      safe: order.unsafe.length === 0,
      unsafe: order.unsafe,
      bytes: nodes.reduce((sum, n) => sum + BigInt(n.bytes), 0n).toString(),
    };
    const manifest = await repository.completeSet(unsigned);
    await registerInNodes(manifest, options);
    await holdSet(rpc, manifest).then(
      (count) =>
        count > 0 && progress(`retention holds set at the sequencer for ${count} member position(s)`),
      (error) =>
        progress(
          `WARNING: no retention hold for ${manifest.id} (${(error as Error).message}): pruning could strand it; \`lockstep backup expire\` sets missing holds`,
        ),
    );
    return manifest;
  } catch (error) {
    if (held) await rpc.releaseRetentionHolds({ setIds: [setId] }).catch(() => undefined);
    await resume?.().catch(() => undefined);
    await repository.abandonSet(setId).catch(() => undefined);
    throw error;
  }
}

/** How far this host's clock may be off the sequencer's before `backup create` warns. */
const CLOCK_SKEW_WARNING_MS = 60_000;

/**
 * The time a set's id is stamped with: the live sequencer's clock (never below its head), not this
 * host's. Sets are ordered by their ids (`backup list`, retention's "newest N"), so a CLI host whose
 * clock is a year behind would otherwise stamp its new set as the oldest one, and the next
 * `backup expire` would delete the newest backup. This host's clock only when the sequencer is down.
 */
function setClock(
  live: Awaited<ReturnType<typeof liveSequencerStatus>>,
  progress: (line: string) => void,
): Date {
  const host = new Date();
  if (!live || live.sequencerTime <= 0n) {
    progress("the sequencer does not answer: the set id is stamped with this host's clock");
    return host;
  }
  const sequencer = new Date(Number(live.sequencerTime / 1000n));
  const skew = host.getTime() - sequencer.getTime();
  if (Math.abs(skew) > CLOCK_SKEW_WARNING_MS)
    progress(
      `WARNING: this host's clock is ${Math.round(skew / 1000)} s off the sequencer's (${sequencer.toISOString()}): the set id is stamped with the sequencer's time`,
    );
  return sequencer;
}

/** Provisional holds before the dumps (see provisionalHolds); a set without them still works. */
async function holdProvisionally(
  rpc: SequencerRpc,
  live: Awaited<ReturnType<typeof liveSequencerStatus>>,
  setId: string,
  nodes: readonly NodeEntry[],
  progress: (line: string) => void,
): Promise<boolean> {
  const members = nodes.filter((n) => n.kind !== "sequencer").map((n) => n.name);
  if (members.length === 0) return false;
  if (!live) {
    progress("WARNING: the sequencer does not answer: the set gets no retention hold until it does");
    return false;
  }
  try {
    return (await provisionalHolds(rpc, live, setId, members)) > 0;
  } catch (error) {
    progress(`WARNING: could not set retention holds: ${(error as Error).message}`);
    return false;
  }
}

/** After quiesced parallel dumps: the sequencer's side of the order check, from its database. */
async function lookUpAfterQuiesce(
  nodes: NodeBackup[],
  entries: readonly NodeEntry[],
  connect: (entry: NodeEntry) => Promise<NodeConnection>,
  logger: Logger,
): Promise<void> {
  const sequencer = nodes.find((n) => n.kind === "sequencer");
  const entry = entries.find((e) => e.kind === "sequencer");
  if (sequencer?.kind !== "sequencer" || !entry) return;
  const db = createStorageDb({ connectionString: (await connect(entry)).url, max: 1, logger });
  try {
    sequencer.position.memberEvents = await readMemberEvents(db, memberLookups(nodes));
  } finally {
    await db.close();
  }
}

/**
 * Records the completed set in each node's own database (set id, time, key fingerprints): key
 * rotation revokes an old key only once a backup holding the new one completed. Done after the
 * manifest, so only complete sets count; a failure here is logged, the set stays valid.
 */
async function registerInNodes(manifest: Manifest, options: CreateBackupOptions): Promise<void> {
  const connect =
    options.connect ?? ((e: NodeEntry) => nodeConnection(e, options.config["data-dir"], options.logger));
  await Promise.all(
    manifest.nodes.map(async (node) => {
      const entry = options.nodes.find((n) => n.name === node.name) as NodeEntry;
      const db = createStorageDb({
        connectionString: (await connect(entry)).url,
        max: 1,
        logger: options.logger,
      });
      try {
        await registerBackupTaken(db, {
          setId: manifest.id,
          repository: options.repository.dir,
          takenAt: new Date(node.startedAt),
          keyFingerprints: node.keyFingerprints,
          position: node.position,
          safe: manifest.safe,
          wrapperFingerprint: node.wrapperFingerprint ?? null,
        });
      } catch (error) {
        options.progress(
          `${node.name}: could not record the backup in its database: ${(error as Error).message}`,
        );
      } finally {
        await db.close();
      }
    }),
  );
}
