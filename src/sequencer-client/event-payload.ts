import { create, type DescMessage, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import { type SignedTopologyTransaction, signedTopologyFromParts } from "../crypto/topology.ts";
import { type EventPayload, EventPayloadSchema } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";

/**
 * Helpers for the EventPayload envelope (sequencer.proto) that every submission carries: node kinds
 * pack their protocol messages as `Any`; topology changes travel as TopologyTransactions.
 */

/** A serialized EventPayload carrying `message` (e.g. a mediator verdict), for SendRequest.payload. */
export function encodeMessagePayload<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc>,
): Uint8Array {
  return toBinary(
    EventPayloadSchema,
    create(EventPayloadSchema, { content: { case: "message", value: anyPack(schema, message) } }),
  );
}

/** The event's payload; undefined for an empty payload (time proofs, deliver errors) or undecodable bytes. */
export function decodeEventPayload(event: Pick<SequencedEvent, "payload">): EventPayload | undefined {
  if (event.payload.length === 0) return undefined;
  try {
    return fromBinary(EventPayloadSchema, event.payload);
  } catch {
    return undefined;
  }
}

/** The protocol message in the event if it is of `schema`'s type, else undefined. */
export function unpackEventMessage<Desc extends DescMessage>(
  event: Pick<SequencedEvent, "payload">,
  schema: Desc,
): MessageShape<Desc> | undefined {
  const content = decodeEventPayload(event)?.content;
  if (content?.case !== "message") return undefined;
  return anyUnpack(content.value, schema);
}

/**
 * The topology transactions of a topology event (undefined if it is none). A transaction that does
 * not parse is dropped here, as TopologyState would reject it anyway.
 */
export function topologyTransactionsOf(event: SequencedEvent): SignedTopologyTransaction[] | undefined {
  if (event.deliverError) return undefined;
  const content = decodeEventPayload(event)?.content;
  if (content?.case !== "topology") return undefined;
  const out: SignedTopologyTransaction[] = [];
  for (const parts of content.value.transactions) {
    try {
      out.push(signedTopologyFromParts(parts));
    } catch {
      // malformed: skipped like any rejected topology transaction
    }
  }
  return out;
}
