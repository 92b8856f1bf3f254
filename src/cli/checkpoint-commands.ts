import type { Command } from "commander";
import { createCheckpoint, deleteCheckpoint, listCheckpoints } from "../backup/checkpoint.ts";
import { createLogger } from "../common/logging.ts";
import { loadCliConfig, outputFor, selectNodes } from "./cli-context.ts";
import { table } from "./output.ts";

/**
 * `lockstep checkpoint create NAME [--nodes A,B]` and `checkpoint list` (docs/cli.md): a named
 * restore point on every node's cluster with each node's position as of it (src/backup/checkpoint.ts),
 * the target of a network-wide point-in-time recovery.
 */
export function registerCheckpointCommands(program: Command): void {
  const checkpoint = program
    .command("checkpoint")
    .description("named restore points across the network, for point-in-time recovery");
  checkpoint
    .command("create")
    .description(
      "a restore point on every node's cluster, in the safe order, with each node's position as of it",
    )
    .argument(
      "<name>",
      "the checkpoint's name: a lower-case letter, then lower-case letters, digits, - or _ (at most 48)",
    )
    .option("--nodes <names>", "only these nodes (comma-separated)")
    .action(async (name: string, opts: { nodes?: string }, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const logger = createLogger({ node: "checkpoint", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
      const record = await createCheckpoint({
        config: loaded.config,
        name,
        nodes: selectNodes(loaded, opts.nodes),
        logger,
        progress: (line) => out.info(line),
      });
      out.result(record, () =>
        [
          `checkpoint ${record.name} at ${record.createdAt}: restore it with \`lockstep restore plan --checkpoint ${record.name}\` (set ${record.set})`,
          table(
            ["NODE", "KIND", "CLUSTER", "POSITION"],
            record.nodes.map((n) => [n.name, n.kind, n.cluster, JSON.stringify(n.position)]),
          ),
        ].join("\n"),
      );
    });
  checkpoint
    .command("delete")
    .description(
      "forget a checkpoint and its set; the next `backup expire` releases its holds and the pgBackRest backups only it needed",
    )
    .argument("<name>", "the checkpoint's name")
    .action(async (name: string, _opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const logger = createLogger({ node: "checkpoint", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
      const record = await deleteCheckpoint(loaded.config.backup.repository, name, logger);
      out.result(
        { deleted: record.name, set: record.set ?? null },
        () => `checkpoint ${record.name} deleted${record.set ? ` with its set ${record.set}` : ""}`,
      );
    });
  checkpoint
    .command("list")
    .description("the checkpoints recorded in the backup repository, oldest first")
    .action(async (_opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const records = await listCheckpoints(loaded.config.backup.repository);
      out.result({ checkpoints: records }, () =>
        records.length === 0
          ? "no checkpoints"
          : table(
              ["NAME", "CREATED", "SET", "NODES", "RESTORE POINTS"],
              records.map((r) => [
                r.name,
                r.createdAt,
                r.set ?? "-",
                r.nodes.map((n) => n.name).join(","),
                r.clusters.map((c) => `${c.cluster}@${c.lsn}`).join(","),
              ]),
            ),
      );
    });
}
