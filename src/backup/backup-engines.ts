import { join } from "node:path";
import {
  BACKUP_ENGINES,
  type BackupEngineName,
  type LockstepConfig,
  type NodeEntry,
} from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { Artifact, BackupEngine } from "./backup-engine.ts";
import { BackupKeys } from "./backup-keys.ts";
import type { BackupFormat } from "./manifest.ts";
import { PgDumpEngine } from "./pg-dump-engine.ts";
import { PgBackRestEngine } from "./pgbackrest/pgbackrest-engine.ts";
import type { PgBackRestBackupType } from "./pgbackrest/pgbackrest-info.ts";
import { RuntimeEngine } from "./runtime-engine.ts";

/** What `backup create` overrides for one run: `--engine`, and the pg-dump engine's `--format`, `--jobs`. */
export interface EngineOverrides {
  engine?: BackupEngineName;
  format?: BackupFormat;
  jobs?: number;
  /** The pgbackrest engine's backup type (`backup create --type`). */
  type?: PgBackRestBackupType;
}

export interface EngineChoice {
  engine: BackupEngineName;
  /** Which setting decided, for which node: for the error when this build lacks the engine. */
  chosenBy: string;
}

/** A node's engine: `--engine` for this run, else the node's `backup.engine`, else `backup.engine`. */
export function chooseEngine(
  config: LockstepConfig,
  entry: NodeEntry,
  override?: BackupEngineName,
): EngineChoice {
  if (override) return { engine: override, chosenBy: `--engine, for ${entry.name}` };
  const own = entry.config.backup?.engine;
  if (own) return { engine: own, chosenBy: `${entry.name}'s backup.engine` };
  return { engine: config.backup.engine, chosenBy: `backup.engine, for ${entry.name}` };
}

export type EngineFactory = (
  config: LockstepConfig,
  overrides: EngineOverrides,
  logger: Logger,
) => BackupEngine;

/**
 * The engines this build has, each made from the config (its options) and the run's overrides. A
 * config may name an engine that is not here: it is refused by name, never replaced by another.
 */
export type EngineFactories = Partial<Record<BackupEngineName, EngineFactory>>;

const FACTORIES: EngineFactories = {
  "pg-dump": (config, overrides, logger) =>
    new PgDumpEngine(
      {
        format: overrides.format ?? config.backup.format,
        jobs: overrides.jobs ?? config.backup.jobs,
        keys: new BackupKeys(config.backup.encryption),
        // Plaintext a tool needs on disk goes beside the data it came from, never into the repository.
        scratchDir: join(config["data-dir"], "backup-scratch"),
      },
      logger,
    ),
  pgbackrest: (config, overrides, logger) =>
    new PgBackRestEngine(config, { type: overrides.type ?? config.backup.pgbackrest.type }, logger),
};

/**
 * The registry callers get engines from: by node for `backup create`, by artifact (its manifest
 * record) for verify, drill and restore. Each engine is made once, wrapped in its RuntimeEngine.
 */
export class BackupEngines {
  private readonly made = new Map<BackupEngineName, RuntimeEngine>();

  constructor(
    private readonly config: LockstepConfig,
    private readonly logger: Logger,
    private readonly overrides: EngineOverrides = {},
    /** The engines this build has (a build, or a test, may lack some). */
    private readonly factories: EngineFactories = FACTORIES,
  ) {}

  /**
   * The engine that backs up this node; BACKUP_ENGINE_UNAVAILABLE when this build has none of that
   * name. With backup.encryption every engine encrypts: pg-dump each artifact (artifact-cipher.ts),
   * pgbackrest through pgBackRest's repository encryption (pgbackrest/pgbackrest-repo.ts).
   */
  forNode(entry: NodeEntry): RuntimeEngine {
    const choice = chooseEngine(this.config, entry, this.overrides.engine);
    // A key file that cannot be used refuses the run before a set is begun (BACKUP_KEY_FILE_INVALID).
    new BackupKeys(this.config.backup.encryption).current();
    return this.get(choice.engine, choice.chosenBy);
  }

  /** The engine that made an artifact. */
  forArtifact(artifact: Artifact): RuntimeEngine {
    return this.get(artifact.record.name, `the manifest of ${artifact.name}`);
  }

  private get(name: BackupEngineName, chosenBy: string): RuntimeEngine {
    let engine = this.made.get(name);
    if (!engine) {
      const factory = this.factories[name];
      if (!factory) {
        const available = BACKUP_ENGINES.filter((e) => this.factories[e]).join(", ");
        throw new LockstepError("BACKUP_ENGINE_UNAVAILABLE", { engine: name, chosenBy, available });
      }
      engine = new RuntimeEngine(factory(this.config, this.overrides, this.logger));
      this.made.set(name, engine);
    }
    return engine;
  }
}
