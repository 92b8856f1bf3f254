import { createInterface } from "node:readline/promises";
import type { Command } from "commander";
import { BackupEngines } from "../backup/backup-engines.ts";
import { applyRestore } from "../backup/restore-apply.ts";
import { FORCE_NAMES, type RestoreCheck } from "../backup/restore-checks.ts";
import { planRestore, type RestorePlan, sequencerRpc } from "../backup/restore-plan.ts";
import { dropKeptDatabases, type NodeKeptDatabase } from "../backup/restore-target.ts";
import { configNodes } from "../common/config-schema.ts";
import { isLockstepError, LockstepError } from "../common/errors.ts";
import { createLogger } from "../common/logging.ts";
import { loadCliConfig, outputFor, prepareDataDir } from "./cli-context.ts";
import { alreadyReported, table } from "./output.ts";
import { chooseSet, type SetChoice } from "./restore-set-choice.ts";

interface RestoreOptions extends SetChoice {
  nodes?: string;
  replace?: boolean;
  force?: string[];
  yes?: boolean;
  jobs?: number;
}

/** `--force a,b --force c` → [a, b, c]. */
function collectForce(value: string, previous: string[] = []): string[] {
  return [...previous, ...value.split(",").map((v) => v.trim())].filter(Boolean);
}

function nodeNames(opts: RestoreOptions): string[] | undefined {
  const names = opts.nodes
    ?.split(",")
    .map((n) => n.trim())
    .filter(Boolean);
  return names && names.length > 0 ? names : undefined;
}

/** docs/cli.md's `restore plan` JSON. */
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
      keptDatabases: n.state.kept,
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
  const kept = plan.nodes.flatMap((n) => n.state.kept.map((k) => ({ node: n.backup.name, ...k })));
  return [
    `restore plan for backup set ${plan.set}: ${plan.ok ? "OK" : "REFUSED"}`,
    table(["NODE", "CHECK", "VERDICT", "CODE", "DETAILS"], rows),
    ...(remedies.length ? ["", "remedies:", ...remedies.map((r) => `  ${r}`)] : []),
    ...(kept.length ? ["", keptText(kept)] : []),
  ].join("\n");
}

/**
 * planRestore, with a manifest that does not verify reported as the refused `manifest` check
 * (RESTORE_REFUSED, exit 3) rather than a failure: it is the first preflight check of docs/design.md §4.4.
 */
async function planOrRefusal(
  options: Parameters<typeof planRestore>[0],
  out: ReturnType<typeof outputFor>,
): Promise<RestorePlan> {
  try {
    return await planRestore(options);
  } catch (error) {
    // A manifest that does not verify, contradicts itself, or is of a newer format (backup.md).
    if (!isLockstepError(error, "BACKUP_CORRUPTED") && !isLockstepError(error, "BACKUP_VERSION_UNSUPPORTED"))
      throw error;
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
    throw alreadyReported(refusal(options.set, [check], error));
  }
}

