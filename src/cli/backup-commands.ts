import type { Command } from "commander";
import { createBackup } from "../backup/backup-create.ts";
import { BackupEngines, type EngineOverrides } from "../backup/backup-engines.ts";
import {
  holdState,
  liveSequencerStatus,
  sequencerRpc,
  withinRetentionUntil,
} from "../backup/backup-holds.ts";
import { createBackupKeyFile } from "../backup/backup-keys.ts";
import { BackupRepository, type SetSummary } from "../backup/backup-repository.ts";
import { expireSets } from "../backup/backup-retention.ts";
import { verifySet } from "../backup/backup-verify.ts";
import { BACKUP_FORMATS, type BackupFormat, type Manifest } from "../backup/manifest.ts";
import { expiryContexts } from "../backup/pgbackrest/expiry-contexts.ts";
import { quiesceNetwork } from "../backup/quiesce.ts";
import {
  BACKUP_ENGINES,
  type BackupEngineName,
  configNodes,
  type LockstepConfig,
  type NodeEntry,
} from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { createLogger } from "../common/logging.ts";
import { microsToIso } from "../common/time.ts";
import type { GetSequencerStatusResponse } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { registerPgBackRestSetupCommands } from "./backup-setup-commands.ts";
import { loadCliConfig, outputFor, selectNodes } from "./cli-context.ts";
import { table } from "./output.ts";

function cliLogger() {
  return createLogger({ node: "backup", level: process.env.LOCKSTEP_LOG_LEVEL ?? "warn" });
}

function mib(bytes: string | bigint): string {
  return `${(Number(bytes) / 1048576).toFixed(1)} MiB`;
}

/**
 * `backup create` of the given nodes as one set (also the backup step of `keys rotate` and
 * `keys rotate-wrapper`): the set is registered in each node's database once complete.
 */
export function runBackupCreate(
  config: LockstepConfig,
  nodes: NodeEntry[],
  progress: (line: string) => void,
  options: EngineOverrides & { quiesce?: boolean } = {},
): Promise<Manifest> {
  const logger = cliLogger();
  const { quiesce, ...overrides } = options;
  return createBackup({
    config,
    nodes,
    repository: new BackupRepository(config.backup.repository, logger),
    engines: new BackupEngines(config, logger, overrides),
    logger,
    progress,
    ...(quiesce ? { quiesce: (n) => quiesceNetwork(config, n, progress) } : {}),
  });
}

/** One set in docs/cli.md's `backup list --json` shape (plus orderCheck, unsafe and the live sequencer's view). */
export function listEntry(set: SetSummary, live?: GetSequencerStatusResponse) {
  const v = set.verification;
  const until = withinRetentionUntil(set.manifest, live);
  const stranded = live?.stranded.find((x) => x.setId === set.id);
  return {
    id: set.id,
    createdAt: set.manifest.startedAt,
    nodes: set.manifest.nodes.map((n) => n.name),
    bytes: set.manifest.bytes,
    safe: set.manifest.safe,
    unsafe: set.manifest.unsafe.map((u) => u.node),
    orderCheck: set.manifest.orderCheck,
    mode: set.manifest.mode,
    verified: v ? { at: v.verifiedAt, level: v.level, ok: v.ok } : null,
    /** held | missing | stranded | not-needed | unknown (the sequencer did not answer). */
    hold: holdState(set.manifest, live),
    stranded: stranded
      ? { prunedBefore: stranded.prunedBefore.toString(), at: microsToIso(stranded.strandedAt) }
      : null,
    /** Sequencer time until which the configured retention keeps the set's oldest member position. */
    withinRetentionUntil: until === null ? null : microsToIso(until),
  };
}

function safety(s: ReturnType<typeof listEntry>): string {
  if (!s.safe) return `UNSAFE: fork (${s.unsafe.join(",")})`;
  if (s.orderCheck === "unchecked") return "unchecked";
  if (s.orderCheck === "checked-against-older-set") return "safe (v1: timestamps only)";
  return "safe";
}

function restorable(s: ReturnType<typeof listEntry>): string {
  if (s.hold === "stranded") return `STRANDED (forced prune below ${s.stranded?.prunedBefore})`;
  if (s.hold === "unknown") return "? (sequencer down)";
  if (s.hold === "not-needed") return "-";
  const until = s.withinRetentionUntil ? `, retention until ${s.withinRetentionUntil}` : "";
  return `${s.hold === "held" ? "held" : "NO HOLD"}${until}`;
}

