import { LockstepError } from "../common/errors.ts";
import type { Queryable } from "../storage/db.ts";
import type {
  Artifact,
  BackupEngine,
  BackupRequest,
  BackupResult,
  RestoreOptions,
  RestoreTarget,
  RestoreTargetKind,
  VerifyTier,
} from "./backup-engine.ts";
import type { EngineRecord } from "./manifest.ts";

/**
 * What every engine gets without writing it (kysely's RuntimeDriver around a Driver): failures of a
 * backup reported as BACKUP_FAILED naming the node, a restore target of the wrong kind refused
 * before the engine sees it, and its verify tiers run in order. Callers hold this, never a bare
 * engine (backup-engines.ts hands them out).
 */
export class RuntimeEngine implements BackupEngine {
  constructor(private readonly engine: BackupEngine) {}

  get name(): EngineRecord["name"] {
    return this.engine.name;
  }

  get restoresInto(): RestoreTargetKind {
    return this.engine.restoresInto;
  }

  get verifyTiers(): readonly VerifyTier[] {
    return this.engine.verifyTiers;
  }

  async backup<T>(
    request: BackupRequest,
    atConsistentPoint: (q: Queryable) => Promise<T>,
  ): Promise<BackupResult<EngineRecord, T>> {
    try {
      return await this.engine.backup(request, atConsistentPoint);
    } catch (error) {
      // An engine's own failures (a tool missing, a refused connection) are the environment's, not
      // Lockstep's bugs: the operator gets BACKUP_FAILED with its remedy rather than INTERNAL_ERROR.
      if (error instanceof LockstepError) throw error;
      throw new LockstepError(
        "BACKUP_FAILED",
        { node: request.node, reason: `${this.name}: ${(error as Error).message}` },
        { cause: error },
      );
    }
  }

  async restore(artifact: Artifact, target: RestoreTarget, options?: RestoreOptions): Promise<void> {
    if (target.kind !== this.engine.restoresInto) {
      throw new LockstepError("INTERNAL_ERROR", {
        details: `the ${this.name} engine restores into a ${this.engine.restoresInto}, was given a ${target.kind} (${artifact.name})`,
      });
    }
    await this.engine.restore(artifact, target, options);
  }

  /** The engine's preflight (see BackupEngine.preflight); null when it has none. */
  async preflightCheck(artifact: Artifact): Promise<string | null> {
    return this.engine.preflight ? await this.engine.preflight(artifact) : null;
  }

  /**
   * The engine's own verify tiers, in order, each only after the one before passed: the lines they
   * report, or the first failure as `{ tier, problem }`.
   */
  async verify(artifact: Artifact): Promise<{
    lines: string[];
    failure: { tier: string; problem: string; error: unknown } | null;
  }> {
    const lines: string[] = [];
    for (const tier of this.engine.verifyTiers) {
      try {
        lines.push(await tier.check(artifact));
      } catch (error) {
        // The error too: a tier's own code (BACKUP_AUTHENTICATION_FAILED, a missing key) is the verdict's.
        return { lines, failure: { tier: tier.name, problem: (error as Error).message, error } };
      }
    }
    return { lines, failure: null };
  }
}
