/**
 * Fixtures for the mediator's aggregation tests: a synchronizer topology with two participants
 * (p1 hosts alice and carol, p2 hosts bob; dave is never hosted), a 2 s response timeout, and
 * builders for request and response events.
 */
import { create } from "@bufbuild/protobuf";
import { uniqueIdentifier } from "../../src/common/ids.ts";
import type { Micros } from "../../src/common/time.ts";
import { generateKeyPair, type KeyPair } from "../../src/crypto/keys.ts";
import {
  memberKeys,
  signTopologyTransaction,
  type TopologyMapping,
  TopologyState,
} from "../../src/crypto/topology.ts";
import { ConfirmationRequestSchema } from "../../src/gen/lockstep/protocol/v1/confirmation_pb.ts";
import type { MediatorInput } from "../../src/mediator/confirmation-aggregator.ts";
import { signConfirmationResponse } from "../../src/protocol/confirmation-messages.ts";

// A synchronizer with two participants: p1 hosts alice and carol, p2 hosts bob; timeout 2 s.
export const syncNs = generateKeyPair("namespace");
export const ns1 = generateKeyPair("namespace");
export const ns2 = generateKeyPair("namespace");
export const sig1 = generateKeyPair("signing");
export const sig2 = generateKeyPair("signing");
export const p1 = uniqueIdentifier("p1", ns1.fingerprint);
export const p2 = uniqueIdentifier("p2", ns2.fingerprint);
export const alice = uniqueIdentifier("alice", ns1.fingerprint);
export const carol = uniqueIdentifier("carol", ns1.fingerprint);
export const bob = uniqueIdentifier("bob", ns2.fingerprint);
export const dave = uniqueIdentifier("dave", ns2.fingerprint); // never hosted
export const T0 = 1_000_000_000n;
export const TIMEOUT = 2_000_000n;
export const ROOT = Buffer.alloc(32, 7);

export function signed(mapping: TopologyMapping, key: KeyPair, serial = 1) {
  return signTopologyTransaction({ operation: "add", serial, mapping }, key);
}

export const topology = [
  signed(memberKeys(p1, ns1, [sig1]), ns1),
  signed(memberKeys(p2, ns2, [sig2]), ns2),
  signed({ type: "PartyToParticipant", party: alice, participant: p1 }, ns1),
  signed({ type: "PartyToParticipant", party: carol, participant: p1 }, ns1),
  signed({ type: "PartyToParticipant", party: bob, participant: p2 }, ns2),
  signed(
    {
      type: "SynchronizerParameters",
      ledgerTimeRecordTimeToleranceMs: 60_000,
      participantResponseTimeoutMs: 2_000,
      maxDeduplicationDurationMs: 60_000,
    },
    syncNs,
  ),
].reduce((state, tx, i) => state.apply(tx, BigInt(i + 1)), TopologyState.empty(syncNs.fingerprint));

export function request(
  at: Micros,
  confirming = [alice, bob],
  extra: { sender?: string; root?: Buffer } = {},
) {
  const message = create(ConfirmationRequestSchema, {
    rootHash: extra.root ?? ROOT,
    informees: [...new Set([alice, bob, carol, ...confirming])],
    confirmingParties: confirming,
    submittingParticipant: p1,
    ledgerTime: at,
    transaction: Buffer.from("opaque"),
  });
  return { timestamp: at, sender: extra.sender ?? p1, message: { kind: "request", message } } as const;
}

export function response(
  at: Micros,
  requestId: Micros,
  sender: string,
  parties: string[],
  verdict: { reject?: string } = {},
  tweak: { key?: KeyPair; root?: Buffer; participant?: string } = {},
): MediatorInput {
  const message = signConfirmationResponse(
    {
      requestId,
      rootHash: tweak.root ?? ROOT,
      participant: tweak.participant ?? sender,
      confirmingParties: parties,
      verdict:
        verdict.reject === undefined
          ? { case: "approve", value: {} }
          : { case: "reject", value: { code: "CONTRACT_NOT_ACTIVE", reason: verdict.reject } },
    },
    tweak.key ?? (sender === p1 ? sig1 : sig2),
  );
  return { timestamp: at, sender, message: { kind: "response", message } };
}

export const tick = (at: Micros): MediatorInput => ({ timestamp: at, sender: p2 });
