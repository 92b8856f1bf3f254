import type { LockstepConfig } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { drillSet } from "./backup-drill.ts";
import type { BackupEngines } from "./backup-engines.ts";
import type { BackupRepository, Verification } from "./backup-repository.ts";
import { checkFile, type FileCheck } from "./file-hash.ts";
import type { Manifest, ManifestFile } from "./manifest.ts";
import { plainAmongEncrypted, plainAmongEncryptedDetails } from "./restore-checks.ts";

export interface VerifyOptions {
  repository: BackupRepository;
  /** Each artifact is checked by the engine that made it (its manifest record). */
  engines: BackupEngines;
  setId: string;
  drill: boolean;
  /** Needed for --drill: the data dir's embedded cluster holds the scratch databases. */
  config?: LockstepConfig;
  jobs?: number;
  logger: Logger;
  progress: (line: string) => void;
}

export interface VerifyResult {
  set: string;
  ok: boolean;
  level: Verification["level"];
  problems: string[];
  /** Files checked (size + SHA-256), and artifacts that passed their engine's own tiers. */
  files: number;
  listed: number;
  drill: { node: string; checks: string[] }[] | null;
  durationMs: number;
}

function mismatch(check: Exclude<FileCheck, { ok: true }>, file: ManifestFile): string {
  if (check.problem === "missing") return "missing";
  if (check.problem === "size") return `size ${check.bytes}, manifest says ${file.bytes}`;
  return `SHA-256 ${check.sha256.slice(0, 16)}…, manifest says ${file.sha256.slice(0, 16)}…`;
}

/** Failures of a verify tier reported with their own code rather than as BACKUP_CORRUPTED. */
const OWN_VERDICTS: ReadonlySet<string> = new Set([
  "BACKUP_AUTHENTICATION_FAILED",
  "BACKUP_KEY_MISSING",
  "BACKUP_KEY_MISMATCH",
  "BACKUP_KEY_FILE_INVALID",
]);

/** Size and SHA-256 of every file of every node, each against the manifest; the problems found. */
export async function checkFiles(
  repository: BackupRepository,
  manifest: Manifest,
  progress: (line: string) => void,
): Promise<{ problems: string[]; files: number }> {
  const dir = repository.setDir(manifest.id);
  const problems: string[] = [];
  let files = 0;
  for (const node of manifest.nodes) {
    for (const file of node.files) {
      files++;
      const check = await checkFile(dir, file);
      if (!check.ok) problems.push(`${file.path}: ${mismatch(check, file)}`);
    }
    progress(`${node.name}: ${node.files.length} file(s) checked`);
  }
  return { problems, files };
}

/**
 * `lockstep backup verify SET [--drill]` (docs/design.md §4.6), tier by tier, each only once the one
 * before passed: the manifest's checksum (on read), every file's size and SHA-256, each engine's own
 * tiers on its artifacts (pg-dump: every chunk of an encrypted artifact authenticated, then
 * `pg_restore --list`), and with --drill a restore of each node into
 * a scratch database with ledger invariant checks. The result is recorded beside the manifest
 * (verification.json); a failure throws BACKUP_CORRUPTED / BACKUP_DRILL_FAILED naming what broke.
 */
export async function verifySet(options: VerifyOptions): Promise<VerifyResult> {
  const { repository, setId, progress } = options;
  const started = Date.now();
  const manifest = await repository.readManifest(setId);
  progress(`${setId}: manifest checksum ok`);
  // Backups are secrets: a repository written before they were kept owner-only is tightened now.
  const loose = await repository.loosePaths();
  if (loose.length > 0) {
    progress(
      `WARNING: ${loose.length} path(s) in ${repository.dir} were readable by others than their owner (e.g. ${loose[0]}): made owner-only`,
    );
    await repository.tighten();
  }
  const { problems, files } = await checkFiles(repository, manifest, progress);
  // A plain dump among encrypted ones: put there by a writer of the repository, manifest rewritten.
  for (const name of plainAmongEncrypted(manifest)) {
    const node = manifest.nodes.find((n) => n.name === name) as Manifest["nodes"][number];
    problems.push(`${node.artifact}: ${plainAmongEncryptedDetails(node)}`);
  }
  let listed = 0;
  // A tier's own verdict (an encrypted artifact that fails authentication, a key not configured).
  let verdict: LockstepError | undefined;
  if (problems.length === 0) {
    for (const node of manifest.nodes) {
      const artifact = repository.artifact(setId, node);
      const { lines, failure } = await options.engines.forArtifact(artifact).verify(artifact);
      for (const line of lines) progress(`${node.name}: ${line}`);
      if (failure) {
        problems.push(`${node.artifact}: ${failure.problem}`);
        if (!verdict && failure.error instanceof LockstepError && OWN_VERDICTS.has(failure.error.code))
          verdict = failure.error;
      } else listed++;
    }
  }
  let drill: VerifyResult["drill"] = null;
  let drillProblems: string[] = [];
  if (problems.length === 0 && options.drill) {
    if (!options.config) throw new LockstepError("INTERNAL_ERROR", { details: "drill needs the config" });
    const result = await drillSet({
      manifest,
      repository,
      engines: options.engines,
      config: options.config,
      jobs: options.jobs ?? 2,
      logger: options.logger,
      progress,
    });
    drill = result.nodes;
    drillProblems = result.problems;
  }
  // A key the config lacks says nothing of the set: nothing recorded (backup list keeps its last verdict).
  if (verdict && verdict.code !== "BACKUP_AUTHENTICATION_FAILED") throw verdict;
  const all = [...problems, ...drillProblems];
  const level = options.drill && problems.length === 0 ? "drill" : "checksums";
  const durationMs = Date.now() - started;
  await repository.writeVerification({
    set: setId,
    verifiedAt: new Date().toISOString(),
    level,
    ok: all.length === 0,
    problems: all,
    durationMs,
  });
  if (verdict) throw verdict;
  if (problems.length > 0) {
    throw new LockstepError("BACKUP_CORRUPTED", {
      set: setId,
      details: problems.join("; "),
      file: problems[0]?.split(":")[0],
    });
  }
  if (drillProblems.length > 0) {
    throw new LockstepError("BACKUP_DRILL_FAILED", { set: setId, details: drillProblems.join("; ") });
  }
  return { set: setId, ok: true, level, problems: [], files, listed, drill, durationMs };
}