/** `lockstep backup create | list | verify | key create | expire` (docs/cli.md; docs/design.md §4.1–4.3, §4.6). */
export function registerBackupCommands(program: Command): void {
  const backup = program.command("backup").description("take, list, verify and expire backup sets");
  registerPgBackRestSetupCommands(backup);

  backup
    .command("create")
    .description("one backup set, in the safe order; prints the set id and each node's position")
    .option("--nodes <names>", "back up only these nodes (comma-separated) as their own set")
    .option(
      "--quiesce",
      "pause the sequencer's intake, wait until all are clean at the head, dump all in parallel",
    )
    .option(
      "--engine <engine>",
      `backup engine for every node of this run: ${BACKUP_ENGINES.join(" | ")} (default: each node's backup.engine, else backup.engine)`,
    )
    .option("--format <format>", `pg_dump format: ${BACKUP_FORMATS.join(" | ")} (default: backup.format)`)
    .option("--jobs <n>", "parallel jobs for the directory format (default: backup.jobs)")
    .option(
      "--type <type>",
      "pgbackrest engine: full | diff | incr (default: backup.pgbackrest.type; incr takes a full when there is none)",
    )
    .action(
      async (
        opts: {
          nodes?: string;
          quiesce?: boolean;
          engine?: string;
          format?: string;
          jobs?: string;
          type?: string;
        },
        command: Command,
      ) => {
        const out = outputFor(command);
        const loaded = await loadCliConfig(command);
        const config = loaded.config;
        const engine = opts.engine as BackupEngineName | undefined;
        if (engine !== undefined && !BACKUP_ENGINES.includes(engine)) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: `--engine ${opts.engine}: use ${BACKUP_ENGINES.join(", ")}`,
          });
        }
        const format = (opts.format ?? config.backup.format) as BackupFormat;
        if (!BACKUP_FORMATS.includes(format)) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: `--format ${opts.format}: use ${BACKUP_FORMATS.join(", ")}`,
          });
        }
        const jobs = opts.jobs === undefined ? config.backup.jobs : Number(opts.jobs);
        if (!Number.isInteger(jobs) || jobs < 1) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: `--jobs ${opts.jobs} is not a positive integer`,
          });
        }
        const type = opts.type as EngineOverrides["type"];
        if (type !== undefined && !["full", "diff", "incr"].includes(type)) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: `--type ${opts.type}: use full, diff or incr`,
          });
        }
        const manifest = await runBackupCreate(
          config,
          selectNodes(loaded, opts.nodes),
          (line) => out.info(line),
          {
            ...(engine ? { engine } : {}),
            format,
            jobs,
            ...(type ? { type } : {}),
            quiesce: opts.quiesce === true,
          },
        );
        const result = {
          set: manifest.id,
          safe: manifest.safe,
          unsafe: manifest.unsafe,
          orderCheck: manifest.orderCheck,
          checkedAgainst: manifest.checkedAgainst,
          bytes: manifest.bytes,
          nodes: manifest.nodes.map((n) => ({
            name: n.name,
            kind: n.kind,
            position: n.position,
            bytes: n.bytes,
          })),
        };
        out.result(result, () =>
          [
            `backup set ${manifest.id}: ${manifest.safe ? "safe" : "UNSAFE: fork"} (order ${manifest.orderCheck}${manifest.checkedAgainst ? ` against ${manifest.checkedAgainst}` : ""})`,
            table(
              ["NODE", "KIND", "SIZE", "POSITION"],
              manifest.nodes.map((n) => [n.name, n.kind, mib(n.bytes), JSON.stringify(n.position)]),
            ),
            ...manifest.unsafe.map(
              (u) =>
                `unsafe: ${u.node}'s history is not a prefix of ${u.sequencerSet ? `the sequencer's in this set` : "the live sequencer's"}: its last stored event at ${u.lastStored} has chain hash ${u.storedHash?.slice(0, 16) ?? "?"}…, the sequencer ${u.sequencerHash ? `has ${u.sequencerHash.slice(0, 16)}…` : "has no event for it there"}; remedy: if the synchronizer was restored behind this node, restore the node from an older set or roll out a new synchronizer; otherwise back up the sequencer after the participants and mediators (plain \`lockstep backup create\`)`,
            ),
          ].join("\n"),
        );
        // An unsafe set is written and listed as such (exit 0: the command did what was asked);
        // `safe: false` in the JSON and restore's refusal are where it bites.
      },
    );

  backup
    .command("list")
    .description("sets, newest first: id, time, nodes, size, safe/unsafe, verified")
    .action(async (_opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const repository = new BackupRepository(loaded.config.backup.repository, cliLogger());
      const live = await liveSequencerStatus(sequencerRpc(loaded.config));
      if (!live) out.info("the sequencer does not answer: retention holds are not shown");
      const sets = (await repository.listSets()).map((s) => listEntry(s, live));
      for (const bad of await repository.invalidSets()) out.info(`ignored ${bad.id}: ${bad.reason}`);
      out.result({ sets }, () =>
        sets.length === 0
          ? `no backup sets in ${repository.dir}`
          : table(
              ["ID", "CREATED", "NODES", "SIZE", "SAFE", "RESTORABLE AGAINST LIVE SEQUENCER", "VERIFIED"],
              sets.map((s) => [
                s.id,
                s.createdAt,
                s.nodes.join(","),
                mib(s.bytes),
                safety(s),
                restorable(s),
                s.verified
                  ? `${s.verified.ok ? "ok" : "FAILED"} (${s.verified.level}, ${s.verified.at})`
                  : "-",
              ]),
            ),
      );
    });

  backup
    .command("verify")
    .description(
      "checksums and archive listing; with --drill, restore into scratch databases and check ledger invariants",
    )
    .argument("<set>", "the backup set id")
    .option(
      "--drill",
      "restore each node into a scratch database of the embedded cluster and check invariants",
    )
    .action(async (setId: string, opts: { drill?: boolean }, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const logger = cliLogger();
      const result = await verifySet({
        repository: new BackupRepository(loaded.config.backup.repository, logger),
        engines: new BackupEngines(loaded.config, logger),
        setId,
        drill: Boolean(opts.drill),
        config: loaded.config,
        jobs: loaded.config.backup.jobs,
        logger,
        progress: (line) => out.info(line),
      });
      out.result(result, () =>
        [
          `backup set ${setId}: ok (${result.level}; ${result.files} files, ${result.listed} archives listed, ${(result.durationMs / 1000).toFixed(1)}s)`,
          ...(result.drill ?? []).map((d) => `  ${d.node}: ${d.checks.join("; ")}`),
        ].join("\n"),
      );
    });

  const key = backup.command("key").description("backup encryption keys (backup.encryption)");
  key
    .command("create")
    .description(
      "write a new backup key (32 random bytes as 64 hex digits) to FILE, owner-only; never overwrites a file",
    )
    .argument(
      "<file>",
      "where to write the key (keep a copy apart from the backups: without it no set opens)",
    )
    .action((file: string, _opts: unknown, command: Command) => {
      const out = outputFor(command);
      const created = createBackupKeyFile(file);
      out.result({ path: created.source, fingerprint: created.fingerprint }, () =>
        [
          `backup key written to ${created.source} (fingerprint ${created.fingerprint})`,
          "set backup.encryption.key-file to it; keep a copy somewhere else than the backups",
        ].join("\n"),
      );
    });

  backup
    .command("expire")
    .description(
      "retention, with the reason for each kept or deleted set; never deletes the newest complete, safe, verified set",
    )
    .requiredOption("--keep <n>", "keep the newest N sets")
    .option("--dry-run", "only print what would be kept and deleted, and why")
    .action(async (opts: { keep: string; dryRun?: boolean }, command: Command) => {
      const out = outputFor(command);
      const keep = Number(opts.keep);
      if (!Number.isInteger(keep) || keep < 0) {
        throw new LockstepError("INVALID_ARGUMENT", { details: `--keep ${opts.keep} is not a count` });
      }
      const loaded = await loadCliConfig(command);
      const config = loaded.config;
      const logger = cliLogger();
      const repository = new BackupRepository(config.backup.repository, logger);
      const dryRun = Boolean(opts.dryRun);
      const { decisions, deleted, released, held, pgbackrest } = await expireSets(
        repository,
        keep,
        dryRun,
        configNodes(config).map((n) => n.name),
        (line) => out.info(line),
        sequencerRpc(config),
        // Every pgBackRest repository: the plain one and one per backup key (pgbackrest-repo.ts).
        expiryContexts(config, logger),
      );
      const result = {
        keep,
        dryRun,
        sets: decisions,
        deleted,
        releasedHolds: released,
        setHolds: held,
        pgbackrest: pgbackrest.map((p) => ({
          stanza: p.stanza,
          ...(p.repository ? { repository: p.repository } : {}),
          expired: p.expired,
          kept: p.kept.map((k) => ({ label: k.label, neededBy: k.neededBy, reason: k.reason })),
          missing: p.missing,
          ...(p.error ? { error: p.error } : {}),
        })),
      };
      out.result(result, () => {
        const sets = table(
          ["ID", "ACTION", "REASON"],
          decisions.map((d) => [d.id, d.action === "delete" && dryRun ? "would delete" : d.action, d.reason]),
        );
        const rows = pgbackrest.flatMap((p) => [
          ...p.kept.map((k) => [p.stanza, k.label, "keep", k.reason]),
          ...p.expired.map((e) => [p.stanza, e.label, dryRun ? "would expire" : "expired", e.reason]),
          ...p.missing.map((m) => [p.stanza, m.label, "MISSING", `needed by ${m.neededBy.join(", ")}`]),
          ...(p.error ? [[p.stanza, "-", "LEFT", p.error]] : []),
        ]);
        // pg_dump-only repositories: the sets' table alone, as before.
        if (rows.length === 0) return sets;
        return `${sets}\n\n${table(["STANZA", "PGBACKREST BACKUP", "ACTION", "REASON"], rows)}`;
      });
    });
}
