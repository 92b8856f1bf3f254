import type { Command } from "commander";
import { checkNode, setupNode } from "../backup/pgbackrest/cluster-setup.ts";
import { LockstepError } from "../common/errors.ts";
import { createLogger } from "../common/logging.ts";
import { findNode, loadCliConfig, outputFor } from "./cli-context.ts";
import { alreadyReported, table } from "./output.ts";

function cliLogger() {
  return createLogger({ node: "backup", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
}

/** `lockstep backup setup NODE` and `backup check NODE`: a node's cluster and pgBackRest (docs/backup.md). */
export function registerPgBackRestSetupCommands(backup: Command): void {
  backup
    .command("setup")
    .description(
      "set a node's PostgreSQL cluster up for pgBackRest (embedded: done here, restarting it once; external: prints what to set)",
    )
    .argument("<node>", "the node whose cluster to set up")
    .action(async (name: string, _opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const result = await setupNode(loaded.config, findNode(loaded, name), cliLogger());
      out.result(result, () => {
        const lines = [`${result.node}: ${result.cluster}, stanza ${result.stanza}`];
        lines.push(`pgBackRest config: ${result.configFile}; repository: ${result.repository}`);
        if (result.managed === "embedded") {
          lines.push(
            result.restarted
              ? "archiving switched on (the embedded cluster was restarted once)"
              : "archiving was on already",
          );
        }
        if (result.pending.length > 0) {
          lines.push("still to do on the database server (postgresql.conf or ALTER SYSTEM, then restart):");
          for (const [key, value] of Object.entries(result.settings)) lines.push(`  ${key} = '${value}'`);
          lines.push(`  (now: ${result.pending.join("; ")})`);
          lines.push(`then run \`lockstep backup setup ${result.node}\` again: it creates the stanza`);
        } else {
          lines.push(`stanza ${result.stanza} created, \`pgbackrest check\` passed`);
        }
        return lines.join("\n");
      });
      if (result.pending.length > 0) {
        // Not an error of the command, but nothing a backup can use yet: say so in the exit code.
        process.exitCode = 1;
      }
    });

  backup
    .command("check")
    .description("verify that a node's cluster archives its WAL into pgBackRest's repository")
    .argument("<node>", "the node whose cluster to check")
    .action(async (name: string, _opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const result = await checkNode(loaded.config, findNode(loaded, name), cliLogger());
      out.result(result, () =>
        [
          `${result.node}: ${result.cluster}, stanza ${result.stanza}: ${result.ok ? "ok" : "NOT OK"}`,
          table(
            ["CHECK", "RESULT", "DETAIL"],
            result.findings.map((f) => [f.check, f.ok ? "ok" : "FAIL", f.detail]),
          ),
        ].join("\n"),
      );
      if (!result.ok) {
        // The findings were the output: the error only sets the exit code (one JSON document).
        throw alreadyReported(
          new LockstepError("PGBACKREST_NOT_SET_UP", {
            node: result.node,
            cluster: result.cluster,
            reason: result.findings
              .filter((f) => !f.ok)
              .map((f) => `${f.check}: ${f.detail}`)
              .join("; "),
          }),
        );
      }
    });
}
