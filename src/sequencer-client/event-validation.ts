import { LockstepError } from "../common/errors.ts";
import { type Bytes, toHex } from "../common/hash.ts";
import {
  contentHash,
  type EventPosition,
  eventSigningBytes,
  nextChainHash,
  positionOf,
  type SequencedEvent,
} from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import { fingerprint, verify } from "../crypto/keys.ts";
import type { TopologyState } from "../crypto/topology.ts";

/**
 * The checks a member runs on what its sequencer delivers (docs/design.md §2 "Sequenced events"). Every
 * failure is fatal for the connection: the caller must not retry, but log the error and put its
 * remedy in the node's status. Pure functions; the subscription loop is built on them:
 *
 *   reconnect from stored S (inclusive) → validateResubscription(S, first) → prior = S
 *   each later event E                  → prior = validateNext(prior, E, keys); store E; process E
 */

/** The sequencer's signing keys valid for the event (sequencerKeysAt); one suffices. */
export type SequencerKeys = Bytes | readonly Bytes[];

/**
 * The sequencer's signing keys for an event at `timestamp`: those in force just before it, so a
 * topology event that rotates them is checked with the old ones, and an event after a revocation
 * is refused if signed with the revoked key. A replay judges each event with the same keys as the
 * first time: what was signed before a revocation stays valid (docs/keys.md).
 */
export function sequencerKeysAt(topology: TopologyState, sequencerId: string, timestamp: Micros): Buffer[] {
  return topology.signingKeysOf(sequencerId, timestamp - 1n).map((k) => k.publicKey);
}

/**
 * The first event of a resubscription must be the event the member stored last, in content and
 * chain hash; anything else means the sequencer's history is not the one this member saw.
 * With `sequencerKeys`, an event that the sequencer did not sign is refused as such first, so a
 * corrupted or forged message is not mistaken for a fork.
 */
export function validateResubscription(
  stored: SequencedEvent,
  firstReceived: SequencedEvent,
  sequencerKeys?: SequencerKeys,
): void {
  if (sequencerKeys !== undefined) verifySignature(firstReceived, sequencerKeys);
  const storedContent = contentHash(stored);
  const receivedContent = contentHash(firstReceived);
  const sameContent = storedContent.equals(receivedContent);
  if (sameContent && stored.chainHash.equals(firstReceived.chainHash)) return;
  throw new LockstepError("SEQUENCER_FORK_DETECTED", {
    timestamp: stored.timestamp,
    receivedTimestamp: firstReceived.timestamp,
    differs: sameContent ? "chain hash" : "content",
    storedHash: toHex(sameContent ? stored.chainHash : storedContent),
    receivedHash: toHex(sameContent ? firstReceived.chainHash : receivedContent),
  });
}

/**
 * Checks `event` as the successor of `prior` (null before the member's first event) and returns
 * the new position. Order of checks: signature first (an unsigned event proves nothing about the
 * sequencer), then previousTimestamp, increasing timestamp, chain hash.
 */
export function validateNext(
  prior: EventPosition | null,
  event: SequencedEvent,
  sequencerKeys: SequencerKeys,
): EventPosition {
  verifySignature(event, sequencerKeys);
  const expectedPrevious = prior?.timestamp ?? null;
  if (event.previousTimestamp !== expectedPrevious) {
    throw new LockstepError("PREVIOUS_TIMESTAMP_MISMATCH", {
      timestamp: event.timestamp,
      previousTimestamp: event.previousTimestamp ?? "none",
      expected: expectedPrevious ?? "none (first event)",
    });
  }
  if (prior !== null && event.timestamp <= prior.timestamp) {
    throw new LockstepError("SEQUENCER_TIMESTAMP_NOT_INCREASING", {
      timestamp: event.timestamp,
      priorTimestamp: prior.timestamp,
    });
  }
  const expectedChain = nextChainHash(prior?.chainHash ?? null, contentHash(event));
  if (!expectedChain.equals(event.chainHash)) {
    throw new LockstepError("SEQUENCER_CHAIN_HASH_MISMATCH", {
      timestamp: event.timestamp,
      expectedHash: toHex(expectedChain),
      receivedHash: toHex(event.chainHash),
    });
  }
  return positionOf(event);
}

/** Throws SEQUENCER_SIGNATURE_INVALID unless one of the keys verifies the event's signature. */
export function verifySignature(event: SequencedEvent, sequencerKeys: SequencerKeys): void {
  const keys = isKeyList(sequencerKeys) ? sequencerKeys : [sequencerKeys];
  const bytes = eventSigningBytes(event);
  if (keys.some((key) => verify(key, bytes, event.signature))) return;
  throw new LockstepError("SEQUENCER_SIGNATURE_INVALID", {
    timestamp: event.timestamp,
    keys: keys.length === 0 ? "none in topology" : keys.map((k) => fingerprint(k)).join(", "),
  });
}

function isKeyList(keys: SequencerKeys): keys is readonly Bytes[] {
  return Array.isArray(keys);
}
