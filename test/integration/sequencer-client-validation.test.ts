/**
 * The sequencer client's pure parts and its stores, without a sequencer: the stream validator (fork,
 * previous timestamp, tampered signature), backoff, signed requests, and the event store on real
 * PostgreSQL. The end-to-end tests against a real sequencer are in sequencer-client.test.ts.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { isLockstepError } from "../../src/common/errors.ts";
import {
  deliveryFor,
  type EventPosition,
  positionOf,
  type SequencedEvent,
  type SequencedSubmission,
} from "../../src/common/sequenced-event.ts";
import { keyStoreMigrations } from "../../src/crypto/key-store-migrations.ts";
import {
  acknowledgementDigest,
  generateKeyPair,
  sign,
  submissionDigest,
  subscriptionDigest,
  verify,
} from "../../src/crypto/keys.ts";
import { SubmissionSchema } from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { backoffDelayMs, EventStreamValidator } from "../../src/sequencer-client/event-stream-validator.ts";
import { SequencedEventStore } from "../../src/sequencer-client/sequenced-event-store.ts";
import { sequencerClientMigrations } from "../../src/sequencer-client/sequencer-client-migrations.ts";
import {
  acknowledgeRequest,
  memberIdFor,
  memberRegistration,
  sendRequest,
  subscribeRequest,
} from "../../src/sequencer-client/sequencer-requests.ts";
import { runMigrations } from "../../src/storage/migrations.ts";
import { createTestDb, startTestPostgres } from "../support/postgres.ts";

const sequencerKey = generateKeyPair("signing");
const otherKey = generateKeyPair("signing");
const signer = (b: Buffer) => sign(sequencerKey.privateKey, b);
const member = "mediator::1220aa";
const keys = () => [sequencerKey.publicKey];

function submission(timestamp: bigint, payload = `payload ${timestamp}`): SequencedSubmission {
  return {
    timestamp,
    sender: "participant::1220bb",
    messageId: `m-${timestamp}`,
    recipients: [member],
    payload: Buffer.from(payload),
  };
}

function chain(timestamps: bigint[], prior: EventPosition | null = null, payload?: string): SequencedEvent[] {
  const events: SequencedEvent[] = [];
  for (const t of timestamps) {
    const event = deliveryFor(member, submission(t, payload), prior, signer);
    events.push(event);
    prior = positionOf(event);
  }
  return events;
}

function rejectsWith(code: string) {
  return (error: unknown) => {
    assert.ok(isLockstepError(error), `expected a LockstepError, got ${error}`);
    assert.equal(error.code, code, error.message);
    return true;
  };
}

describe("EventStreamValidator", () => {
  test("a first subscription takes the member's first event and then its successors", () => {
    const [e1, e2, e3] = chain([10n, 20n, 30n]) as [SequencedEvent, SequencedEvent, SequencedEvent];
    const v = new EventStreamValidator(null, keys);
    assert.equal(v.accept(e1), "new");
    assert.equal(v.accept(e2), "new");
    assert.throws(() => v.accept(e2), rejectsWith("PREVIOUS_TIMESTAMP_MISMATCH"));
    const fresh = new EventStreamValidator(null, keys);
    assert.throws(() => fresh.accept(e3), rejectsWith("PREVIOUS_TIMESTAMP_MISMATCH"));
  });

  test("a resubscription starts with the stored event (echo), then continues the chain", () => {
    const [e1, e2, e3] = chain([10n, 20n, 30n]) as [SequencedEvent, SequencedEvent, SequencedEvent];
    const v = new EventStreamValidator(e2, keys);
    assert.equal(v.expected, e2);
    assert.equal(v.accept(e2), "echo");
    assert.equal(v.accept(e3), "new");
    assert.throws(
      () => new EventStreamValidator(e2, keys).accept(e1),
      rejectsWith("SEQUENCER_FORK_DETECTED"),
    );
  });

  test("a different event back at, or after, the stored position is a fork", () => {
    const [e1, e2] = chain([10n, 20n]) as [SequencedEvent, SequencedEvent];
    const sameTimeOtherContent = deliveryFor(member, submission(20n, "other"), positionOf(e1), signer);
    assert.throws(
      () => new EventStreamValidator(e2, keys).accept(sameTimeOtherContent),
      rejectsWith("SEQUENCER_FORK_DETECTED"),
    );
    // A restored sequencer sequences new traffic at a later timestamp, chained on an older event.
    const later = deliveryFor(member, submission(25n, "new traffic"), positionOf(e1), signer);
    assert.throws(
      () => new EventStreamValidator(e2, keys).accept(later),
      rejectsWith("SEQUENCER_FORK_DETECTED"),
    );
  });

  test("a tampered event is refused as such, first event and echo alike", () => {
    const [e1, e2] = chain([10n, 20n]) as [SequencedEvent, SequencedEvent];
    const tampered = { ...e2, payload: Buffer.from("tampered") };
    const v = new EventStreamValidator(e1, keys);
    assert.equal(v.accept(e1), "echo");
    assert.throws(() => v.accept(tampered), rejectsWith("SEQUENCER_SIGNATURE_INVALID"));
    const badSignature = { ...e1, signature: Buffer.from(e1.signature).fill(7, 0, 8) };
    assert.throws(
      () => new EventStreamValidator(null, keys).accept(badSignature),
      rejectsWith("SEQUENCER_SIGNATURE_INVALID"),
    );
    assert.throws(
      () => new EventStreamValidator(null, () => [otherKey.publicKey]).accept(e1),
      rejectsWith("SEQUENCER_SIGNATURE_INVALID"),
    );
    assert.throws(
      () => new EventStreamValidator(null, () => []).accept(e1),
      rejectsWith("SEQUENCER_SIGNATURE_INVALID"),
    );
  });
});

test("backoff doubles from the initial delay up to the maximum, with jitter in [base/2, base]", () => {
  assert.equal(
    backoffDelayMs(0, 100, 5000, () => 0),
    50,
  );
  assert.equal(
    backoffDelayMs(0, 100, 5000, () => 1),
    100,
  );
  assert.equal(
    backoffDelayMs(3, 100, 5000, () => 1),
    800,
  );
  assert.equal(
    backoffDelayMs(10, 100, 5000, () => 1),
    5000,
  );
  assert.equal(
    backoffDelayMs(1000, 100, 5000, () => 0.5),
    3750,
  );
});

test("requests are signed over the bytes sequencer.proto names", () => {
  const namespace = generateKeyPair("namespace");
  const signing = generateKeyPair("signing");
  const id = memberIdFor("mediator", namespace);
  assert.equal(id, `mediator::${namespace.fingerprint}`);
  const registration = memberRegistration(id, namespace, signing);
  assert.equal(registration.transaction.mapping.type, "MemberKeys");
  assert.equal(registration.transaction.serial, 1);

  const send = sendRequest(
    {
      sender: id,
      messageId: "m1",
      recipients: ["p::1220cc"],
      payload: Buffer.from("x"),
      maxSequencingTime: 123n,
      writerEpoch: 4n,
      writerActivation: "act-1",
    },
    signing,
  );
  const bytes = send.submission as Uint8Array;
  assert.ok(verify(signing.publicKey, submissionDigest(bytes), send.signature as Uint8Array));
  const parsed = fromBinary(SubmissionSchema, bytes);
  assert.deepEqual(
    [parsed.sender, parsed.messageId, parsed.writerEpoch, parsed.writerActivation, parsed.timeProof],
    [id, "m1", 4n, "act-1", false],
  );
  assert.equal(send.signingKeyFingerprint, signing.fingerprint);

  const writer = { writerEpoch: 4n, writerActivation: "act-1" };
  const sub = subscribeRequest({ member: id, fromTimestamp: null, ...writer, issuedAt: 99n }, signing);
  const digest = subscriptionDigest({
    member: id,
    fromTimestamp: null,
    ...writer,
    issuedAt: 99n,
    nonce: sub.nonce as Uint8Array,
  });
  assert.equal(sub.fromTimestamp, undefined);
  assert.equal(sub.writerActivation, "act-1");
  assert.ok(verify(signing.publicKey, digest, sub.signature as Uint8Array));
  // The activation is signed: the same request claimed by another activation does not verify.
  const otherDigest = subscriptionDigest({
    member: id,
    fromTimestamp: null,
    writerEpoch: 4n,
    writerActivation: "act-2",
    issuedAt: 99n,
    nonce: sub.nonce as Uint8Array,
  });
  assert.ok(!verify(signing.publicKey, otherDigest, sub.signature as Uint8Array));

  const ack = acknowledgeRequest({ member: id, timestamp: 77n, ...writer }, signing);
  const ackDigest = acknowledgementDigest({ member: id, timestamp: 77n, ...writer });
  assert.equal(ack.writerActivation, "act-1");
  assert.ok(verify(signing.publicKey, ackDigest, ack.signature as Uint8Array));
  const otherAck = acknowledgementDigest({
    member: id,
    timestamp: 77n,
    writerEpoch: 4n,
    writerActivation: "",
  });
  assert.ok(!verify(signing.publicKey, otherAck, ack.signature as Uint8Array));
});

test("the event store keeps events with counters and a clean timestamp that never moves back", async () => {
  const pg = await startTestPostgres({ autoCleanup: false });
  try {
    const db = await createTestDb(pg, "client_store");
    await runMigrations(db, "mediator", [...sequencerClientMigrations, ...keyStoreMigrations]);
    const store = new SequencedEventStore(db);
    const [e1, e2, e3] = chain([10n, 20n, 30n]) as [SequencedEvent, SequencedEvent, SequencedEvent];
    const withError: SequencedEvent = {
      ...e3,
      deliverError: { messageId: "m-30", reason: "too late", code: "SEQUENCER_UNAVAILABLE" },
    };
    const counters = [await store.store(e1), await store.store(e2), await store.store(withError)];
    assert.deepEqual(counters, [1n, 2n, 3n]);
    await assert.rejects(store.store(e2), /duplicate key/);
    assert.deepEqual((await store.lastStored())?.event, withError);
    assert.deepEqual((await store.eventAt(10n))?.event, e1);
    assert.equal(await store.clean(), null);
    await db.transaction((tx) => store.setClean(tx, 20n));
    await db.transaction((tx) => store.setClean(tx, 10n));
    assert.equal(await store.clean(), 20n);
    const pending = [];
    for await (const s of store.unprocessed(await store.clean(), 1)) pending.push(s.counter);
    assert.deepEqual(pending, [3n]);
    const all = [];
    for await (const s of store.unprocessed(null, 2)) all.push(s.event.timestamp);
    assert.deepEqual(all, [10n, 20n, 30n]);
  } finally {
    await pg.cleanup();
  }
});
