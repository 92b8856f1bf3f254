import { create } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
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
  const strings = [e.sender, e.messageId, ...e.recipients];
  const stringBytes = strings.map((value) => Buffer.byteLength(value, "utf8"));
  const error = e.deliverError;
  const errorFields = error ? [error.messageId, error.reason, error.code] : [];
  const errorBytes = errorFields.map((value) => Buffer.byteLength(value, "utf8"));
  const errorSize = errorBytes.reduce((sum, n) => sum + (n > 0 ? fieldSize(n) : 0), 0);
  const size =
    (e.timestamp !== 0n ? 1 + varint64Size(e.timestamp) : 0) +
    (e.previousTimestamp !== null ? 1 + varint64Size(e.previousTimestamp) : 0) +
    stringBytes.reduce((sum, n, i) => sum + (i < 2 && n === 0 ? 0 : fieldSize(n)), 0) +
    (e.payload.length > 0 ? fieldSize(e.payload.length) : 0) +
    (error ? fieldSize(errorSize) : 0) +
    (e.chainHash.length > 0 ? fieldSize(e.chainHash.length) : 0) +
    (e.signature.length > 0 ? fieldSize(e.signature.length) : 0);
  const out = new Writer(Buffer.allocUnsafe(varintSize(size) + size));
  out.varint(size);
  if (e.timestamp !== 0n) out.tag(1, WireType.Varint).varint64(e.timestamp);
  if (e.previousTimestamp !== null) out.tag(2, WireType.Varint).varint64(e.previousTimestamp);
  strings.forEach((value, i) => {
    const length = stringBytes[i] as number;
    // sender (3) and message_id (4) are omitted when empty; every recipient (5) is written.
    if (i < 2 && length === 0) return;
    out.tag(Math.min(i + 3, 5), WireType.LengthDelimited).string(value, length);
  });
  if (e.payload.length > 0) out.tag(6, WireType.LengthDelimited).bytes(e.payload);
  if (error) {
    out.tag(7, WireType.LengthDelimited).varint(errorSize);
    errorFields.forEach((value, i) => {
      const length = errorBytes[i] as number;
      if (length > 0) out.tag(i + 1, WireType.LengthDelimited).string(value, length);
    });
  }
  if (e.chainHash.length > 0) out.tag(8, WireType.LengthDelimited).bytes(e.chainHash);
  if (e.signature.length > 0) out.tag(9, WireType.LengthDelimited).bytes(e.signature);
  return out.done();
}

const SAFE = 2n ** 53n;

/** A length-delimited field of `length` bytes with a one-byte tag (field numbers below 16). */
function fieldSize(length: number): number {
  return 1 + varintSize(length) + length;
}

function varintSize(value: number): number {
  let size = 1;
  for (let v = value; v >= 0x80; v = Math.floor(v / 0x80)) size++;
  return size;
}

/** int64 as protobuf writes it: two's complement, so a negative value takes ten bytes. */
function varint64Size(value: bigint): number {
  if (value >= 0n && value < SAFE) return varintSize(Number(value));
  let v = BigInt.asUintN(64, value);
  let size = 1;
  while (v >= 0x80n) {
    v >>= 7n;
    size++;
  }
  return size;
}

/** Writes into a buffer of the exact size (computed above). */
class Writer {
  private at = 0;
  constructor(private readonly buffer: Buffer) {}

  tag(field: number, wireType: WireType): this {
    this.buffer[this.at++] = (field << 3) | wireType;
    return this;
  }
  varint(value: number): this {
    let v = value;
    while (v >= 0x80) {
      this.buffer[this.at++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buffer[this.at++] = v;
    return this;
  }
  varint64(value: bigint): this {
    // Below 2^53 (every microsecond timestamp), plain numbers are exact and much faster.
    if (value >= 0n && value < SAFE) return this.varint(Number(value));
    let v = BigInt.asUintN(64, value);
    while (v >= 0x80n) {
      this.buffer[this.at++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buffer[this.at++] = Number(v);
    return this;
  }
  string(value: string, length: number): this {
    this.varint(length);
    this.at += this.buffer.write(value, this.at, length, "utf8");
    return this;
  }
  bytes(value: Uint8Array): this {
    this.varint(value.length);
    this.buffer.set(value, this.at);
    this.at += value.length;
    return this;
  }
  done(): Buffer {
    if (this.at !== this.buffer.length) throw new Error(`encoded ${this.at} of ${this.buffer.length} bytes`);
    return this.buffer;
  }
}
