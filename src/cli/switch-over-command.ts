import { setTimeout as sleep } from "node:timers/promises";
import type { Command } from "commander";
import { LockstepError } from "../common/errors.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { AdminService } from "../gen/lockstep/admin/v1/admin_pb.ts";
import { findNode, loadCliConfig, outputFor } from "./cli-context.ts";
import { type NodeProcess, nodeProcesses } from "./node-processes.ts";

/** How long the command waits for a passive process to report active after the switch. */
const TAKEOVER_TIMEOUT_MS = 30_000;

function processName(p: NodeProcess): string {
  return `${p.json.replica ?? "(main)"} (pid ${p.json.pid ?? "?"}, ${p.json.address})`;
}

/**
 * `lockstep node switch-over NAME`: the node's active process stops its kind cleanly, releases the
 * database lock and stays passive (Admin SwitchOver); the command waits until another process of
 * the node reports active. Refused when no passive process is there to take over.
 */
export function registerSwitchOverCommand(node: Command): void {
  node
    .command("switch-over <name>")
    .description("make the node's active process passive, so that a passive replica takes over")
    .action(async (name: string, _opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const entry = findNode(loaded, name);
      const before = await nodeProcesses(loaded.config, entry);
      const active = before.find((p) => p.status?.role === "active");
      if (!active) {
        throw new LockstepError("NODE_NOT_RUNNING", {
          node: name,
          address: `${before.map((p) => p.json.address).join(", ")} (no active process)`,
        });
      }
      if (!before.some((p) => p.status?.role === "passive")) {
        throw new LockstepError("NO_PASSIVE_REPLICA", { node: name });
      }
      const started = performance.now();
      const { writerEpoch } = await createNodeClient(AdminService, active.url).switchOver(
        {},
        { timeoutMs: 60_000 },
      );
      const deadline = Date.now() + TAKEOVER_TIMEOUT_MS;
      let taker: NodeProcess | undefined;
      while (!taker && Date.now() < deadline) {
        const now = await nodeProcesses(loaded.config, entry, 1000);
        taker = now.find((p) => p.status?.role === "active" && p.url !== active.url);
        if (!taker) await sleep(50);
      }
      // The one switched away from takes its lock back after a hold-off if nobody else did.
      if (!taker) throw new LockstepError("NO_PASSIVE_REPLICA", { node: name });
      const tookMs = Math.round(performance.now() - started);
      out.result(
        {
          node: name,
          from: active.json,
          to: taker.json,
          previousWriterEpoch: writerEpoch.toString(),
          writerEpoch: taker.json.writerEpoch,
          tookMs,
        },
        () =>
          `${name}: switched over from ${processName(active)} to ${processName(taker)}, ` +
          `writer epoch ${writerEpoch} → ${taker.json.writerEpoch}, in ${tookMs} ms`,
      );
    });
}
