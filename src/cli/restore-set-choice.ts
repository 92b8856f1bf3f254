import { BackupRepository } from "../backup/backup-repository.ts";
import { findCheckpoint } from "../backup/checkpoint.ts";
import { pointInTimeSet } from "../backup/point-in-time.ts";
import type { LockstepConfig } from "../common/config-schema.ts";
import { configNodes } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";

export interface SetChoice {
  checkpoint?: string;
  toTime?: string;
  sequencerToTime?: string;
}

/**
 * What `restore plan|apply` restores: a set named on the command line, a checkpoint's set, or a
 * point in time written as a set (src/backup/point-in-time.ts); the same time and nodes reuse the
 * set written for them before (a plan, then its apply), since recovery to a past time is
 * deterministic. Exactly one of the three.
 */
export async function chooseSet(
  config: LockstepConfig,
  set: string | undefined,
  choice: SetChoice,
  nodes: string[] | undefined,
  logger: Logger,
  progress: (line: string) => void,
): Promise<string> {
  const given = [set, choice.checkpoint, choice.toTime].filter((v) => v !== undefined);
  if (given.length !== 1) {
    throw new LockstepError("INVALID_ARGUMENT", {
      details: "name what to restore: a backup set id, --checkpoint NAME, or --to-time T (exactly one)",
    });
  }
  if (choice.sequencerToTime && !choice.toTime) {
    throw new LockstepError("INVALID_ARGUMENT", { details: "--sequencer-to-time goes with --to-time" });
  }
  if (set) return set;
  if (choice.checkpoint) return (await findCheckpoint(config.backup.repository, choice.checkpoint)).set;
  const time = choice.toTime as string;
  const sequencerTime = choice.sequencerToTime ?? time;
  const all = configNodes(config);
  const unknown = (nodes ?? []).filter((n) => !all.some((e) => e.name === n));
  if (unknown.length > 0) {
    throw new LockstepError("NODE_UNKNOWN", {
      node: unknown.join(", "),
      known: all.map((e) => e.name).join(", "),
    });
  }
  const entries = nodes ? all.filter((e) => nodes.includes(e.name)) : all;
  const names = entries
    .map((e) => e.name)
    .sort()
    .join(",");
  const repository = new BackupRepository(config.backup.repository, logger);
  const earlier = (await repository.listSets()).find((s) => {
    const p = s.manifest.pointInTime;
    return (
      s.manifest.mode === "point-in-time" &&
      p !== undefined &&
      "time" in p &&
      p.time === time.trim() &&
      p.sequencerTime === sequencerTime.trim() &&
      s.manifest.nodes
        .map((n) => n.name)
        .sort()
        .join(",") === names
    );
  });
  if (earlier) {
    progress(`point in time ${time}: using set ${earlier.id}, written for it by an earlier plan`);
    return earlier.id;
  }
  const manifest = await pointInTimeSet({ config, time, sequencerTime, nodes: entries, logger, progress });
  return manifest.id;
}
