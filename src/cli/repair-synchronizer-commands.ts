import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import type { LoadedConfig } from "../common/config.ts";
import { configNodes, type NodeEntry } from "../common/config-schema.ts";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import { createLogger, type Logger } from "../common/logging.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { nowMicros } from "../common/time.ts";
import { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { nodeAdminClient } from "../node/clients.ts";
import { nodeConnection } from "../node/node-database.ts";
import { ensureProcessDirs } from "../node/process-files.ts";
import { withOfflineParticipant } from "../participant/offline-repair.ts";
import {
  completedMigration,
  currentSynchronizer,
  type MigrationResult,
  migrateParticipantDatabase,
  partiesToAnnounce,
} from "../participant/synchronizer-migration.ts";
import { recordedSynchronizerId } from "../sequencer/synchronizer-identity.ts";
import type { Queryable } from "../storage/db.ts";
import { createStorageDb } from "../storage/storage-db.ts";
import { findNode, loadCliConfig, outputFor, prepareDataDir } from "./cli-context.ts";
import { launchDetached } from "./node-launcher.ts";

// `lockstep repair new-synchronizer` and `repair migrate-synchronizer` (docs/restore.md, "The
// synchronizer is lost or restored behind the participants"): Canton's remedy of rolling out a new
// synchronizer and moving every participant to it with repair.migrate_synchronizer(source, target, force).
// The config names the new synchronizer (synchronizer.id and its sequencer and mediator, with their
// own ports and storage); the participants keep theirs.

/** How long a started node may take to become active and subscribed. */
const START_TIMEOUT_MS = 60_000;

function repairLogger(): Logger {
  return createLogger({ node: "repair", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
}

/** Reads a node's database without taking anything (it may run); null when it has no node_state yet. */
async function readNodeDatabase<T>(
  entry: NodeEntry,
  dataDir: string,
  read: (q: Queryable) => Promise<T>,
): Promise<T | null> {
  const connection = await nodeConnection(entry, dataDir, repairLogger());
  const db = createStorageDb({
    connectionString: connection.url,
    applicationName: `lockstep-repair-${entry.name}`,
  });
  try {
    const exists = await db.one<{ t: string | null }>("SELECT to_regclass('node_state')::text AS t");
    if (exists.t === null || !(await db.maybeOne("SELECT 1 FROM node_state"))) return null;
    return await read(db);
  } finally {
    await db.close();
  }
}

/** The synchronizer a sequencer's or mediator's database belongs to ("unrecorded": an older sequencer database). */
async function synchronizerOfDatabase(entry: NodeEntry, dataDir: string): Promise<string | null> {
  return readNodeDatabase(entry, dataDir, async (q) => {
    if (entry.kind === "sequencer")
      return (await recordedSynchronizerId(q)) ?? "an earlier synchronizer (unrecorded)";
    const reg = await q.maybeOne<{ id: string }>(
      "SELECT split_part(synchronizer_id, '::', 1) AS id FROM sequencer_client_registration",
    );
    return reg?.id ?? null;
  });
}

type NodeStatus = Awaited<ReturnType<ReturnType<typeof nodeAdminClient>["getStatus"]>>;

async function statusOf(entry: NodeEntry): Promise<NodeStatus | undefined> {
  return nodeAdminClient(entry)
    .getStatus({}, { timeoutMs: 2000 })
    .catch(() => undefined);
}

/**
 * Starts the node in the background unless it already runs, then waits until it is active (a member
 * also until its first subscription passed its check). A failed node is reported with its error.
 */
async function startAndAwait(
  loaded: LoadedConfig,
  entry: NodeEntry,
): Promise<{ pid: number; started: boolean }> {
  const dataDir = loaded.config["data-dir"];
  let started = false;
  if (!(await statusOf(entry))) {
    prepareDataDir(dataDir);
    ensureProcessDirs(dataDir);
    await launchDetached({
      configPath: loaded.path,
      dataDir,
      name: entry.name,
      port: entry.port,
      endpoint: nodeEndpoint(entry),
    });
    started = true;
  }
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const status = await statusOf(entry);
    if (status?.role === "failed" && status.lastError) {
      throw new LockstepError("NODE_START_FAILED", {
        node: entry.name,
        reason: `${status.lastError.code}: ${status.lastError.message} (remedy: ${status.lastError.remedy})`,
        logFile: "its log under the data dir",
      });
    }
    const position = status?.positionJson
      ? (JSON.parse(status.positionJson) as { subscriptionCheck?: string })
      : {};
    if (
      status?.role === "active" &&
      (entry.kind === "sequencer" || position.subscriptionCheck === "passed")
    ) {
      return { pid: status.pid, started };
    }
    if (Date.now() > deadline) {
      throw new LockstepError("NODE_START_FAILED", {
        node: entry.name,
        reason: `not active and subscribed within ${START_TIMEOUT_MS / 1000} s (last seen: ${status?.role ?? "no answer"})`,
        logFile: "its log under the data dir",
      });
    }
    await sleep(300);
  }
}

function registerNewSynchronizer(repair: Command): void {
  repair
    .command("new-synchronizer")
    .description(
      "bootstrap the synchronizer the config names (a new id, its own sequencer and mediator databases) beside or instead of a lost one",
    )
    .requiredOption("--id <id>", "the new synchronizer's id: must be the config's synchronizer.id")
    .action(async (opts: { id: string }, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const { config } = loaded;
      const dataDir = config["data-dir"];
      if (config.synchronizer.id !== opts.id) {
        throw new LockstepError("INVALID_ARGUMENT", {
          details: `the config's synchronizer.id is ${config.synchronizer.id}, not ${opts.id}: name the new synchronizer in the config first (synchronizer.id, and its sequencer and mediator with ports and storage of their own)`,
        });
      }
      const nodes = configNodes(config);
      const synchronizerNodes = nodes.filter((n) => n.kind !== "participant");
      out.info(`[1/3] are ${synchronizerNodes.map((n) => n.name).join(" and ")}'s databases fresh?`);
      for (const entry of synchronizerNodes) {
        const found = await synchronizerOfDatabase(entry, dataDir);
        if (found !== null && found !== opts.id) {
          throw new LockstepError("NEW_SYNCHRONIZER_NOT_FRESH", {
            node: entry.name,
            found,
            synchronizer: opts.id,
          });
        }
        out.info(`      ${entry.name}: ${found === null ? "fresh" : `already ${opts.id}'s (a rerun)`}`);
      }
      const launched: Record<string, { pid: number; started: boolean }> = {};
      for (const [step, entry] of synchronizerNodes.entries()) {
        out.info(`[${step + 2}/3] starting ${entry.kind} ${entry.name} at ${nodeEndpoint(entry).address}`);
        launched[entry.name] = await startAndAwait(loaded, entry);
        out.info(`      active, pid ${launched[entry.name]?.pid}`);
      }
      const sequencer = synchronizerNodes.find((n) => n.kind === "sequencer") as NodeEntry;
      const status = await createNodeClient(SequencerService, nodeEndpoint(sequencer).url).getSequencerStatus(
        {},
      );
      const participants = await Promise.all(
        nodes
          .filter((n) => n.kind === "participant")
          .map(async (p) => ({
            participant: p.name,
            synchronizer: await readNodeDatabase(p, dataDir, currentSynchronizer).catch(() => null),
          })),
      );
      const next = participants
        .filter((p) => p.synchronizer !== null && p.synchronizer !== opts.id)
        .map(
          (p) =>
            `lockstep node stop ${p.participant}; lockstep repair migrate-synchronizer ${p.participant} --from ${p.synchronizer} --to ${opts.id} --force`,
        );
      const result = {
        synchronizer: opts.id,
        synchronizerId: status.synchronizerId,
        nodes: synchronizerNodes.map((n) => ({ name: n.name, kind: n.kind, ...launched[n.name] })),
        participants,
        next,
      };
      out.result(result, () =>
        [
          `synchronizer ${status.synchronizerId} is running`,
          ...(next.length > 0
            ? ["next, for each participant (docs/restore.md):", ...next.map((c) => `  ${c}`)]
            : []),
        ].join("\n"),
      );
    });
}

function registerMigrateSynchronizer(repair: Command): void {
  repair
    .command("migrate-synchronizer")
    .description(
      "move a stopped participant to the config's (new) synchronizer: its parties and keys, its active contracts; then start it there",
    )
    .argument("<participant>", "participant name")
    .requiredOption("--from <id>", "the synchronizer the participant is on")
    .requiredOption("--to <id>", "the synchronizer to move to: the config's synchronizer.id")
    .option("--force", "go on past in-flight submissions and unfinished requests (a ledger fork may result)")
    .option("--no-start", "leave the participant stopped after the migration")
    .action(
      async (
        name: string,
        opts: { from: string; to: string; force?: boolean; start: boolean },
        command: Command,
      ) => {
        const out = outputFor(command);
        const loaded = await loadCliConfig(command);
        const entry = findNode(loaded, name);
        const { config } = loaded;
        const invalid = (reason: string) =>
          new LockstepError("SYNCHRONIZER_MIGRATION_INVALID", {
            participant: name,
            from: opts.from,
            to: opts.to,
            reason,
          });
        if (config.synchronizer.id !== opts.to) {
          throw invalid(
            `the config's synchronizer.id is ${config.synchronizer.id}: the participant connects to the config's synchronizer, so the config must name ${opts.to}`,
          );
        }
        out.info(`[1/4] is ${opts.to} running?`);
        const sequencer = nodeEndpoint(config.synchronizer.sequencer);
        if (opts.start) {
          const status = await createNodeClient(SequencerService, sequencer.url)
            .getSequencerStatus({}, { timeoutMs: 5000 })
            .catch((error: unknown) => {
              throw invalid(
                `its sequencer at ${sequencer.address} does not answer (${toLockstepError(error).message}): bootstrap it first with lockstep repair new-synchronizer --id ${opts.to}`,
              );
            });
          if (status.synchronizerId.split("::")[0] !== opts.to) {
            throw invalid(`the sequencer at ${sequencer.address} serves ${status.synchronizerId}`);
          }
          out.info(`      yes: ${status.synchronizerId} at ${sequencer.address}`);
        } else {
          out.info("      not checked (--no-start)");
        }
        out.info(
          `[2/4] migrating ${name}'s database from ${opts.from} to ${opts.to}${opts.force ? " (forced)" : ""}`,
        );
        // A rerun after the migration committed (the participant may run on the target by now):
        // report it without taking the participant offline.
        const done = await readNodeDatabase(entry, config["data-dir"], (q) =>
          completedMigration(q, opts.from, opts.to),
        );
        const migration: MigrationResult = done
          ? { ...done, alreadyMigrated: true }
          : await withOfflineParticipant(
              entry,
              config["data-dir"],
              repairLogger(),
              "migrate-synchronizer",
              ({ db }) =>
                migrateParticipantDatabase(db, {
                  participant: name,
                  from: opts.from,
                  to: opts.to,
                  force: Boolean(opts.force),
                  now: nowMicros(),
                }),
            );
        for (const line of migrationLines(migration)) out.info(`      ${line}`);
        let started: { pid: number } | null = null;
        if (opts.start) {
          out.info(`[3/4] starting ${name}: it registers with ${opts.to} and announces its parties there`);
          started = await startAndAwait(loaded, entry);
          out.info(`[4/4] waiting until its parties are hosted on ${opts.to}`);
          await awaitPartiesAnnounced(entry, config["data-dir"]);
          out.info(`      done: ${name} is on ${opts.to}, pid ${started.pid}`);
        }
        const result = {
          participant: name,
          ...migration,
          started: started !== null,
          pid: started?.pid ?? null,
        };
        out.result(
          result,
          () => `${name} migrated from ${opts.from} to ${opts.to} at offset ${migration.offset}`,
        );
      },
    );
}

function migrationLines(m: MigrationResult): string[] {
  if (m.alreadyMigrated) return [`already migrated at offset ${m.offset} (nothing changed)`];
  const lines = [
    `marker at offset ${m.offset}; ${m.contractsMoved} active contract(s) moved; ${m.oldEvents} event(s) of ${m.from} forgotten`,
  ];
  if (m.abandonedCommandIds.length > 0) {
    lines.push(
      `${m.abandonedCommandIds.length} in-flight submission(s) completed with SYNCHRONIZER_MIGRATED_WHILE_IN_FLIGHT: ${m.abandonedCommandIds.join(", ")}`,
    );
  }
  if (m.abandonedRequests.length > 0)
    lines.push(`${m.abandonedRequests.length} unfinished request(s) rolled back`);
  if (m.forced)
    lines.push("forced: a ledger fork may result; compare the participants with lockstep repair compare-acs");
  return lines;
}

async function awaitPartiesAnnounced(entry: NodeEntry, dataDir: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while ((await readNodeDatabase(entry, dataDir, partiesToAnnounce)) !== undefined) {
    if (Date.now() > deadline) {
      throw new LockstepError("NODE_START_FAILED", {
        node: entry.name,
        reason: `its parties were not announced on the new synchronizer within ${START_TIMEOUT_MS / 1000} s`,
        logFile: "its log under the data dir",
      });
    }
    await sleep(300);
  }
}

export function registerRepairSynchronizerCommands(repair: Command): void {
  registerNewSynchronizer(repair);
  registerMigrateSynchronizer(repair);
}
