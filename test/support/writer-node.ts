import { validateConfig } from "../../src/common/config.ts";
import { configNodes, type LockstepConfig, type NodeEntry } from "../../src/common/config-schema.ts";
import { silentLogger } from "../../src/common/logging.ts";
import type { NodeKindDefinition } from "../../src/common/node-kind.ts";
import { NodeRuntime } from "../../src/node/node-runtime.ts";
import type { Db } from "../../src/storage/db.ts";

// A node whose kind does nothing but write, for the single-writer and fencing tests: every row is
// tagged with the writer epoch of the activation that wrote it, in a bigserial order.

/** A config with participant1 on the database at `url` (replication check off), and that entry. */
export function writerNodeConfig(dataDir: string, url: string): { config: LockstepConfig; entry: NodeEntry } {
  const config = validateConfig({
    "data-dir": dataDir,
    synchronizer: {
      id: "sync1",
      sequencer: { name: "sequencer", port: 1 },
      mediator: { name: "mediator", port: 2 },
    },
    participants: [{ name: "participant1", port: 3, storage: { url, replication: { check: "off" } } }],
  });
  return { config, entry: configNodes(config).find((e) => e.name === "participant1") as NodeEntry };
}

/**
 * A kind whose activation writes a row every few ms, in transactions, until stopped; errors are
 * retried. `stopTakesMs` makes its stop slow, as a kind finishing in-flight work is: the writes
 * must end before the stop does. `created` counts its instances.
 */
export function writerKind(
  options: { created?: { count: number }; stopTakesMs?: number } = {},
): NodeKindDefinition<Db> {
  return {
    kind: "participant",
    migrations: [
      {
        version: 900,
        name: "writes",
        sql: "CREATE TABLE writes (id bigserial PRIMARY KEY, epoch bigint NOT NULL)",
      },
    ],
    create(ctx) {
      if (options.created) options.created.count++;
      let stopped = false;
      let loop: Promise<void> | undefined;
      return {
        routes: () => {},
        async activate() {
          loop = (async () => {
            while (!stopped) {
              await ctx.db
                .transaction((tx) =>
                  tx.execute("INSERT INTO writes (epoch) VALUES ($1)", [ctx.identity().writerEpoch]),
                )
                .catch(() => {});
              await new Promise((resolve) => setTimeout(resolve, 5));
            }
          })();
        },
        async status() {
          return { position: {} };
        },
        async stop() {
          if (options.stopTakesMs) await new Promise((resolve) => setTimeout(resolve, options.stopTakesMs));
          stopped = true;
          await loop;
        },
      };
    },
  };
}

/**
 * Starts a process of participant1 with a writer kind on the database at `url` (port 0, lock polls
 * every 100 ms), registered in `runtimes` for the test's cleanup.
 */
export async function startWriterRuntime(options: {
  dataDir: string;
  url: string;
  runtimes: NodeRuntime[];
  logName: string;
  replica?: string;
  kind?: NodeKindDefinition<Db>;
}): Promise<NodeRuntime> {
  const { config, entry } = writerNodeConfig(options.dataDir, options.url);
  const runtime = new NodeRuntime({
    entry,
    config,
    dataDir: options.dataDir,
    logger: silentLogger(options.logName),
    definition: options.kind ?? writerKind(),
    replica: options.replica,
    port: 0,
    lockPollMs: 100,
  });
  options.runtimes.push(runtime);
  await runtime.start();
  return runtime;
}
