import { randomBytes } from "node:crypto";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { uniqueIdentifier } from "../common/ids.ts";
import type { Micros } from "../common/time.ts";
import {
  acknowledgementDigest,
  type KeyPair,
  sign,
  submissionBatchDigest,
  submissionDigest,
  subscriptionDigest,
} from "../crypto/keys.ts";
import {
  memberKeys,
  type SignedTopologyTransaction,
  signedTopologyToParts,
  signTopologyTransaction,
} from "../crypto/topology.ts";
import {
  type AcknowledgeRequestSchema,
  type RegisterMemberRequestSchema,
  type SendRequestSchema,
  type SignedSubmissionsSchema,
  SubmissionSchema,
  type SubscribeRequestSchema,
} from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";

/**
 * The signed requests a member sends its sequencer, as sequencer.proto defines the signed bytes.
 * Pure apart from randomness (nonces).
 */

/** Canton style: the member lives in its own namespace, `name::fingerprint(namespace key)`. */
export function memberIdFor(memberName: string, namespaceKey: KeyPair): string {
  return uniqueIdentifier(memberName, namespaceKey.fingerprint);
}

/** The self-signed MemberKeys (serial 1, add) that onboards the member with its signing key. */
export function memberRegistration(
  member: string,
  namespaceKey: KeyPair,
  signingKey: KeyPair,
): SignedTopologyTransaction {
  return signTopologyTransaction(
    { operation: "add", serial: 1, mapping: memberKeys(member, namespaceKey, [signingKey]) },
    namespaceKey,
  );
}

export function registerMemberRequest(
  registration: SignedTopologyTransaction,
): MessageInitShape<typeof RegisterMemberRequestSchema> {
  return { memberKeys: signedTopologyToParts(registration) };
}

export interface SubmissionFields {
  sender: string;
  messageId: string;
  recipients: readonly string[];
  payload: Uint8Array;
  maxSequencingTime: Micros;
  writerEpoch: bigint;
  /** The activation at writerEpoch (NodeIdentity.writerActivation); signed with the submission bytes. */
  writerActivation?: string;
  timeProof?: boolean;
}

/** The serialized Submission: the bytes that are signed and sent. */
export function submissionBytes(fields: SubmissionFields): Uint8Array {
  return toBinary(
    SubmissionSchema,
    create(SubmissionSchema, {
      sender: fields.sender,
      messageId: fields.messageId,
      recipients: [...fields.recipients],
      payload: fields.payload,
      maxSequencingTime: fields.maxSequencingTime,
      writerEpoch: fields.writerEpoch,
      writerActivation: fields.writerActivation ?? "",
      timeProof: fields.timeProof ?? false,
    }),
  );
}

/** Serializes the Submission and signs exactly those bytes. */
export function sendRequest(
  fields: SubmissionFields,
  signingKey: KeyPair,
): MessageInitShape<typeof SendRequestSchema> {
  return signedSend(submissionBytes(fields), signingKey);
}

/** A Send of already serialized Submission bytes. */
export function signedSend(
  submission: Uint8Array,
  signingKey: KeyPair,
): MessageInitShape<typeof SendRequestSchema> {
  return {
    submission,
    signature: sign(signingKey.privateKey, submissionDigest(submission)),
    signingKeyFingerprint: signingKey.fingerprint,
  };
}

/** One sender's serialized Submissions under one signature (SendBatchRequest.signed). */
export function signedSubmissions(
  sender: string,
  submissions: readonly Uint8Array[],
  signingKey: KeyPair,
): MessageInitShape<typeof SignedSubmissionsSchema> {
  return {
    sender,
    submissions: [...submissions],
    signature: sign(signingKey.privateKey, submissionBatchDigest(sender, submissions)),
    signingKeyFingerprint: signingKey.fingerprint,
  };
}

export function subscribeRequest(
  fields: {
    member: string;
    fromTimestamp: Micros | null;
    writerEpoch: bigint;
    writerActivation?: string;
    issuedAt: Micros;
  },
  signingKey: KeyPair,
): MessageInitShape<typeof SubscribeRequestSchema> {
  const nonce = randomBytes(16);
  const writerActivation = fields.writerActivation ?? "";
  const digest = subscriptionDigest({ ...fields, writerActivation, nonce });
  return {
    member: fields.member,
    fromTimestamp: fields.fromTimestamp ?? undefined,
    writerEpoch: fields.writerEpoch,
    writerActivation,
    issuedAt: fields.issuedAt,
    nonce,
    signature: sign(signingKey.privateKey, digest),
    signingKeyFingerprint: signingKey.fingerprint,
  };
}

export function acknowledgeRequest(
  fields: { member: string; timestamp: Micros; writerEpoch: bigint; writerActivation?: string },
  signingKey: KeyPair,
): MessageInitShape<typeof AcknowledgeRequestSchema> {
  const signed = { ...fields, writerActivation: fields.writerActivation ?? "" };
  return {
    ...signed,
    signature: sign(signingKey.privateKey, acknowledgementDigest(signed)),
    signingKeyFingerprint: signingKey.fingerprint,
  };
}
