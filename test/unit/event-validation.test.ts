import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isLockstepError } from "../../src/common/errors.ts";
import { uniqueIdentifier } from "../../src/common/ids.ts";
import {
  contentHash,
  deliveryFor,
  type EventPosition,
  eventFromProto,
  eventSigningBytes,
  eventToProto,
  membersToDeliver,
  nextChainHash,
  positionOf,
  type SequencedEvent,
  type SequencedSubmission,
} from "../../src/common/sequenced-event.ts";
import { generateKeyPair, type KeyPair, sign } from "../../src/crypto/keys.ts";
import { memberKeys, TopologyState } from "../../src/crypto/topology.ts";
import {
  sequencerKeysAt,
  validateNext,
  validateResubscription,
} from "../../src/sequencer-client/event-validation.ts";

const sequencerKey = generateKeyPair("signing");
const signer = (b: Buffer) => sign(sequencerKey.privateKey, b);
const member = "participant1::1220aa";

function submission(timestamp: bigint, payload = `payload ${timestamp}`): SequencedSubmission {
  return {
    timestamp,
    sender: "participant2::1220bb",
    messageId: `m-${timestamp}`,
    recipients: [member, "mediator::1220cc"],
    payload: Buffer.from(payload),
  };
}

/** The member's chain of views for the given timestamps. */
function chain(timestamps: bigint[]): SequencedEvent[] {
  const events: SequencedEvent[] = [];
  let prior: EventPosition | null = null;
  for (const t of timestamps) {
    const event = deliveryFor(member, submission(t), prior, signer);
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

/** A correctly signed event with arbitrary fields, for the cases the sequencer itself must never produce. */
function forged(fields: Omit<SequencedEvent, "signature">): SequencedEvent {
  return { ...fields, signature: signer(eventSigningBytes(fields)) };
}

describe("sequenced events", () => {
  test("views chain per member and are signed over content hash and chain hash", () => {
    const [e1, e2] = chain([100n, 200n]) as [SequencedEvent, SequencedEvent];
    assert.equal(e1.previousTimestamp, null);
    assert.equal(e2.previousTimestamp, 100n);
    assert.deepEqual(e1.chainHash, nextChainHash(null, contentHash(e1)));
    assert.deepEqual(e2.chainHash, nextChainHash(e1.chainHash, contentHash(e2)));
    assert.equal(eventSigningBytes(e2).length, 64);
    assert.throws(() => deliveryFor("stranger::1220dd", submission(300n), null, signer), /not addressed/);
  });

  test("recipients plus the sender receive an event; a deliver error goes to the sender only", () => {
    assert.deepEqual(membersToDeliver(submission(1n)), [member, "mediator::1220cc", "participant2::1220bb"]);
    const error = { ...submission(1n), deliverError: { messageId: "m-1", reason: "too late", code: "X" } };
    assert.deepEqual(membersToDeliver(error), ["participant2::1220bb"]);
    assert.deepEqual(membersToDeliver({ ...submission(1n), recipients: [] }), ["participant2::1220bb"]);
  });

  test("the proto form round-trips, deliver error and absent previous timestamp included", () => {
    const [e1] = chain([100n]) as [SequencedEvent];
    assert.deepEqual(eventFromProto(eventToProto(e1)), e1);
    const error = deliveryFor(
      "participant2::1220bb",
      {
        ...submission(5n),
        payload: new Uint8Array(),
        deliverError: { messageId: "m-5", reason: "late", code: "C" },
      },
      { timestamp: 1n, chainHash: Buffer.alloc(32, 7) },
      signer,
    );
    const back = eventFromProto(eventToProto(error));
    assert.deepEqual(back, { ...error, payload: back.payload });
    assert.deepEqual(contentHash(back), contentHash(error));
  });

  test("a deliver error and a deliver with the same fields hash differently", () => {
    const [e1] = chain([100n]) as [SequencedEvent];
    const withError = { ...e1, deliverError: { messageId: e1.messageId, reason: "", code: "" } };
    assert.notDeepEqual(contentHash(withError), contentHash(e1));
  });
});

describe("event validation", () => {
  test("a correct chain validates", () => {
    let prior: EventPosition | null = null;
    for (const event of chain([100n, 200n, 350n, 351n]))
      prior = validateNext(prior, event, sequencerKey.publicKey);
    assert.equal(prior?.timestamp, 351n);
  });

  test("during a key rotation either sequencer key is accepted", () => {
    const [e1] = chain([100n]) as [SequencedEvent];
    const next = generateKeyPair("signing");
    validateNext(null, e1, [next.publicKey, sequencerKey.publicKey]);
    assert.throws(() => validateNext(null, e1, [next.publicKey]), rejectsWith("SEQUENCER_SIGNATURE_INVALID"));
    assert.throws(() => validateNext(null, e1, []), rejectsWith("SEQUENCER_SIGNATURE_INVALID"));
  });

  test("resubscription: the same event validates; a changed payload at the same timestamp is a fork", () => {
    const [e1, e2] = chain([100n, 200n]) as [SequencedEvent, SequencedEvent];
    validateResubscription(e2, eventFromProto(eventToProto(e2)), sequencerKey.publicKey);

    const changed = deliveryFor(member, submission(200n, "something else"), positionOf(e1), signer);
    assert.throws(
      () => validateResubscription(e2, changed),
      (error: unknown) => {
        rejectsWith("SEQUENCER_FORK_DETECTED")(error);
        assert.ok(isLockstepError(error));
        assert.equal(error.metadata.timestamp, "200");
        assert.equal(error.metadata.differs, "content");
        assert.match(error.remedy, /older backup.*new synchronizer/);
        assert.equal(error.exitCode, 3);
        return true;
      },
    );
    // Same event, different history before it: only the chain hash tells.
    const otherHistory = deliveryFor(
      member,
      submission(200n),
      { timestamp: 100n, chainHash: Buffer.alloc(32, 1) },
      signer,
    );
    assert.throws(() => validateResubscription(e2, otherHistory), rejectsWith("SEQUENCER_FORK_DETECTED"));
    // A later first event (the stored one is gone) is a fork too.
    const [, , e3] = chain([100n, 200n, 300n]) as [SequencedEvent, SequencedEvent, SequencedEvent];
    assert.throws(() => validateResubscription(e2, e3), rejectsWith("SEQUENCER_FORK_DETECTED"));
  });

  test("resubscription refuses an unsigned first event as such, not as a fork", () => {
    const [, e2] = chain([100n, 200n]) as [SequencedEvent, SequencedEvent];
    const unsigned = { ...e2, payload: Buffer.from("x"), signature: Buffer.alloc(64) };
    assert.throws(
      () => validateResubscription(e2, unsigned, sequencerKey.publicKey),
      rejectsWith("SEQUENCER_SIGNATURE_INVALID"),
    );
  });

  test("a gap or a wrong previous timestamp is PREVIOUS_TIMESTAMP_MISMATCH", () => {
    const [e1, e2, e3] = chain([100n, 200n, 300n]) as [SequencedEvent, SequencedEvent, SequencedEvent];
    assert.throws(
      () => validateNext(positionOf(e1), e3, sequencerKey.publicKey),
      rejectsWith("PREVIOUS_TIMESTAMP_MISMATCH"),
    );
    assert.throws(
      () => validateNext(null, e2, sequencerKey.publicKey),
      rejectsWith("PREVIOUS_TIMESTAMP_MISMATCH"),
    );
    assert.throws(
      () => validateNext(positionOf(e2), e1, sequencerKey.publicKey),
      rejectsWith("PREVIOUS_TIMESTAMP_MISMATCH"),
    );
    assert.throws(
      () => validateNext(positionOf(e3), e3, sequencerKey.publicKey),
      rejectsWith("PREVIOUS_TIMESTAMP_MISMATCH"),
    );
  });

  test("an equal or earlier timestamp is SEQUENCER_TIMESTAMP_NOT_INCREASING", () => {
    const [e1] = chain([100n]) as [SequencedEvent];
    const fields = { ...submission(100n), previousTimestamp: 100n };
    const same = forged({ ...fields, chainHash: nextChainHash(e1.chainHash, contentHash(fields)) });
    assert.throws(
      () => validateNext(positionOf(e1), same, sequencerKey.publicKey),
      rejectsWith("SEQUENCER_TIMESTAMP_NOT_INCREASING"),
    );
    const earlierFields = { ...submission(99n), previousTimestamp: 100n };
    const earlier = forged({
      ...earlierFields,
      chainHash: nextChainHash(e1.chainHash, contentHash(earlierFields)),
    });
    assert.throws(
      () => validateNext(positionOf(e1), earlier, sequencerKey.publicKey),
      rejectsWith("SEQUENCER_TIMESTAMP_NOT_INCREASING"),
    );
  });

  test("a chain hash that does not follow from the member's history is SEQUENCER_CHAIN_HASH_MISMATCH", () => {
    const [e1] = chain([100n]) as [SequencedEvent];
    const wrong = deliveryFor(
      member,
      submission(200n),
      { timestamp: 100n, chainHash: Buffer.alloc(32, 9) },
      signer,
    );
    assert.throws(
      () => validateNext(positionOf(e1), wrong, sequencerKey.publicKey),
      rejectsWith("SEQUENCER_CHAIN_HASH_MISMATCH"),
    );
  });

  test("a tampered signature or tampered content is SEQUENCER_SIGNATURE_INVALID", () => {
    const [e1, e2] = chain([100n, 200n]) as [SequencedEvent, SequencedEvent];
    const signature = Buffer.from(e2.signature);
    signature[3] = (signature[3] as number) ^ 0x10;
    assert.throws(
      () => validateNext(positionOf(e1), { ...e2, signature }, sequencerKey.publicKey),
      rejectsWith("SEQUENCER_SIGNATURE_INVALID"),
    );
    const payload = { ...e2, payload: Buffer.from("tampered") };
    assert.throws(
      () => validateNext(positionOf(e1), payload, sequencerKey.publicKey),
      rejectsWith("SEQUENCER_SIGNATURE_INVALID"),
    );
    const other = generateKeyPair("signing");
    const resigned = { ...e2, signature: sign(other.privateKey, eventSigningBytes(e2)) };
    assert.throws(
      () => validateNext(positionOf(e1), resigned, sequencerKey.publicKey),
      rejectsWith("SEQUENCER_SIGNATURE_INVALID"),
    );
  });
});

describe("sequencer key rotation: events are judged with the keys in force just before them", () => {
  // The sequencer's MemberKeys: [A] at T0 → [A, B] at T1 (announce) → [B] at T2 (revoke), each a
  // real transaction signed with the sequencer's namespace key, as the sequencer sequences them.
  const namespace = generateKeyPair("namespace");
  const sequencerId = uniqueIdentifier("sequencer", namespace.fingerprint);
  const keyA = generateKeyPair("signing");
  const keyB = generateKeyPair("signing");
  const [T0, T1, T2] = [1_000n, 2_000n, 3_000n];
  const s0 = TopologyState.empty(namespace.fingerprint);
  const s1 = s0.apply(s0.issue(memberKeys(sequencerId, namespace, [keyA]), namespace), T0);
  const s2 = s1.apply(s1.issue(memberKeys(sequencerId, namespace, [keyA, keyB]), namespace), T1);
  const s3 = s2.apply(s2.issue(memberKeys(sequencerId, namespace, [keyB]), namespace), T2);
  const topology = s3;

  /** The member's chain of views at these timestamps, each signed with its key. */
  function signedChain(steps: [bigint, KeyPair][], prior: EventPosition | null = null): SequencedEvent[] {
    const events: SequencedEvent[] = [];
    for (const [t, key] of steps) {
      const event = deliveryFor(member, submission(t), prior, (b) => sign(key.privateKey, b));
      events.push(event);
      prior = positionOf(event);
    }
    return events;
  }

  /**
   * The member's verdict on each event, judged as a chain from `prior` with validateNext and the
   * keys sequencerKeysAt gives on the topology `state(t)`: "ok" (the chain moves on) or the code.
   */
  function verdicts(
    events: SequencedEvent[],
    state: (t: bigint) => TopologyState,
    prior: EventPosition | null = null,
  ): string[] {
    return events.map((event) => {
      try {
        prior = validateNext(
          prior,
          event,
          sequencerKeysAt(state(event.timestamp), sequencerId, event.timestamp),
        );
        return "ok";
      } catch (error) {
        assert.ok(isLockstepError(error), String(error));
        return error.code;
      }
    });
  }

  test("the transactions are real and serial: the final topology lists B only", () => {
    assert.deepEqual(
      topology.transactions().map((e) => [e.signed.transaction.serial, e.effectiveAt]),
      [
        [1, T0],
        [2, T1],
        [3, T2],
      ],
    );
    assert.deepEqual(
      topology.signingKeysOf(sequencerId, T2).map((k) => k.fingerprint),
      [keyB.fingerprint],
    );
    assert.deepEqual(sequencerKeysAt(topology, sequencerId, T1), [keyA.publicKey]);
    assert.deepEqual(sequencerKeysAt(topology, sequencerId, T2), [keyA.publicKey, keyB.publicKey]);
    assert.deepEqual(sequencerKeysAt(topology, sequencerId, T2 + 1n), [keyB.publicKey]);
  });

  test("the revocation event itself, signed with A, is accepted: A is in force at T2 - 1", () => {
    const [before, atRevocation] = signedChain([
      [T1 + 500n, keyA],
      [T2, keyA],
    ]) as [SequencedEvent, SequencedEvent];
    const prior = validateNext(null, before, sequencerKeysAt(topology, sequencerId, before.timestamp));
    assert.equal(validateNext(prior, atRevocation, sequencerKeysAt(topology, sequencerId, T2)).timestamp, T2);
  });

  test("the announcement event is checked with the old keys: signed with B, it is refused", () => {
    const [announce] = signedChain([[T1, keyB]]) as [SequencedEvent];
    assert.throws(
      () => validateNext(null, announce, sequencerKeysAt(topology, sequencerId, T1)),
      rejectsWith("SEQUENCER_SIGNATURE_INVALID"),
    );
    const [withA] = signedChain([[T1, keyA]]) as [SequencedEvent];
    validateNext(null, withA, sequencerKeysAt(topology, sequencerId, T1));
  });

  test("after the revocation an event signed with A is SEQUENCER_SIGNATURE_INVALID; with B it is accepted", () => {
    const [atRevocation] = signedChain([[T2, keyB]]) as [SequencedEvent];
    const prior = validateNext(null, atRevocation, sequencerKeysAt(topology, sequencerId, T2));
    const [withA] = signedChain([[T2 + 1n, keyA]], prior) as [SequencedEvent];
    const [withB] = signedChain([[T2 + 1n, keyB]], prior) as [SequencedEvent];
    assert.throws(
      () => validateNext(prior, withA, sequencerKeysAt(topology, sequencerId, withA.timestamp)),
      (error: unknown) => {
        rejectsWith("SEQUENCER_SIGNATURE_INVALID")(error);
        assert.ok(isLockstepError(error));
        assert.equal(error.metadata.keys, topology.signingKeysOf(sequencerId, T2)[0]?.fingerprint);
        return true;
      },
    );
    assert.equal(
      validateNext(prior, withB, sequencerKeysAt(topology, sequencerId, withB.timestamp)).timestamp,
      T2 + 1n,
    );
  });

  test("a replay with the topology that includes the revocation gives the first verdicts: A's old events stay valid", () => {
    const history = signedChain([
      [T0 + 10n, keyA],
      [T1, keyA], // the announcement, checked with [A]
      [T1 + 10n, keyA], // during the rotation either key
      [T1 + 20n, keyB],
      [T2, keyA], // the revocation, still signed with A
      [T2 + 10n, keyB],
    ]);
    const last = history.at(-1) as SequencedEvent;
    // Two continuations of that history: one signed with the revoked key, one with B.
    const [withA] = signedChain([[T2 + 20n, keyA]], positionOf(last)) as [SequencedEvent];
    const [withB] = signedChain([[T2 + 20n, keyB]], positionOf(last)) as [SequencedEvent];
    const events = [...history, withA, withB];
    // Live: each event judged with the topology the member had processed before it (no later
    // transaction known yet). Replay: every event judged with the final topology, revocation included.
    const live = (t: bigint) => (t > T2 ? s3 : t > T1 ? s2 : s1);
    const first = verdicts(events, live);
    assert.deepEqual(first, ["ok", "ok", "ok", "ok", "ok", "ok", "SEQUENCER_SIGNATURE_INVALID", "ok"]);
    assert.deepEqual(
      verdicts(events, () => topology),
      first,
    );
  });
});
