import type { ErrorJson } from "../common/errors.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type {
  NodeIdentity,
  NodeKindContext,
  NodeKindDefinition,
  NodeKindRuntime,
} from "../common/node-kind.ts";
import type { Db } from "../storage/db.ts";
import { fencedDb } from "../storage/fenced-db.ts";

// One activation's node kind and its fence. Kept apart from NodeRuntime, which decides when an
// instance is created, activated, fenced and stopped; here is only how one is built and stopped.

/** One activation's node kind, with its own view of the database that is revoked when the lock goes. */
export interface KindInstance {
  kind: NodeKindRuntime;
  fence: { revoked: boolean };
  activated: boolean;
  stopping?: Promise<void>;
}

/** What an instance is made of: the node's own settings, and what its kind reaches in the runtime. */
export interface KindInstanceSource extends Pick<NodeKindContext, "entry" | "config" | "dataDir" | "logger"> {
  definition: NodeKindDefinition<Db>;
  /** The node's database, unfenced. */
  db: Db;
  identity: () => NodeIdentity;
  settleWriterEpoch: (db: Db, sequencerRecord: () => Promise<bigint>) => Promise<void>;
  /** A fatal error the kind reported while its fence still stood. */
  fail: (fence: KindInstance["fence"], error: ErrorJson) => void;
}

/**
 * A kind instance with its own fenced view of the database (fenced-db.ts): once revoked, every
 * statement and commit it tries fails with NODE_PASSIVE, and the failures it reports are not the node's.
 */
export function createKindInstance(source: KindInstanceSource): KindInstance {
  const { entry, definition, config, dataDir, logger } = source;
  const fence = { revoked: false };
  const db = fencedDb(source.db, () => {
    if (fence.revoked) throw new LockstepError("NODE_PASSIVE", { node: entry.name });
  });
  const kind = definition.create({
    entry,
    config,
    db,
    logger,
    dataDir,
    identity: source.identity,
    settleWriterEpoch: (sequencerRecord) => source.settleWriterEpoch(db, sequencerRecord),
    fail: (error) => {
      if (fence.revoked) logger.info({ code: error.code }, "a fenced activation stopped on its fence");
      else source.fail(fence, error);
    },
  });
  return { kind, fence, activated: false };
}

/** Stops the instance's kind, once however often asked; a failure to stop is logged. */
export function stopKindInstance(instance: KindInstance, logger: Logger): Promise<void> {
  instance.stopping ??= instance.kind
    .stop()
    .catch((error) => logger.warn({ err: error }, "stopping the node kind failed"));
  return instance.stopping;
}
