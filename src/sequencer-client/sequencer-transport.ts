import type { MessageInitShape } from "@bufbuild/protobuf";
import type { LockstepError } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";
import type {
  AcknowledgeRequestSchema,
  RegisterMemberRequestSchema,
  SendRequestSchema,
  SequencedEvent as SequencedEventProto,
  SignedSubmissionsSchema,
  SubmitTopologyRequestSchema,
  SubscribeRequestSchema,
} from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import type { TopologyBootstrap } from "./topology-bootstrap.ts";

/**
 * How a sequencer client reaches its sequencer: the calls of sequencer.proto with requests already
 * built and signed by the client, nothing else (the driver half of a kysely-style split; the
 * client in sequencer-client-runtime.ts is the runtime). Every call, and a subscription stream,
 * fails with a LockstepError: the sequencer's own, or SEQUENCER_UNAVAILABLE when it cannot be
 * reached. No retries, no state beyond the connection.
 */
export interface SequencerTransport {
  /** The sequencer's record of the member's writer epoch (writer epoch settling). */
  getMemberEvent(member: string, timestamp: Micros): Promise<{ writerEpoch: bigint }>;
  /** GetTopology, up to the head or as of `asOf` inclusive. */
  getTopology(asOf?: Micros): Promise<TopologyBootstrap>;
  registerMember(
    request: MessageInitShape<typeof RegisterMemberRequestSchema>,
  ): Promise<{ registeredAt: Micros }>;
  /**
   * One Subscribe call: the member's events in batches, as they arrive, until the sequencer closes
   * the stream (the iteration ends) or it fails (throws). `onConnected`: headers arrived.
   */
  subscribe(
    request: MessageInitShape<typeof SubscribeRequestSchema>,
    options: { signal: AbortSignal; onConnected: () => void },
  ): AsyncIterable<readonly SequencedEventProto[]>;
  /**
   * One SendBatch of one sender's submissions under one signature: one outcome per submission
   * (null: accepted, or the sequencer's refusal), or "unsupported" for a sequencer from before
   * SendBatch. Rejects when the whole call failed.
   */
  sendBatch(signed: MessageInitShape<typeof SignedSubmissionsSchema>): Promise<SendBatchOutcome>;
  /** One Send (also how a time proof is asked for: a submission with timeProof set). */
  send(request: MessageInitShape<typeof SendRequestSchema>): Promise<void>;
  acknowledge(request: MessageInitShape<typeof AcknowledgeRequestSchema>, signal: AbortSignal): Promise<void>;
  submitTopology(
    request: MessageInitShape<typeof SubmitTopologyRequestSchema>,
  ): Promise<{ effectiveAt: Micros }>;
}

export type SendBatchOutcome = readonly (LockstepError | null)[] | "unsupported";
