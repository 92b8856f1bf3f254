import { spawn } from "node:child_process";
import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { LOCKSTEP_VERSION } from "../common/version.ts";
import { type NodeConnection, nodeConnection } from "../node/node-database.ts";
import { registerBackupTaken } from "../node/node-state.ts";
import { createPgDb } from "../storage/pg-db.ts";
import type { BackupEngine } from "./backup-engine.ts";
import type { BackupRepository } from "./backup-repository.ts";
import type { BackupFormat, Manifest, NodeBackup, UnsignedManifest } from "./manifest.ts";
import { dumpNode } from "./node-dump.ts";
import { checkOrder } from "./order-check.ts";

export interface CreateBackupOptions {
  config: LockstepConfig;
  /** The nodes to back up (a subset makes its own set, checked against the newest set with a sequencer). */
  nodes: NodeEntry[];
  repository: BackupRepository;
  engine: BackupEngine;
  format: BackupFormat;
  jobs: number;
  logger: Logger;
  /** A progress line (stderr in the CLI). */
  progress: (line: string) => void;
  /**
   * Called with the nodes to dump when --quiesce: pauses the sequencer's intake, waits until every
   * node is clean at the head, and returns the function that resumes intake.
   */
  quiesce?: (nodes: NodeEntry[]) => Promise<() => Promise<void>>;
  connect?: (entry: NodeEntry) => Promise<NodeConnection>;
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
 * `lockstep backup create` (DESIGN §4.3): app hook first, then participants and mediators in
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
  const setId = await repository.beginSet();
  const setDir = repository.setDir(setId);
  const startedAt = new Date().toISOString();
  progress(`backup set ${setId} in ${repository.dir}`);
  let resume: (() => Promise<void>) | undefined;
  try {
    const hookCommand = config.backup["app-hook"].trim();
    let appHook: Manifest["appHook"] = null;
    if (hookCommand) {
      progress(`app-hook: ${hookCommand}`);
      appHook = await runAppHook(hookCommand, setId, setDir);
    }
    const dump = (entry: NodeEntry) =>
      dumpNode({
        entry,
        dataDir: config["data-dir"],
        synchronizerId: config.synchronizer.id,
        setDir,
        format: options.format,
        jobs: options.jobs,
        engine: options.engine,
        logger: options.logger,
        progress,
        connect,
      });
    let nodes: NodeBackup[];
    if (options.quiesce) {
      resume = await options.quiesce(options.nodes);
      try {
        nodes = await Promise.all(options.nodes.map(dump));
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
      nodes = await Promise.all(members.map(dump));
      // The sequencer last: everything the members processed is then in its dump (DESIGN §4.3).
      for (const s of sequencers) nodes.push(await dump(s));
    }
    const order = await checkOrder(nodes, setId, repository);
    for (const f of order.unsafe) {
      progress(
        `UNSAFE: ${f.node} is at ${f.clean ?? "-"} (last stored ${f.lastStored ?? "-"}) but the sequencer of set ${f.sequencerSet} last delivered ${f.sequencerLastDelivered ?? "nothing"} to it: restoring both would fork`,
      );
    }
    if (order.orderCheck === "unchecked")
      progress("order not checked: no backup set holds the sequencer yet");
    const unsigned: UnsignedManifest = {
      manifestVersion: 1,
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
    return manifest;
  } catch (error) {
    await resume?.().catch(() => undefined);
    await repository.abandonSet(setId).catch(() => undefined);
    throw error;
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
      const db = createPgDb({ connectionString: (await connect(entry)).url, max: 1, logger: options.logger });
      try {
        await registerBackupTaken(db, {
          setId: manifest.id,
          repository: options.repository.dir,
          takenAt: new Date(node.startedAt),
          keyFingerprints: node.keyFingerprints,
          position: node.position,
          safe: manifest.safe,
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
