import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { LockstepError } from "../common/errors.ts";
import { eventToProto } from "../common/sequenced-event.ts";
import { signedTopologyToParts } from "../crypto/topology.ts";
import {
  MemberStatusSchema,
  SequencerService,
  StoredTopologyTransactionSchema,
  SubscribeResponseSchema,
} from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import type { Sequencer } from "./sequencer.ts";

/**
 * lockstep.sequencer.v1.SequencerService over a Sequencer: proto in, proto out, nothing else.
 * `current` gives the active sequencer (the runtime refuses calls before activation anyway).
 */
export function sequencerServiceRoutes(current: () => Sequencer): (router: ConnectRouter) => void {
  return (router) => {
    router.service(SequencerService, {
      async send(request) {
        await current().send(request);
        return {};
      },
      async *subscribe(request, context) {
        const fromTimestamp = request.fromTimestamp;
        for await (const events of current().subscribe({ ...request, fromTimestamp }, context.signal)) {
          yield create(SubscribeResponseSchema, { events: events.map(eventToProto) });
        }
      },
      async acknowledge(request) {
        await current().acknowledge(request);
        return {};
      },
      async registerMember(request) {
        if (!request.memberKeys) {
          throw new LockstepError("INVALID_TOPOLOGY_MAPPING", { reason: "member_keys is missing" });
        }
        return current().registerMember(request.memberKeys);
      },
      async submitTopology(request) {
        if (request.transactions.length === 0) {
          throw new LockstepError("INVALID_TOPOLOGY_MAPPING", { reason: "no transactions" });
        }
        return { effectiveAt: await current().submitTopology(request.transactions) };
      },
      getTopology(request) {
        const sequencer = current();
        return {
          transactions: sequencer.topology(request.asOf).map((entry) =>
            create(StoredTopologyTransactionSchema, {
              transaction: signedTopologyToParts(entry.signed),
              effectiveAt: entry.effectiveAt,
            }),
          ),
          synchronizerNamespace: sequencer.synchronizerNamespace,
          synchronizerId: sequencer.synchronizerId,
          sequencerId: sequencer.sequencerId,
        };
      },
      async prune(request) {
        if (request.beforeTimestamp <= 0n) {
          throw new LockstepError("INVALID_ARGUMENT", { details: "before_timestamp must be positive" });
        }
        const result = await current().prune(request.beforeTimestamp);
        return { pruningLowerBound: result.pruningLowerBound, removedEvents: BigInt(result.removedEvents) };
      },
      async getSequencerStatus() {
        const status = await current().status();
        return {
          sequencerId: status.sequencerId,
          synchronizerId: status.synchronizerId,
          headTimestamp: status.head ?? undefined,
          pruningLowerBound: status.pruningLowerBound ?? undefined,
          safePruningTimestamp: status.safePruningTimestamp ?? undefined,
          members: status.members.map((m) =>
            create(MemberStatusSchema, {
              member: m.member,
              registeredAt: m.registeredAt,
              lastDelivered: m.lastDelivered ?? undefined,
              acknowledged: m.acknowledged ?? undefined,
              writerEpoch: m.writerEpoch,
            }),
          ),
        };
      },
    });
  };
}
