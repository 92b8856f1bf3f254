import type { Command } from "commander";
import { setupEmbeddedIfUsed } from "../backup/pgbackrest/cluster-setup.ts";
import { configNodes } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { createLogger } from "../common/logging.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { startEmbeddedCluster, startNetwork } from "../node/network.ts";
import { embeddedClusterDir } from "../node/node-database.ts";
import { nodeKindDefinition } from "../node/node-kinds.ts";
import { NodeRuntime } from "../node/node-runtime.ts";
import {
  ensureProcessDirs,
  livePid,
  processFiles,
  removePidFile,
  runningProcesses,
  terminate,
  writePidFile,
} from "../node/process-files.ts";
import { refuseWhileRestoring } from "../node/restore-marker.ts";
import { LocalPostgres } from "../storage/local-postgres.ts";
import { admitConfiguredNode } from "./admit-configured.ts";
import { findNode, loadCliConfig, outputFor, prepareDataDir } from "./cli-context.ts";
import type { LaunchedNode } from "./node-launcher.ts";
import { launchDetached } from "./node-launcher.ts";
import { table } from "./output.ts";
import { registerSwitchOverCommand } from "./switch-over-command.ts";

/** Resolves when SIGINT or SIGTERM arrives (foreground commands stop gracefully on either). */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
  });
}

function launchedTable(nodes: LaunchedNode[]): string {
  return table(
    ["NODE", "PID", "PORT", "ROLE", "LOG"],
    nodes.map((n) => [
      n.replica ? `${n.name} (${n.replica})` : n.name,
      String(n.pid),
      String(n.port),
      n.role,
      n.logFile,
    ]),
  );
}

