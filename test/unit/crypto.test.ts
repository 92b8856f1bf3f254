import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isLockstepError } from "../../src/common/errors.ts";
import { sha256Hex } from "../../src/common/hash.ts";
import { uniqueIdentifier } from "../../src/common/ids.ts";
import {
  exportPrivateKey,
  exportPublicKey,
  fingerprint,
  generateKeyPair,
  importPrivateKey,
  importPublicKey,
  keyPairFromPrivateKey,
  sign,
  verify,
} from "../../src/crypto/keys.ts";
import {
  DEFAULT_SYNCHRONIZER_PARAMETERS,
  memberKeys,
  parseTopologyTransaction,
  type SignedTopologyTransaction,
  serializeTopologyTransaction,
  signedTopologyFromParts,
  signedTopologyToParts,
  signTopologyTransaction,
  TopologyState,
  type TopologyTransaction,
} from "../../src/crypto/topology.ts";

function rejectsWith(code: string) {
  return (error: unknown) => {
    assert.ok(isLockstepError(error), `expected a LockstepError, got ${error}`);
    assert.equal(error.code, code, error.message);
    return true;
  };
}

describe("keys", () => {
  test("sign and verify; a tampered signature, message or key fails", () => {
    const key = generateKeyPair("signing");
    const message = Buffer.from("hello");
    const signature = sign(key.privateKey, message);
    assert.equal(signature.length, 64);
    assert.ok(verify(key.publicKey, message, signature));

    const tampered = Buffer.from(signature);
    tampered[0] = (tampered[0] as number) ^ 1;
    assert.equal(verify(key.publicKey, message, tampered), false);
    assert.equal(verify(key.publicKey, Buffer.from("hellp"), signature), false);
    assert.equal(verify(generateKeyPair("signing").publicKey, message, signature), false);
    assert.equal(verify(Buffer.alloc(5), message, signature), false, "malformed key: false, no throw");
    assert.equal(verify(key.publicKey, message, signature.subarray(1)), false, "short signature");
  });

  test("fingerprints are Canton style and stable across export and import", () => {
    const key = generateKeyPair("namespace");
    assert.equal(key.publicKey.length, 32);
    assert.match(key.fingerprint, /^1220[0-9a-f]{64}$/);
    assert.equal(key.fingerprint, `1220${sha256Hex(key.publicKey)}`);
    assert.equal(fingerprint(key.publicKey), key.fingerprint);

    const restored = keyPairFromPrivateKey(exportPrivateKey(key.privateKey), "namespace");
    assert.equal(restored.fingerprint, key.fingerprint);
    assert.deepEqual(restored.publicKey, key.publicKey);
    assert.deepEqual(exportPublicKey(importPublicKey(key.publicKey)), key.publicKey);
    const signature = sign(importPrivateKey(exportPrivateKey(key.privateKey)), Buffer.from("x"));
    assert.ok(verify(key.publicKey, Buffer.from("x"), signature));
    assert.notEqual(generateKeyPair("namespace").fingerprint, key.fingerprint);
  });
});

