import type { Command } from "commander";
import { normalizedConfigYaml } from "../common/config.ts";
import { loadCliConfig, outputFor } from "./cli-context.ts";

export function registerConfigCommands(program: Command): void {
  const config = program.command("config").description("inspect the configuration");
  config
    .command("check")
    .description("validate the config and print it normalized, or every error with its key path (exit 2)")
    .action(async (_opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      for (const warning of loaded.warnings) out.info(`warning: ${warning}`);
      out.result({ path: loaded.path, config: loaded.config, warnings: loaded.warnings }, () =>
        normalizedConfigYaml(loaded.config),
      );
    });
}