export function registerNodeCommands(program: Command): void {
  program
    .command("up")
    .description("start every node of the config")
    .option("--detach", "run each node in the background, with pid and log files in the data dir")
    .action(async (opts: { detach?: boolean }, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const dataDir = loaded.config["data-dir"];
      prepareDataDir(dataDir);
      ensureProcessDirs(dataDir);
      const entries = configNodes(loaded.config);
      for (const entry of entries) {
        const pid = livePid(processFiles(dataDir, entry.name).pidFile);
        if (pid) throw new LockstepError("NODE_ALREADY_RUNNING", { node: entry.name, pid });
        // Before the embedded cluster is touched: an interrupted in-place restore may have left it
        // recovering, and the remedy is its rerun, not whatever a start against it would fail with.
        refuseWhileRestoring(dataDir, entry.name);
      }
      // No node runs yet: the moment to switch the embedded cluster's archiving on (a restart).
      const setUp = await setupEmbeddedIfUsed(loaded.config, entries, createLogger({ node: "backup" }));
      if (setUp)
        out.info(
          `embedded cluster set up for pgBackRest: stanza ${setUp.stanza}${setUp.restarted ? " (restarted)" : ""}`,
        );
      if (opts.detach) {
        const startedCluster = await startEmbeddedCluster(
          dataDir,
          entries,
          createLogger({ node: "postgres" }),
        );
        const launched: LaunchedNode[] = [];
        try {
          for (const entry of entries) {
            const endpoint = nodeEndpoint(entry);
            out.info(`starting ${entry.kind} ${entry.name} on ${endpoint.bindHost} port ${entry.port}`);
            launched.push(
              await launchDetached({
                configPath: loaded.path,
                dataDir,
                name: entry.name,
                port: entry.port,
                endpoint,
              }),
            );
          }
          for (const node of launched.filter((n) => n.role === "failed")) {
            out.info(
              `warning: ${node.name} is running but failed; \`lockstep status\` shows its error and remedy`,
            );
          }
        } catch (error) {
          // Nothing half-started: stop what this command launched.
          for (const node of launched) await terminate(node.pid);
          await startedCluster?.stop();
          throw error;
        }
        out.result({ nodes: launched }, () => launchedTable(launched));
        return;
      }
      const network = await startNetwork({
        config: loaded.config,
        dataDir,
        entries,
        loggerFor: (node) => createLogger({ node }),
        ownCluster: true,
      });
      for (const runtime of network.runtimes)
        writePidFile(processFiles(dataDir, runtime.name).pidFile, process.pid);
      // A permissioned synchronizer lets in the nodes this config declares (admit-configured.ts).
      network.runtimes.forEach((runtime, i) => {
        const kind = entries[i]?.kind ?? "sequencer";
        void admitConfiguredNode({
          config: loaded.config,
          kind,
          runtime,
          log: createLogger({ node: runtime.name }),
        });
      });
      out.info(`${network.runtimes.length} nodes running; Ctrl-C to stop`);
      await untilSignal();
      await network.stop();
      for (const runtime of network.runtimes)
        removePidFile(processFiles(dataDir, runtime.name).pidFile, process.pid);
      out.result({ stopped: network.runtimes.map((r) => r.name) }, () => "stopped");
    });

  program
    .command("down")
    .description("stop every node started with --detach, then the embedded database")
    .action(async (_opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const dataDir = loaded.config["data-dir"];
      const stopped: { name: string; replica?: string; pid: number; how: string }[] = [];
      // Participants first, the sequencer last: the reverse of the start order.
      const order = configNodes(loaded.config).map((n) => n.name);
      const processes = runningProcesses(dataDir).sort(
        (a, b) => order.indexOf(b.name) - order.indexOf(a.name),
      );
      for (const p of processes) {
        out.info(`stopping ${p.name}${p.replica ? ` (${p.replica})` : ""} (pid ${p.pid})`);
        const how = p.pid === process.pid ? "self" : await terminate(p.pid);
        removePidFile(p.pidFile, p.pid);
        stopped.push({ name: p.name, replica: p.replica, pid: p.pid, how });
      }
      const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir) });
      const clusterWasRunning = await cluster.isRunning();
      if (clusterWasRunning) await cluster.stop();
      out.result({ stopped, embeddedPostgresStopped: clusterWasRunning }, () =>
        stopped.length === 0 && !clusterWasRunning
          ? "nothing was running"
          : [
              ...stopped.map((s) => `stopped ${s.name} (${s.how})`),
              clusterWasRunning ? "stopped embedded PostgreSQL" : "",
            ]
              .filter(Boolean)
              .join("\n"),
      );
    });

  const node = program.command("node").description("start or stop one node");
  node
    .command("start <name>")
    .description("start one node (foreground unless --detach)")
    .option("--detach", "run in the background with pid and log files in the data dir")
    .option(
      "--replica <id>",
      "another process of the same node on the same database, passive until the active one goes",
    )
    .option("--port <port>", "the replica's port", (v) => Number.parseInt(v, 10))
    .option(
      "--no-admit",
      "with synchronizer.onboarding allow-list: do not admit the node; it waits until an operator runs `lockstep synchronizer admit`",
    )
    .action(
      async (
        name: string,
        opts: { detach?: boolean; replica?: string; port?: number; admit: boolean },
        command: Command,
      ) => {
        const out = outputFor(command);
        const loaded = await loadCliConfig(command);
        const entry = findNode(loaded, name);
        if (opts.replica && !opts.port) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: "--replica needs --port: a replica serves on its own port",
          });
        }
        const dataDir = loaded.config["data-dir"];
        prepareDataDir(dataDir);
        ensureProcessDirs(dataDir);
        const { pidFile } = processFiles(dataDir, name, opts.replica);
        const existing = livePid(pidFile);
        if (existing) throw new LockstepError("NODE_ALREADY_RUNNING", { node: name, pid: existing });
        // As in `up`: RESTORE_IN_PROGRESS before the embedded cluster (maybe recovering) is touched.
        refuseWhileRestoring(dataDir, name);
        const port = opts.port ?? entry.port;
        if (opts.detach) {
          await startEmbeddedCluster(dataDir, [entry], createLogger({ node: "postgres" }));
          const launched = await launchDetached({
            configPath: loaded.path,
            dataDir,
            name,
            port,
            // A replica's own port replaces the address's; without one the configured address stands.
            endpoint: nodeEndpoint(entry, opts.port),
            replica: opts.replica,
            noAdmit: !opts.admit,
          });
          out.result(launched, () => launchedTable([launched]));
          return;
        }
        writePidFile(pidFile, process.pid, port);
        const runtime = new NodeRuntime({
          entry,
          config: loaded.config,
          dataDir,
          logger: createLogger({ node: opts.replica ? `${name}.${opts.replica}` : name }),
          definition: nodeKindDefinition(entry.kind),
          replica: opts.replica,
          port,
        });
        try {
          await runtime.start();
          // A permissioned synchronizer lets in the nodes this config declares (admit-configured.ts).
          if (opts.admit) {
            void admitConfiguredNode({
              config: loaded.config,
              kind: entry.kind,
              runtime,
              log: createLogger({ node: name }),
            });
          }
          await Promise.race([untilSignal(), runtime.whenStopped()]);
          await runtime.stop();
        } finally {
          removePidFile(pidFile, process.pid);
        }
      },
    );

  node
    .command("stop <name>")
    .description("stop one node started with --detach")
    .option("--replica <id>", "stop this replica instead of the main process")
    .action(async (name: string, opts: { replica?: string }, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      findNode(loaded, name);
      const { pidFile } = processFiles(loaded.config["data-dir"], name, opts.replica);
      const pid = livePid(pidFile);
      if (!pid) throw new LockstepError("NODE_NOT_RUNNING", { node: name, address: pidFile });
      const sharing = runningProcesses(loaded.config["data-dir"]).filter(
        (p) => p.pid === pid && p.name !== name,
      );
      if (sharing.length > 0) {
        // A foreground `lockstep up` runs every node in one process: signalling it would stop them all.
        throw new LockstepError("INVALID_ARGUMENT", {
          details: `${name} runs in one process (pid ${pid}) with ${sharing.map((p) => p.name).join(", ")}; stop them together with \`lockstep down\``,
        });
      }
      const how = await terminate(pid);
      removePidFile(pidFile, pid);
      out.result({ name, replica: opts.replica, pid, how }, () => `stopped ${name} (${how})`);
    });

  registerSwitchOverCommand(node);
}