describe("topology", () => {
  const synchronizerNs = generateKeyPair("namespace");
  const sequencerSigning = generateKeyPair("signing");
  const sequencer = uniqueIdentifier("sequencer", synchronizerNs.fingerprint);
  const participantNs = generateKeyPair("namespace");
  const participantSigning = generateKeyPair("signing");
  const participant = uniqueIdentifier("participant1", participantNs.fingerprint);
  const alice = uniqueIdentifier("alice", participantNs.fingerprint);
  const mediatorNs = generateKeyPair("namespace");
  const mediator = uniqueIdentifier("mediator", mediatorNs.fingerprint);

  function tx(serial: number, mapping: TopologyTransaction["mapping"], operation: "add" | "remove" = "add") {
    return { operation, serial, mapping } satisfies TopologyTransaction;
  }

  function base(): TopologyState {
    return TopologyState.empty(synchronizerNs.fingerprint)
      .apply(
        signTopologyTransaction(
          tx(1, memberKeys(sequencer, synchronizerNs, [sequencerSigning])),
          synchronizerNs,
        ),
        10n,
      )
      .apply(
        signTopologyTransaction(
          tx(1, memberKeys(participant, participantNs, [participantSigning])),
          participantNs,
        ),
        20n,
      );
  }

  const hosting = () =>
    signTopologyTransaction(tx(1, { type: "PartyToParticipant", party: alice, participant }), participantNs);

  test("members onboard self-signed and are members from their timestamp", () => {
    const state = base();
    assert.equal(state.isMember(participant, 19n), false);
    assert.equal(state.isMember(participant, 20n), true);
    assert.deepEqual(state.members(100n), [participant, sequencer].sort());
    assert.deepEqual(state.signingKeysOf(sequencer, 10n), [
      { fingerprint: sequencerSigning.fingerprint, publicKey: sequencerSigning.publicKey },
    ]);
    assert.deepEqual(state.signingKeysOf(participant, 10n), []);
  });

  test("party hosting is effective only from its sequencing timestamp", () => {
    const before = base();
    const state = before.apply(hosting(), 30n);
    assert.equal(state.participantOf(alice, 29n), undefined);
    assert.equal(state.participantOf(alice, 30n), participant);
    assert.equal(state.snapshot(1000n).participantOf(alice), participant);
    assert.deepEqual(state.partiesOf(participant, 30n), [alice]);
    assert.equal(before.participantOf(alice, 1000n), undefined, "apply returns a new state");
  });

  test("wrongly signed topology transactions are refused", () => {
    const state = base();
    // The synchronizer's key cannot host a party in the participant's namespace.
    const bySynchronizer = signTopologyTransaction(
      tx(1, { type: "PartyToParticipant", party: alice, participant }),
      synchronizerNs,
    );
    assert.throws(() => state.apply(bySynchronizer, 30n), rejectsWith("UNAUTHORIZED_TOPOLOGY_TRANSACTION"));
    // A participant cannot set synchronizer parameters.
    const params = signTopologyTransaction(
      tx(1, {
        type: "SynchronizerParameters",
        ...DEFAULT_SYNCHRONIZER_PARAMETERS,
        ledgerTimeRecordTimeToleranceMs: 1,
      }),
      participantNs,
    );
    assert.throws(() => state.apply(params, 30n), rejectsWith("UNAUTHORIZED_TOPOLOGY_TRANSACTION"));
    // Nobody can register a member in someone else's namespace.
    const intruder = generateKeyPair("namespace");
    const squat = signTopologyTransaction(tx(1, memberKeys(participant, intruder, [intruder])), intruder);
    assert.throws(() => state.apply(squat, 30n), rejectsWith("UNAUTHORIZED_TOPOLOGY_TRANSACTION"));
    // A tampered signature, or a signature over other bytes, does not verify.
    const good = hosting();
    const badSignature = Buffer.from(good.signature);
    badSignature[10] = (badSignature[10] as number) ^ 0xff;
    assert.throws(
      () => state.apply({ ...good, signature: badSignature }, 30n),
      rejectsWith("INVALID_TOPOLOGY_TX_SIGNATURE_ERROR"),
    );
    const other = signTopologyTransaction(
      tx(1, {
        type: "PartyToParticipant",
        party: uniqueIdentifier("bob", participantNs.fingerprint),
        participant,
      }),
      participantNs,
    );
    const swapped: SignedTopologyTransaction = { ...other, signature: good.signature };
    assert.throws(() => state.apply(swapped, 30n), rejectsWith("INVALID_TOPOLOGY_TX_SIGNATURE_ERROR"));
    // tryApply returns the rejection and the unchanged state.
    const result = state.tryApply(bySynchronizer, 30n);
    assert.equal(result.state, state);
    assert.equal(result.error?.code, "UNAUTHORIZED_TOPOLOGY_TRANSACTION");
  });

  test("a party can only be hosted on a member participant", () => {
    const state = TopologyState.empty(synchronizerNs.fingerprint);
    assert.throws(() => state.apply(hosting(), 30n), rejectsWith("INVALID_TOPOLOGY_MAPPING"));
  });

  test("key removal and member removal, with history", () => {
    const k2 = generateKeyPair("signing");
    let state = base();
    state = state.apply(
      signTopologyTransaction(
        tx(2, memberKeys(participant, participantNs, [participantSigning, k2])),
        participantNs,
      ),
      30n,
    );
    state = state.apply(
      signTopologyTransaction(tx(3, memberKeys(participant, participantNs, [k2])), participantNs),
      40n,
    );
    assert.deepEqual(
      state.signingKeysOf(participant, 35n).map((k) => k.fingerprint),
      [participantSigning.fingerprint, k2.fingerprint],
    );
    assert.deepEqual(
      state.signingKeysOf(participant, 40n).map((k) => k.fingerprint),
      [k2.fingerprint],
    );
    assert.equal(
      state
        .signingKey(participant, participantSigning.fingerprint, 39n)
        ?.equals(participantSigning.publicKey),
      true,
    );
    assert.equal(state.signingKey(participant, participantSigning.fingerprint, 40n), undefined);

    state = state.apply(
      signTopologyTransaction(tx(4, memberKeys(participant, participantNs, [k2]), "remove"), participantNs),
      50n,
    );
    assert.equal(state.isMember(participant, 49n), true);
    assert.equal(state.isMember(participant, 50n), false);
    assert.deepEqual(state.signingKeysOf(participant, 50n), []);
  });

  test("serials must increase by one, so old transactions cannot be replayed", () => {
    const state = base().apply(hosting(), 30n);
    assert.throws(() => state.apply(hosting(), 40n), rejectsWith("SERIAL_MISMATCH"));
    const skip = signTopologyTransaction(
      tx(3, { type: "PartyToParticipant", party: alice, participant }, "remove"),
      participantNs,
    );
    assert.throws(() => state.apply(skip, 40n), rejectsWith("SERIAL_MISMATCH"));
    const remove = signTopologyTransaction(
      tx(2, { type: "PartyToParticipant", party: alice, participant }, "remove"),
      participantNs,
    );
    const removed = state.apply(remove, 40n);
    assert.equal(removed.participantOf(alice, 40n), undefined);
    assert.equal(removed.participantOf(alice, 39n), participant);
    assert.throws(
      () => removed.apply(hosting(), 50n),
      rejectsWith("SERIAL_MISMATCH"),
      "re-adding needs serial 3",
    );
  });

  test("parameters and mediators are the synchronizer's to set", () => {
    let state = base();
    assert.deepEqual(state.parameters(0n), DEFAULT_SYNCHRONIZER_PARAMETERS);
    const params = {
      ledgerTimeRecordTimeToleranceMs: 5_000,
      participantResponseTimeoutMs: 1_000,
      maxDeduplicationDurationMs: 60_000,
    };
    state = state.apply(
      signTopologyTransaction(tx(1, { type: "SynchronizerParameters", ...params }), synchronizerNs),
      30n,
    );
    assert.deepEqual(state.parameters(30n), params);
    assert.deepEqual(state.parameters(29n), DEFAULT_SYNCHRONIZER_PARAMETERS);

    const mediators = signTopologyTransaction(
      tx(1, { type: "MediatorDomainState", mediators: [mediator] }),
      synchronizerNs,
    );
    assert.throws(
      () => state.apply(mediators, 40n),
      rejectsWith("INVALID_TOPOLOGY_MAPPING"),
      "mediator not a member yet",
    );
    state = state.apply(
      signTopologyTransaction(tx(1, memberKeys(mediator, mediatorNs, [mediatorNs])), mediatorNs),
      40n,
    );
    state = state.apply(mediators, 41n);
    assert.deepEqual(state.mediators(40n), []);
    assert.deepEqual(state.mediators(41n), [mediator]);
  });

  test("replaying the accepted transactions yields the same state; apply on an old state branches", () => {
    const before = base();
    const state = before.apply(hosting(), 30n);
    const replayed = TopologyState.replay(synchronizerNs.fingerprint, state.transactions());
    assert.equal(replayed.participantOf(alice, 30n), participant);
    assert.equal(state.transactions(25n).length, 2);
    const other = before.apply(
      signTopologyTransaction(
        tx(1, {
          type: "PartyToParticipant",
          party: uniqueIdentifier("bob", participantNs.fingerprint),
          participant,
        }),
        participantNs,
      ),
      30n,
    );
    assert.equal(other.participantOf(alice, 30n), undefined);
    assert.equal(state.participantOf(alice, 30n), participant);
    assert.throws(() => state.apply(hosting(), 29n), rejectsWith("INTERNAL_ERROR"), "out of order");
  });

  test("serialization is canonical and round-trips through the wire form", () => {
    const signed = hosting();
    assert.equal(
      signed.bytes.toString(),
      `{"mapping":{"participant":"${participant}","party":"${alice}","type":"PartyToParticipant"},"operation":"add","serial":1}`,
    );
    const back = signedTopologyFromParts(signedTopologyToParts(signed));
    assert.deepEqual(back.transaction, signed.transaction);
    assert.equal(back.hash, signed.hash);
    const spaced = Buffer.from(JSON.stringify(JSON.parse(signed.bytes.toString()), null, 1));
    assert.throws(() => parseTopologyTransaction(spaced), rejectsWith("INVALID_TOPOLOGY_MAPPING"));
    assert.throws(
      () =>
        serializeTopologyTransaction({
          operation: "add",
          serial: 0,
          mapping: { type: "MediatorDomainState", mediators: [] },
        }),
      rejectsWith("INVALID_TOPOLOGY_MAPPING"),
    );
    assert.throws(
      () =>
        parseTopologyTransaction(
          Buffer.from(
            '{"mapping":{"mediators":["x"],"type":"MediatorDomainState"},"operation":"add","serial":1}',
          ),
        ),
      rejectsWith("INVALID_TOPOLOGY_MAPPING"),
    );
  });
});
