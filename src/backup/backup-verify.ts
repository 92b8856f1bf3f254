import { existsSync } from "node:fs";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import type { LockstepConfig } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { drillSet } from "./backup-drill.ts";
import type { BackupEngine } from "./backup-engine.ts";
import type { BackupRepository, Verification } from "./backup-repository.ts";
import type { Manifest } from "./manifest.ts";
import { hashFile } from "./pg-dump-engine.ts";

export interface VerifyOptions {
  repository: BackupRepository;
  engine: BackupEngine;
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
  /** Files checked (size + SHA-256) and archives listed. */
  files: number;
  listed: number;
  drill: { node: string; checks: string[] }[] | null;
  durationMs: number;
}

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
      const path = join(dir, file.path);
      if (!existsSync(path)) {
        problems.push(`${file.path}: missing`);
        continue;
      }
      const size = BigInt((await stat(path)).size);
      if (size !== BigInt(file.bytes)) {
        problems.push(`${file.path}: size ${size}, manifest says ${file.bytes}`);
        continue;
      }
      const { sha256 } = await hashFile(path);
      if (sha256 !== file.sha256) {
        problems.push(
          `${file.path}: SHA-256 ${sha256.slice(0, 16)}…, manifest says ${file.sha256.slice(0, 16)}…`,
        );
      }
    }
    progress(`${node.name}: ${node.files.length} file(s) checked`);
  }
  return { problems, files };
}

/**
 * `lockstep backup verify SET [--drill]` (docs/design.md §4.6): the manifest's checksum (on read), every
 * file's size and SHA-256, `pg_restore --list` of every artifact, and with --drill a restore of
 * each node into a scratch database with ledger invariant checks. The result is recorded beside
 * the manifest (verification.json); a failure throws BACKUP_CORRUPTED / BACKUP_DRILL_FAILED naming what broke.
 */
export async function verifySet(options: VerifyOptions): Promise<VerifyResult> {
  const { repository, setId, progress } = options;
  const started = Date.now();
  const manifest = await repository.readManifest(setId);
  progress(`${setId}: manifest checksum ok`);
  const { problems, files } = await checkFiles(repository, manifest, progress);
  let listed = 0;
  if (problems.length === 0) {
    for (const node of manifest.nodes) {
      try {
        const toc = await options.engine.list({
          path: repository.artifactPath(setId, node),
          format: node.format,
        });
        listed++;
        progress(`${node.name}: archive lists ${toc.length} entries`);
      } catch (error) {
        problems.push(`${node.artifact}: not a readable archive: ${(error as Error).message}`);
      }
    }
  }
  let drill: VerifyResult["drill"] = null;
  let drillProblems: string[] = [];
  if (problems.length === 0 && options.drill) {
    if (!options.config) throw new LockstepError("INTERNAL_ERROR", { details: "drill needs the config" });
    const result = await drillSet({
      manifest,
      repository,
      engine: options.engine,
      config: options.config,
      jobs: options.jobs ?? 2,
      logger: options.logger,
      progress,
    });
    drill = result.nodes;
    drillProblems = result.problems;
  }
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
