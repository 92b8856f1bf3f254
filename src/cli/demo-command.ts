import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { exampleConfig } from "../common/config.ts";
import { configNodes } from "../common/config-schema.ts";
import { createLogger } from "../common/logging.ts";
import { freePort } from "../node/free-port.ts";
import { startNetwork } from "../node/network.ts";
import { outputFor, prepareDataDir } from "./cli-context.ts";
import { collectStatus, statusTable } from "./status-command.ts";

/**
 * `lockstep demo`: the story on an embedded database. For now: start the example network on free
 * ports, show every node's status, stop cleanly. The backup/restore issue extends it to the whole story.
 */
export function registerDemoCommand(program: Command): void {
  program
    .command("demo")
    .description("start the example network on an embedded database, show its status, stop")
    .option("--data-dir <dir>", "keep the demo's data here (default: a temporary dir, removed afterwards)")
    .action(async (opts: { dataDir?: string }, command: Command) => {
      const out = outputFor(command);
      const dataDir = opts.dataDir ? resolve(opts.dataDir) : mkdtempSync(join(tmpdir(), "lockstep-demo-"));
      prepareDataDir(dataDir);
      const ports = { sequencer: await freePort(), mediator: await freePort() };
      const participants = [await freePort(), await freePort()];
      const config = exampleConfig(dataDir, { ...ports, participants });
      const logLevel = process.env.LOCKSTEP_LOG_LEVEL ?? "warn";
      out.info(`demo: starting the example network in ${dataDir}`);
      const network = await startNetwork({
        config,
        dataDir,
        entries: configNodes(config),
        loggerFor: (node) => createLogger({ node, level: logLevel }),
        ownCluster: true,
      });
      let nodes: Awaited<ReturnType<typeof collectStatus>>;
      try {
        nodes = await collectStatus(config);
      } finally {
        out.info("demo: stopping the network");
        await network.stop();
      }
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
      const ok = nodes.every((n) => n.running && n.role === "active");
      out.result({ ok, dataDir: opts.dataDir ? dataDir : null, nodes }, () =>
        [
          statusTable(nodes),
          ok ? "demo: every node started active and stopped cleanly" : "demo: FAILED",
        ].join("\n"),
      );
      if (!ok) process.exitCode = 1;
    });
}
