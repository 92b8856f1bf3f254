import { create } from "@bufbuild/protobuf";
import {
  DeliverErrorSchema,
  type SequencedEvent as SequencedEventProto,
  SequencedEventSchema,
} from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { type Bytes, hashFields, sha256 } from "./hash.ts";
import type { Micros } from "./time.ts";

/**
 * The sequenced event format, shared by the sequencer (which produces it) and the sequencer client
 * (which validates it). docs/design.md §2 "Sequenced events".
 *
 * The sequencer sequences a submission once (one timestamp) and delivers one *view* per member:
 * `previousTimestamp` and `chainHash` are the receiving member's, so that each member's events form
 * its own hash chain. Everything else is the same in every view.
 */
export interface DeliverErrorInfo {
  readonly messageId: string;
  readonly reason: string;
  /** An error code of the registry (error-codes.ts). */
  readonly code: string;
}

/** What the sequencer decides once per submission, before any member's view. */
export interface SequencedSubmission {
  readonly timestamp: Micros;
  readonly sender: string;
  readonly messageId: string;
  readonly recipients: readonly string[];
  /** A serialized EventPayload (sequencer.proto); empty for time proofs and deliver errors. */
  readonly payload: Uint8Array;
  /** Set when the submission is rejected; the event then goes to the sender only. */
  readonly deliverError?: DeliverErrorInfo;
}

export interface SequencedEvent extends SequencedSubmission {
  /** The timestamp of this member's previous event; null for its first. */
  readonly previousTimestamp: Micros | null;
  /** SHA-256(member's previous chainHash ‖ contentHash), see nextChainHash. */
  readonly chainHash: Buffer;
  /** The sequencer's Ed25519 signature over `contentHash ‖ chainHash` (eventSigningBytes). */
  readonly signature: Buffer;
}

/** Where a member's chain stands: its last event's timestamp and chain hash. */
export interface EventPosition {
  readonly timestamp: Micros;
  readonly chainHash: Buffer;
}

/** The chain hash "before the first event". */
export const GENESIS_CHAIN_HASH: Buffer = Buffer.alloc(32);

const CONTENT_HASH_TAG = "lockstep/sequenced-event/v2";
const SUBMISSION_HASH_TAG = "lockstep/sequenced-submission/v1";

/** 8 bytes big-endian two's complement, the encoding of every int64 that is hashed or signed. */
export function int64Bytes(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(value);
  return b;
}

/**
 * Hash of what every member's view of an event shares (all but previousTimestamp, chainHash and
 * signature), so that the sequencer hashes a submission's payload once, not once per recipient.
 * Fields are length-prefixed (hashFields), and optional parts carry a presence marker, so no two
 * different events share an encoding.
 */
export function submissionHash(event: SequencedSubmission): Buffer {
  const e = event.deliverError;
  return hashFields(
    SUBMISSION_HASH_TAG,
    int64Bytes(event.timestamp),
    event.sender,
    event.messageId,
    int64Bytes(BigInt(event.recipients.length)),
    ...event.recipients,
    event.payload,
    ...(e ? ["deliver-error", e.messageId, e.reason, e.code] : ["deliver"]),
  );
}

/**
 * Hash of every field of the member's view except chainHash and signature: its previousTimestamp
 * and the submissionHash (which may be given when already computed for another view).
 */
export function contentHash(
  event: Omit<SequencedEvent, "chainHash" | "signature">,
  shared: Buffer = submissionHash(event),
): Buffer {
  return hashFields(
    CONTENT_HASH_TAG,
    event.previousTimestamp === null ? Buffer.alloc(0) : int64Bytes(event.previousTimestamp),
    shared,
  );
}

/** SHA-256(prev ‖ content), with 32 zero bytes as `prev` before a member's first event. */
export function nextChainHash(prevChainHash: Bytes | null, content: Bytes): Buffer {
  return sha256(prevChainHash ?? GENESIS_CHAIN_HASH, content);
}

/** The 64 bytes the sequencer signs: `contentHash ‖ chainHash`. */
export function eventSigningBytes(event: Omit<SequencedEvent, "signature">): Buffer {
  return Buffer.concat([contentHash(event), event.chainHash]);
}

/**
 * Who receives an event: its recipients plus the sender (a receipt, so that the sender learns its
 * message was sequenced and when), each once, in recipients order; a deliver error or a time proof
 * (no recipients) goes to the sender only.
 */
