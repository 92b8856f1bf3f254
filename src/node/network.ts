import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import type { Logger } from "../common/logging.ts";
import { LocalPostgres } from "../storage/local-postgres.ts";
import { embeddedClusterDir } from "./node-database.ts";
import { nodeKindDefinition } from "./node-kinds.ts";
import { NodeRuntime } from "./node-runtime.ts";

export interface NetworkOptions {
  config: LockstepConfig;
  dataDir: string;
  /** The nodes to start, in order; the synchronizer's nodes should come first. */
  entries: NodeEntry[];
  loggerFor: (node: string) => Logger;
  /** Stop the embedded cluster on stop() if this call started it (not if it was already running). */
  ownCluster?: boolean;
}

export interface RunningNetwork {
  runtimes: NodeRuntime[];
  clusterStartedHere: boolean;
  stop(): Promise<void>;
}

/** Starts the embedded cluster when a node needs it, reporting whether it was already running. */
export async function startEmbeddedCluster(
  dataDir: string,
  entries: NodeEntry[],
  logger: Logger,
): Promise<LocalPostgres | undefined> {
  if (entries.every((e) => e.config.storage.url)) return undefined;
  const cluster = new LocalPostgres({ dir: embeddedClusterDir(dataDir), logger });
  const { reused } = await cluster.start();
  return reused ? undefined : cluster;
}

/**
 * Starts nodes in this process, in order (`lockstep up` in the foreground and the demo).
 * On a failure it stops what it started, so nothing is left half-running.
 */
export async function startNetwork(options: NetworkOptions): Promise<RunningNetwork> {
  const started = await startEmbeddedCluster(options.dataDir, options.entries, options.loggerFor("postgres"));
  const runtimes: NodeRuntime[] = [];
  const stop = async () => {
    for (const runtime of [...runtimes].reverse()) await runtime.stop();
    if (started && options.ownCluster) await started.stop();
  };
  try {
    for (const entry of options.entries) {
      const runtime = new NodeRuntime({
        entry,
        config: options.config,
        dataDir: options.dataDir,
        logger: options.loggerFor(entry.name),
        definition: nodeKindDefinition(entry.kind),
      });
      await runtime.start();
      runtimes.push(runtime);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { runtimes, clusterStartedHere: started !== undefined, stop };
}
