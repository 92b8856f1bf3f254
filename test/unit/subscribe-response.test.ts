import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { eventToProto, type SequencedEvent } from "../../src/common/sequenced-event.ts";
import { SubscribeResponseSchema } from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { isBinaryRequest, subscribeResponse } from "../../src/sequencer/subscribe-response.ts";

const member = (name: string) => `${name}::1220${"ab".repeat(32)}`;
const base: SequencedEvent = {
  timestamp: 1_700_000_000_000_123n,
  previousTimestamp: 1_700_000_000_000_100n,
  sender: member("alice"),
  messageId: "m-1 ünïcode ✓",
  recipients: [member("alice"), member("bob")],
  payload: Buffer.from([0, 1, 2, 255]),
  chainHash: Buffer.alloc(32, 7),
  signature: Buffer.alloc(64, 9),
};
const events: SequencedEvent[] = [
  base,
  { ...base, previousTimestamp: null },
  { ...base, previousTimestamp: 0n },
  // A time proof: no recipients, empty payload.
  { ...base, recipients: [], payload: new Uint8Array(0) },
  {
    ...base,
    recipients: [],
    payload: new Uint8Array(0),
    deliverError: { messageId: "m-2", reason: "too late", code: "SEQUENCER_MAX_SEQUENCING_TIME_EXCEEDED" },
  },
  { ...base, deliverError: { messageId: "", reason: "", code: "X" } },
  // Defaults, a negative int64 (ten bytes), multi-byte lengths.
  { ...base, timestamp: 0n, previousTimestamp: -5n, sender: "", messageId: "" },
  { ...base, payload: Buffer.alloc(200, 1), recipients: ["", "x".repeat(300)] },
  { ...base, payload: Buffer.alloc(70_000, 2), timestamp: 2n ** 62n },
];

test("the direct encoding of subscribe responses is byte for byte toBinary's", () => {
  const reference = toBinary(
    SubscribeResponseSchema,
    create(SubscribeResponseSchema, { events: events.map(eventToProto) }),
  );
  const direct = toBinary(SubscribeResponseSchema, subscribeResponse(events, true));
  assert.deepEqual(Buffer.from(direct), Buffer.from(reference));
  const decoded = fromBinary(SubscribeResponseSchema, direct);
  assert.deepEqual(
    decoded.events.map((e) =>
      toJson(SubscribeResponseSchema, create(SubscribeResponseSchema, { events: [e] })),
    ),
    events.map((e) =>
      toJson(SubscribeResponseSchema, create(SubscribeResponseSchema, { events: [eventToProto(e)] })),
    ),
  );
  assert.deepEqual(
    Buffer.from(toBinary(SubscribeResponseSchema, subscribeResponse([], true))),
    Buffer.alloc(0),
  );
});

test("JSON clients get the plain message (JSON carries no unknown fields)", () => {
  const json = toJson(SubscribeResponseSchema, subscribeResponse(events.slice(0, 1), false)) as {
    events: { messageId: string }[];
  };
  assert.equal(json.events[0]?.messageId, base.messageId);
  assert.equal(isBinaryRequest("application/grpc"), true);
  assert.equal(isBinaryRequest("application/grpc+proto"), true);
  assert.equal(isBinaryRequest("application/connect+proto"), true);
  assert.equal(isBinaryRequest("application/connect+json"), false);
  assert.equal(isBinaryRequest("application/grpc-web+json"), false);
});