export function membersToDeliver(event: SequencedSubmission): string[] {
  if (event.deliverError) return [event.sender];
  return [...new Set([...event.recipients, event.sender])];
}

/** A member's view before the sequencer signs it, with the bytes to sign (eventSigningBytes). */
export interface UnsignedView {
  readonly view: Omit<SequencedEvent, "signature">;
  readonly signingBytes: Buffer;
}

/**
 * The view of `event` delivered to `member`, chained onto the member's previous event, not yet
 * signed: the chain must be built in order, the signatures need not (the writer signs a batch's
 * views in parallel).
 */
export function unsignedDeliveryFor(
  member: string,
  event: SequencedSubmission,
  memberPrev: EventPosition | null,
  shared: Buffer = submissionHash(event),
): UnsignedView {
  if (!membersToDeliver(event).includes(member)) {
    throw new TypeError(`event ${event.timestamp} from ${event.sender} is not addressed to ${member}`);
  }
  if (memberPrev && memberPrev.timestamp >= event.timestamp) {
    throw new TypeError(
      `event ${event.timestamp} for ${member} is not after its previous ${memberPrev.timestamp}`,
    );
  }
  // Views of one event share its recipients and payload (never mutated).
  const content = {
    timestamp: event.timestamp,
    previousTimestamp: memberPrev?.timestamp ?? null,
    sender: event.sender,
    messageId: event.messageId,
    recipients: event.recipients,
    payload: event.payload,
    ...(event.deliverError ? { deliverError: event.deliverError } : {}),
  };
  const hash = contentHash(content, shared);
  const chainHash = nextChainHash(memberPrev?.chainHash ?? null, hash);
  return { view: { ...content, chainHash }, signingBytes: Buffer.concat([hash, chainHash]) };
}

/**
 * The view of `event` delivered to `member`, chained onto the member's previous event and signed
 * with `sign` (the sequencer's signing key; a function so that this module stays free of key
 * handling, e.g. `(b) => sign(key.privateKey, b)` with src/crypto/keys.ts).
 */
export function deliveryFor(
  member: string,
  event: SequencedSubmission,
  memberPrev: EventPosition | null,
  sign: (bytes: Buffer) => Buffer,
): SequencedEvent {
  const { view, signingBytes } = unsignedDeliveryFor(member, event, memberPrev);
  return { ...view, signature: sign(signingBytes) };
}

export function positionOf(event: SequencedEvent): EventPosition {
  return { timestamp: event.timestamp, chainHash: event.chainHash };
}

/** A sequenced event as both the sequencer's and the members' tables store it (snake_case columns). */
export interface SequencedEventRow {
  timestamp: bigint;
  previous_timestamp: bigint | null;
  sender: string;
  message_id: string;
  recipients: string[];
  payload: Buffer;
  deliver_error: DeliverErrorInfo | null;
  chain_hash: Buffer;
  signature: Buffer;
}

export function eventFromRow(row: SequencedEventRow): SequencedEvent {
  const e = row.deliver_error;
  return {
    timestamp: row.timestamp,
    previousTimestamp: row.previous_timestamp,
    sender: row.sender,
    messageId: row.message_id,
    recipients: row.recipients,
    payload: row.payload,
    ...(e ? { deliverError: { messageId: e.messageId, reason: e.reason, code: e.code } } : {}),
    chainHash: row.chain_hash,
    signature: row.signature,
  };
}

export function eventToProto(event: SequencedEvent): SequencedEventProto {
  return create(SequencedEventSchema, {
    timestamp: event.timestamp,
    previousTimestamp: event.previousTimestamp ?? undefined,
    sender: event.sender,
    messageId: event.messageId,
    recipients: [...event.recipients],
    payload: event.payload,
    deliverError: event.deliverError ? create(DeliverErrorSchema, event.deliverError) : undefined,
    chainHash: event.chainHash,
    signature: event.signature,
  });
}

export function eventFromProto(proto: SequencedEventProto): SequencedEvent {
  const e = proto.deliverError;
  return {
    timestamp: proto.timestamp,
    previousTimestamp: proto.previousTimestamp ?? null,
    sender: proto.sender,
    messageId: proto.messageId,
    recipients: [...proto.recipients],
    payload: proto.payload,
    ...(e ? { deliverError: { messageId: e.messageId, reason: e.reason, code: e.code } } : {}),
    chainHash: Buffer.from(proto.chainHash),
    signature: Buffer.from(proto.signature),
  };
}
