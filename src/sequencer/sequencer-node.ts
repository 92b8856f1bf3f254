import { LockstepError } from "../common/errors.ts";
import type { NodeKindDefinition } from "../common/node-kind.ts";
import { KeyAdmin, keyAdminRoutes, nodeKeyStore } from "../crypto/key-admin.ts";
import type { Db } from "../storage/db.ts";
import { Sequencer } from "./sequencer.ts";
import { sequencerMigrations } from "./sequencer-migrations.ts";
import { sequencerServiceRoutes } from "./sequencer-service.ts";
import { claimSynchronizerId } from "./synchronizer-identity.ts";

/**
 * The sequencer node kind: its schema, the SequencerService, and the Sequencer started on
 * activation (this process holds the single-writer lock, so its writer is the only one).
 */
export const sequencerNodeKind: NodeKindDefinition<Db> = {
  kind: "sequencer",
  migrations: sequencerMigrations,
  create(ctx) {
    let sequencer: Sequencer | undefined;
    let keyAdmin: KeyAdmin | undefined;
    const current = (): Sequencer => {
      if (!sequencer) throw new LockstepError("NODE_PASSIVE", { node: ctx.entry.name });
      return sequencer;
    };
    const keys = nodeKeyStore(ctx.db, ctx.entry);
    return {
      routes: (router) => {
        sequencerServiceRoutes(current)(router);
        keyAdminRoutes(() => {
          current();
          return keyAdmin as KeyAdmin;
        })(router);
      },
      async activate() {
        const { parameters, mediator, id, onboarding } = ctx.config.synchronizer;
        await claimSynchronizerId(ctx.db, ctx.entry.name, id);
        sequencer = await Sequencer.start({
          db: ctx.db,
          keys,
          logger: ctx.logger,
          name: ctx.entry.name,
          synchronizerName: id,
          parameters: {
            ledgerTimeRecordTimeToleranceMs: parameters["ledger-time-record-time-tolerance"],
            participantResponseTimeoutMs: parameters["participant-response-timeout"],
            maxDeduplicationDurationMs: parameters["max-deduplication-duration"],
          },
          mediatorName: mediator.name,
          onboarding,
          retentionMs: ctx.config.synchronizer.sequencer.retention,
          onFatal: (error) => ctx.fail(error.toJSON()),
        });
        keyAdmin = new KeyAdmin({
          node: ctx.entry.name,
          synchronizer: ctx.config.synchronizer.id,
          db: ctx.db,
          keys,
          topology: sequencer.ownTopology(),
          logger: ctx.logger,
        });
      },
      async status() {
        if (!sequencer) return { position: {} };
        const status = await sequencer.status();
        // The backup position of a sequencer (docs/design.md §4.1); bigints as strings.
        return {
          position: {
            head: status.head?.toString() ?? null,
            members: Object.fromEntries(
              status.members.map((m) => [m.member, m.lastDelivered?.toString() ?? null]),
            ),
            pruningLowerBound: status.pruningLowerBound?.toString() ?? null,
          },
        };
      },
      async stop() {
        await sequencer?.stop();
      },
    };
  },
};
