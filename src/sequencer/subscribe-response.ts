import { create } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { eventToProto, type SequencedEvent } from "../common/sequenced-event.ts";
import {
  type SubscribeResponse,
  SubscribeResponseSchema,
} from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";

/** SubscribeResponse.events and the SequencedEvent fields, as numbered in sequencer.proto. */
const EVENTS_FIELD = 1;

/**
 * The SubscribeResponse for a batch of events. Subscriptions are the sequencer's hottest output
 * (every event once per recipient) and reflection-based toBinary costs about three times a direct
 * encoding, so for binary (protobuf) clients each SequencedEvent is encoded here and carried as an
 * unknown field number 1, length-delimited, which toBinary writes verbatim: the bytes on the wire
 * are exactly those of the `events` field (subscribe-response.test.ts checks them against toBinary).
 * JSON clients get the plain message, since JSON does not carry unknown fields.
 */
export function subscribeResponse(events: readonly SequencedEvent[], binary: boolean): SubscribeResponse {
  if (!binary) return create(SubscribeResponseSchema, { events: events.map(eventToProto) });
  const response = create(SubscribeResponseSchema);
  response.$unknown = events.map((event) => ({
    no: EVENTS_FIELD,
    wireType: WireType.LengthDelimited,
    data: encodeLengthDelimited(event),
  }));
  return response;
}

/** True unless the request's content type is one of the JSON codecs. */
export function isBinaryRequest(contentType: string | null): boolean {
  return !(contentType ?? "").includes("json");
}

/** varint length ‖ SequencedEvent, proto3 rules: a field at its default value is not written. */
function encodeLengthDelimited(e: SequencedEvent): Uint8Array {
  const w = new BinaryWriter().fork();
  if (e.timestamp !== 0n) w.tag(1, WireType.Varint).int64(e.timestamp);
  if (e.previousTimestamp !== null) w.tag(2, WireType.Varint).int64(e.previousTimestamp);
  if (e.sender !== "") w.tag(3, WireType.LengthDelimited).string(e.sender);
  if (e.messageId !== "") w.tag(4, WireType.LengthDelimited).string(e.messageId);
  for (const recipient of e.recipients) w.tag(5, WireType.LengthDelimited).string(recipient);
  if (e.payload.length > 0) w.tag(6, WireType.LengthDelimited).bytes(e.payload);
  const error = e.deliverError;
  if (error) {
    w.tag(7, WireType.LengthDelimited).fork();
    if (error.messageId !== "") w.tag(1, WireType.LengthDelimited).string(error.messageId);
    if (error.reason !== "") w.tag(2, WireType.LengthDelimited).string(error.reason);
    if (error.code !== "") w.tag(3, WireType.LengthDelimited).string(error.code);
    w.join();
  }
  if (e.chainHash.length > 0) w.tag(8, WireType.LengthDelimited).bytes(e.chainHash);
  if (e.signature.length > 0) w.tag(9, WireType.LengthDelimited).bytes(e.signature);
  return w.join().finish();
}
