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
  /** Revoked when the lock goes; `underWay` are the transactions a revoker waits for (fenced-db.ts). */
  fence: { revoked: boolean; underWay: Set<Promise<unknown>> };
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
 * The database's own fence on a commit (docs/design.md "Single writer"): the process's lock flag can
 * lag the server (a lock session cut silently is noticed only when its check goes unanswered, up to
 * 2 s, while a passive process takes the freed lock at once). So each writing transaction, just
 * before it commits, share-locks node_state and checks that it still names this activation. A newer
 * activation's epoch bump (node-state.ts, FOR UPDATE of that row) either waits for this commit, which
 * then precedes the new epoch, or has committed, and this one rolls back. A row this transaction
 * changed itself (the epoch raised after a restore: settleWriterEpoch) is its own. Transactions that
 * wrote nothing (no xid) skip it.
 */
const STILL_THE_WRITER_SQL = `SELECT writer_activation = $1 OR xmin = (txid_current() % 4294967296)::text::xid AS current
   FROM node_state WHERE txid_current_if_assigned() IS NOT NULL FOR SHARE`;

/**
 * A kind instance with its own fenced view of the database (fenced-db.ts): once revoked, every
 * statement and commit it tries fails with NODE_PASSIVE, and the failures it reports are not the node's.
 */
export function createKindInstance(source: KindInstanceSource): KindInstance {
  const { entry, definition, config, dataDir, logger } = source;
  const fence = { revoked: false, underWay: new Set<Promise<unknown>>() };
  const db = fencedDb(
    source.db,
    () => {
      if (fence.revoked) throw new LockstepError("NODE_PASSIVE", { node: entry.name });
    },
    async (tx) => {
      const row = await tx.maybeOne<{ current: boolean }>(STILL_THE_WRITER_SQL, [
        source.identity().writerActivation,
      ]);
      if (row && !row.current) throw new LockstepError("NODE_PASSIVE", { node: entry.name });
    },
    fence.underWay,
  );
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