/** RESTORE_REFUSED naming the refused checks (safety: exit 3). */
function refusal(
  set: string,
  checks: readonly { node: string; check: string; verdict: string; code: string | null }[],
  cause?: unknown,
): LockstepError {
  const refused = checks.filter((c) => c.verdict === "refuse");
  return new LockstepError(
    "RESTORE_REFUSED",
    { set, checks: refused.map((c) => `${c.node}:${c.check} (${c.code})`).join(", ") },
    { cause },
  );
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

/** The kept databases of earlier restores (the way back), for plan, drop-kept and status. */
export function keptText(kept: readonly NodeKeptDatabase[]): string {
  const rows = kept.map((k) => [
    k.node,
    k.database,
    k.backupSet ?? "(not recorded)",
    k.restoredAt ?? "-",
    k.resubscribed ? `yes (${k.resubscribedAt})` : "no",
  ]);
  return [
    "kept databases of earlier restores (`lockstep restore drop-kept` drops them once resubscribed):",
    table(["NODE", "KEPT DATABASE", "REPLACED BY SET", "RESTORED AT", "RESUBSCRIBED SINCE"], rows),
  ].join("\n");
}

/** `lockstep restore plan | apply | drop-kept` (docs/cli.md; docs/design.md §4.4). */
export function registerRestoreCommands(program: Command): void {
  const restore = program.command("restore").description("restore nodes from a backup set, safely");

  restore
    .command("plan [set]")
    .description(
      "every preflight check with its verdict; exit 3 if any refuses (a set, --checkpoint NAME or --to-time T)",
    )
    .option("--nodes <names>", "only these nodes (comma-separated); default: every node in the set")
    .option("--replace", "plan as for apply --replace (non-empty target databases are replaced)")
    .option("--checkpoint <name>", "restore to a checkpoint (`lockstep checkpoint list`) instead of a set")
    .option(
      "--to-time <time>",
      "restore participants and mediators to this time (with zone, e.g. 2026-12-03T07:30:00Z), replaying pgBackRest backups and WAL",
    )
    .option("--sequencer-to-time <time>", "with --to-time: the sequencer's time (default: the same)")
    .option(
      "--force <checks>",
      "plan as for apply --force CHECKS (those refusals of the named nodes become warnings)",
      collectForce,
    )
    .action(async (given: string | undefined, opts: RestoreOptions, command: Command) => {
      const out = outputFor(command);
      const { config } = await loadCliConfig(command);
      prepareDataDir(config["data-dir"]);
      const logger = createLogger({ node: "restore", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
      const set = await chooseSet(config, given, opts, nodeNames(opts), logger, (line) => out.info(line));
      const plan = await planOrRefusal(
        { config, set, nodes: nodeNames(opts), replace: opts.replace, force: opts.force, logger },
        out,
      );
      out.result(planJson(plan), () => planText(plan));
      if (!plan.ok) throw alreadyReported(refusal(set, plan.checks));
    });

  restore
    .command("apply [set]")
    .description(
      "restore the named nodes (default: all in the set) from a set, --checkpoint NAME or --to-time T; the nodes must be stopped",
    )
    .option("--nodes <names>", "only these nodes (comma-separated); default: every node in the set")
    .option(
      "--replace",
      "replace non-empty target databases once the restore is complete (the replaced one is kept, renamed, until restore drop-kept)",
    )
    .option("--checkpoint <name>", "restore to a checkpoint (`lockstep checkpoint list`) instead of a set")
    .option(
      "--to-time <time>",
      "restore participants and mediators to this time (with zone, e.g. 2026-12-03T07:30:00Z), replaying pgBackRest backups and WAL",
    )
    .option("--sequencer-to-time <time>", "with --to-time: the sequencer's time (default: the same)")
    .option(
      "--force <checks>",
      `override the named refused checks of the nodes being restored, e.g. \`--force sequencer-fork\` or \`--force participant1:order\` (${FORCE_NAMES.join(", ")}; sequencer-events and keys only when they could not run); each override is listed and recorded in the node's recovery record`,
      collectForce,
    )
    .option("--yes", "do not ask for confirmation")
    .option("--jobs <n>", "parallel pg_restore jobs (custom and directory formats)", (v) =>
      Number.parseInt(v, 10),
    )
    .action(async (given: string | undefined, opts: RestoreOptions, command: Command) => {
      const out = outputFor(command);
      const { config } = await loadCliConfig(command);
      prepareDataDir(config["data-dir"]);
      const logger = createLogger({ node: "restore", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
      const set = await chooseSet(config, given, opts, nodeNames(opts), logger, (line) => out.info(line));
      const plan = await planOrRefusal(
        { config, set, nodes: nodeNames(opts), replace: opts.replace, force: opts.force, logger },
        out,
      );
      if (!out.json) out.info(planText(plan));
      if (!plan.ok) {
        const error = refusal(set, plan.checks);
        if (out.json) out.result({ ...planJson(plan), error: error.toJSON() }, () => "");
        else out.info(`error ${error.code}: ${error.message}\n  remedy: ${error.remedy}`);
        throw alreadyReported(error);
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
            details: "--replace replaces databases: pass --yes to confirm without a terminal",
          });
        }
      }
      const restored = await applyRestore(plan, {
        engines: new BackupEngines(config, logger),
        config,
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

  restore
    .command("drop-kept")
    .description(
      "drop the databases earlier restores replaced and kept, once each node passed its resubscription check",
    )
    .option("--nodes <names>", "only these nodes (comma-separated); default: every node of the config")
    .option(
      "--force",
      "also drop kept databases of nodes that have not passed the check yet (no way back then)",
    )
    .action(async (opts: { nodes?: string; force?: boolean }, command: Command) => {
      const out = outputFor(command);
      const { config } = await loadCliConfig(command);
      prepareDataDir(config["data-dir"]);
      const logger = createLogger({ node: "restore", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
      const names = nodeNames({ nodes: opts.nodes });
      const all = configNodes(config);
      const unknown = names?.filter((n) => !all.some((e) => e.name === n)) ?? [];
      if (unknown.length > 0) {
        throw new LockstepError("NODE_UNKNOWN", {
          node: unknown.join(", "),
          known: all.map((e) => e.name).join(", "),
        });
      }
      const entries = names ? all.filter((e) => names.includes(e.name)) : all;
      const dropped = await dropKeptDatabases(entries, config["data-dir"], Boolean(opts.force), logger);
      out.result({ dropped }, () =>
        dropped.length === 0
          ? "no kept databases"
          : dropped
              .map((d) => `${d.node}: dropped ${d.database}${d.resubscribed ? "" : " (FORCED)"}`)
              .join("\n"),
      );
    });
}
