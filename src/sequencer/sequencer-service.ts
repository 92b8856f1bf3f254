import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { LockstepError } from "../common/errors.ts";
import { eventToProto } from "../common/sequenced-event.ts";
import { signedTopologyToParts } from "../crypto/topology.ts";
import type { ErrorDetailSchema } from "../gen/lockstep/common/v1/error_pb.ts";
import {
  MemberAdmissionSchema,
  MemberStatusSchema,
  RetentionHoldSchema,
  SequencerService,
  StoredTopologyTransactionSchema,
  StrandedSetSchema,
} from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { adminCaller } from "../node/admin-token.ts";
import type { Admission } from "./member-admissions.ts";
import type { StrandedSet } from "./retention-holds.ts";
import type { Sequencer } from "./sequencer.ts";
import { isBinaryRequest, subscribeResponse } from "./subscribe-response.ts";

/** Requests per SendBatch at most (the client's coalescer sends fewer). */
export const MAX_SEND_BATCH = 1000;

/** A refused submission of a SendBatch, as the ErrorDetail its own Send would have carried. */
function errorDetail(error: LockstepError): MessageInitShape<typeof ErrorDetailSchema> {
  return {
    code: error.code,
    message: error.message,
    retryable: error.retryable,
    remedy: error.remedy,
    metadata: error.metadata,
  };
}

const strandedProto = (s: StrandedSet) => create(StrandedSetSchema, s);

function admissionProto(a: Admission, sequencer: Sequencer) {
  return create(MemberAdmissionSchema, {
    member: a.member,
    state: a.state,
    changedAt: a.at,
    changedBy: a.by,
    registeredAt: sequencer.registeredAt(a.member),
  });
}

/**
 * lockstep.sequencer.v1.SequencerService over a Sequencer: proto in, proto out, nothing else.
 * `current` gives the active sequencer (the runtime refuses calls before activation anyway).
 */
export function sequencerServiceRoutes(current: () => Sequencer): (router: ConnectRouter) => void {
  return (router) => {
    router.service(SequencerService, {
      async send(request) {
        const sequencer = current();
        await sequencer.intake.admit(() => sequencer.send(request));
        return {};
      },
      async sendBatch(request) {
        const signed = request.signed;
        if (signed && request.requests.length > 0) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: "SendBatch takes either requests or signed submissions, not both",
          });
        }
        const count = signed ? signed.submissions.length : request.requests.length;
        if (count > MAX_SEND_BATCH) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: `SendBatch takes at most ${MAX_SEND_BATCH} submissions, got ${count}`,
          });
        }
        const sequencer = current();
        const outcomes = await sequencer.intake.admit(() =>
          signed ? sequencer.sendSigned(signed) : sequencer.sendBatch(request.requests),
        );
        return {
          results: outcomes.map((outcome) =>
            outcome instanceof LockstepError ? { error: errorDetail(outcome) } : {},
          ),
        };
      },
      async *subscribe(request, context) {
        const fromTimestamp = request.fromTimestamp;
        const binary = isBinaryRequest(context.requestHeader.get("content-type"));
        for await (const events of current().subscribe({ ...request, fromTimestamp }, context.signal)) {
          yield subscribeResponse(events, binary);
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
        const sequencer = current();
        const memberKeys = request.memberKeys;
        return sequencer.intake.admit(() => sequencer.registerMember(memberKeys));
      },
      async submitTopology(request) {
        if (request.transactions.length === 0) {
          throw new LockstepError("INVALID_TOPOLOGY_MAPPING", { reason: "no transactions" });
        }
        const sequencer = current();
        return {
          effectiveAt: await sequencer.intake.admit(() => sequencer.submitTopology(request.transactions)),
        };
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
        const result = await current().prune(request.beforeTimestamp, request.force);
        return {
          pruningLowerBound: result.pruningLowerBound,
          removedEvents: BigInt(result.removedEvents),
          stranded: result.stranded.map(strandedProto),
        };
      },
      async setRetentionHolds(request) {
        if (!request.setId) throw new LockstepError("INVALID_ARGUMENT", { details: "set_id is missing" });
        await current().setRetentionHolds(request.setId, request.holds);
        return {};
      },
      async releaseRetentionHolds(request) {
        return { released: BigInt(await current().releaseRetentionHolds(request.setIds)) };
      },
      async lowerAcknowledgement(request) {
        const acknowledged = await current().lowerAcknowledgement(request.member, request.timestamp ?? null);
        return { acknowledged: acknowledged ?? undefined };
      },
      async getMemberEvent(request, context) {
        const info = await current().memberEvent(request.member, request.timestamp);
        // The event is the member's confidential traffic: the admin's only (admin-credentials.ts).
        const admin = context.values.get(adminCaller);
        return {
          registeredAt: info.registeredAt ?? undefined,
          pruningLowerBound: info.pruningLowerBound ?? undefined,
          lastDelivered: info.lastDelivered ?? undefined,
          headTimestamp: info.head ?? undefined,
          event: admin && info.event ? eventToProto(info.event) : undefined,
          writerEpoch: info.writerEpoch,
        };
      },
      async pauseIntake(request) {
        const sequencer = current();
        const leaseMs = request.leaseMs > 0n ? Number(request.leaseMs) : 600_000;
        await sequencer.intake.pause(leaseMs);
        return { headTimestamp: (await sequencer.status()).head ?? undefined };
      },
      resumeIntake() {
        current().intake.resume();
        return {};
      },
      async admitMember(request) {
        const sequencer = current();
        const admissions = sequencer.admissions;
        const { admission, changed } = await sequencer.intake.admit(() => admissions.admit(request.member));
        return { admission: admissionProto(admission, sequencer), changed };
      },
      async revokeMember(request) {
        const sequencer = current();
        const admissions = sequencer.admissions;
        const { admission, changed } = await sequencer.intake.admit(() => admissions.revoke(request.member));
        return { admission: admissionProto(admission, sequencer), changed };
      },
      listMemberAdmissions() {
        const sequencer = current();
        return {
          onboarding: sequencer.admissions.onboarding,
          admissions: sequencer.admissions.list().map((a) => admissionProto(a, sequencer)),
        };
      },
      async getSequencerStatus() {
        const status = await current().status();
        return {
          sequencerId: status.sequencerId,
          synchronizerId: status.synchronizerId,
          headTimestamp: status.head ?? undefined,
          pruningLowerBound: status.pruningLowerBound ?? undefined,
          safePruningTimestamp: status.safePruningTimestamp ?? undefined,
          pinnedBySet: status.pinnedBySet ?? "",
          holds: status.holds.map((h) => create(RetentionHoldSchema, h)),
          stranded: status.stranded.map(strandedProto),
          retentionMicros: BigInt(status.retentionMs) * 1000n,
          sequencerTime: status.sequencerTime,
          members: status.members.map((m) =>
            create(MemberStatusSchema, {
              member: m.member,
              registeredAt: m.registeredAt,
              lastDelivered: m.lastDelivered ?? undefined,
              acknowledged: m.acknowledged ?? undefined,
              writerEpoch: m.writerEpoch,
              writerActivation: m.writerActivation,
            }),
          ),
        };
      },
    });
  };
}
