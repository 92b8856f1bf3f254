import { createInterface } from "node:readline/promises";
import type { Command } from "commander";
import { PgDumpEngine } from "../backup/pg-dump-engine.ts";
import { applyRestore } from "../backup/restore-apply.ts";
import type { RestoreCheck } from "../backup/restore-checks.ts";
import { planRestore, type RestorePlan, sequencerRpc } from "../backup/restore-plan.ts";
import { isLockstepError, LockstepError } from "../common/errors.ts";
import { createLogger } from "../common/logging.ts";
import { loadCliConfig, outputFor, prepareDataDir } from "./cli-context.ts";
import { table } from "./output.ts";

interface RestoreOptions {
  nodes?: string;
  replace?: boolean;
  force?: boolean;
  yes?: boolean;
  jobs?: number;
}

function nodeNames(opts: RestoreOptions): string[] | undefined {
  const names = opts.nodes
    ?.split(",")
    .map((n) => n.trim())
    .filter(Boolean);
  return names && names.length > 0 ? names : undefined;
}

/** CLI.md's `restore plan` JSON. */
function planJson(plan: RestorePlan) {
  return {
    set: plan.set,
    ok: plan.ok,
    nodes: plan.nodes.map((n) => ({
      name: n.backup.name,
      kind: n.backup.kind,
      database: n.target.database,
      position: n.backup.position,
      alreadyRestored: n.alreadyRestored,
    })),
    forced: plan.forced,
    checks: plan.checks.map((c: RestoreCheck) => ({
      node: c.node,
      check: c.check,
      verdict: c.verdict,
      code: c.code,
      message: c.message,
      remedy: c.remedy,
      ...(c.forced ? { forced: true } : {}),
    })),
  };
}

function planText(plan: RestorePlan): string {
  const rows = plan.checks.map((c) => [c.node, c.check, c.verdict.toUpperCase(), c.code ?? "-", c.message]);
  const remedies = plan.checks
    .filter((c) => c.verdict !== "pass" && c.remedy)
    .map((c) => `${c.node} ${c.check} (${c.verdict}): ${c.remedy}`);
  return [
    `restore plan for backup set ${plan.set}: ${plan.ok ? "OK" : "REFUSED"}`,
    table(["NODE", "CHECK", "VERDICT", "CODE", "DETAILS"], rows),
    ...(remedies.length ? ["", "remedies:", ...remedies.map((r) => `  ${r}`)] : []),
  ].join("\n");
}

/**
 * planRestore, with a manifest that does not verify reported as the refused `manifest` check
 * (exit 3) rather than a failure: it is the first preflight check of DESIGN §4.4.
 */
async function planOrRefusal(
  options: Parameters<typeof planRestore>[0],
  out: ReturnType<typeof outputFor>,
): Promise<RestorePlan | undefined> {
  try {
    return await planRestore(options);
  } catch (error) {
    if (!isLockstepError(error, "BACKUP_CORRUPTED")) throw error;
    const check = {
      node: "*",
      check: "manifest",
      verdict: "refuse",
      code: error.code,
      message: error.message,
      remedy: error.remedy,
    };
    out.result(
      { set: options.set, ok: false, checks: [check] },
      () =>
        `restore plan for backup set ${options.set}: REFUSED\nmanifest: ${error.message}\n  remedy: ${error.remedy}`,
    );
    process.exitCode = 3;
    return undefined;
  }
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

/** `lockstep restore plan | apply` (CLI.md; DESIGN §4.4). */
export function registerRestoreCommands(program: Command): void {
  const restore = program.command("restore").description("restore nodes from a backup set, safely");

  restore
    .command("plan <set>")
    .description("every preflight check with its verdict; exit 3 if any refuses")
    .option("--nodes <names>", "only these nodes (comma-separated); default: every node in the set")
    .option("--replace", "plan as for apply --replace (non-empty target databases are replaced)")
    .option("--force", "plan as for apply --force (order and fork refusals become warnings)")
    .action(async (set: string, opts: RestoreOptions, command: Command) => {
      const out = outputFor(command);
      const { config } = await loadCliConfig(command);
      prepareDataDir(config["data-dir"]);
      const plan = await planOrRefusal(
        {
          config,
          set,
          nodes: nodeNames(opts),
          replace: opts.replace,
          force: opts.force,
          logger: createLogger({ node: "restore", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" }),
        },
        out,
      );
      if (!plan) return;
      out.result(planJson(plan), () => planText(plan));
      if (!plan.ok) process.exitCode = 3;
    });

  restore
    .command("apply <set>")
    .description("restore the named nodes (default: all in the set); the nodes must be stopped")
    .option("--nodes <names>", "only these nodes (comma-separated); default: every node in the set")
    .option("--replace", "drop and replace non-empty target databases (once the restore is complete)")
    .option("--force", "override ONLY the order and fork checks (recorded in the recovery record)")
    .option("--yes", "do not ask for confirmation")
    .option("--jobs <n>", "parallel pg_restore jobs (custom and directory formats)", (v) =>
      Number.parseInt(v, 10),
    )
    .action(async (set: string, opts: RestoreOptions, command: Command) => {
      const out = outputFor(command);
      const { config } = await loadCliConfig(command);
      prepareDataDir(config["data-dir"]);
      const logger = createLogger({ node: "restore", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
      const plan = await planOrRefusal(
        { config, set, nodes: nodeNames(opts), replace: opts.replace, force: opts.force, logger },
        out,
      );
      if (!plan) return;
      if (!out.json) out.info(planText(plan));
      if (!plan.ok) {
        const refused = plan.checks.filter((c) => c.verdict === "refuse");
        const error = new LockstepError("RESTORE_REFUSED", {
          set,
          checks: refused.map((c) => `${c.node}:${c.check} (${c.code})`).join(", "),
        });
        if (out.json) out.result({ ...planJson(plan), error: error.toJSON() }, () => "");
        else out.info(`error ${error.code}: ${error.message}\n  remedy: ${error.remedy}`);
        process.exitCode = 3;
        return;
      }
      for (const f of plan.forced) out.info(`WARNING: --force overrides the refused check ${f}; recorded`);
      const todo = plan.nodes.filter((n) => !n.alreadyRestored);
      if (!opts.yes && todo.length > 0) {
        const replacing = todo.some((n) => n.state.exists && !n.state.empty);
        if (process.stdin.isTTY) {
          const names = todo.map((n) => n.backup.name).join(", ");
          if (
            !(await confirm(`Restore ${names} from ${set}${replacing ? ", replacing their databases" : ""}?`))
          )
            throw new LockstepError("INVALID_ARGUMENT", { details: "restore not confirmed" });
        } else if (replacing) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: "--replace drops databases: pass --yes to confirm without a terminal",
          });
        }
      }
      const restored = await applyRestore(plan, {
        engine: new PgDumpEngine(),
        sequencer: plan.sequencerLive ? sequencerRpc(config) : undefined,
        jobs: opts.jobs ?? config.backup.jobs,
        logger,
        onStep: (node, step) => out.info(`${node}: ${step}`),
      });
      out.result({ ...planJson(plan), restored }, () =>
        [
          ...restored.map((r) =>
            r.skipped
              ? `${r.name}: already restored from ${set}`
              : `${r.name}: restored from ${set}, incarnation ${r.incarnation}${r.forced.length ? ` (FORCED: ${r.forced.join(", ")})` : ""}`,
          ),
          "start the restored nodes (`lockstep node start NAME --detach` or `lockstep up --detach`): they replay from the sequencer",
        ].join("\n"),
      );
    });
}
