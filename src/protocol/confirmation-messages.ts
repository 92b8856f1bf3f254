import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { anyIs, anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import type { Bytes } from "../common/hash.ts";
import { int64Bytes } from "../common/sequenced-event.ts";
import type { KeyPair } from "../crypto/keys.ts";
import { sign, signingDigest } from "../crypto/keys.ts";
import {
  type ConfirmationRequest,
  ConfirmationRequestSchema,
  type ConfirmationResponse,
  ConfirmationResponseSchema,
  type Verdict,
  VerdictSchema,
} from "../gen/lockstep/protocol/v1/confirmation_pb.ts";
import { EventPayloadSchema } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";

/**
 * The confirmation protocol's messages (proto/lockstep/protocol/v1/confirmation.proto) as they
 * travel in a sequencer EventPayload, and what participants sign. Pure: shared by the mediator and
 * the participants, so that both sides encode and digest identically.
 */

export type ProtocolMessage =
  | { readonly kind: "request"; readonly message: ConfirmationRequest }
  | { readonly kind: "response"; readonly message: ConfirmationResponse }
  | { readonly kind: "verdict"; readonly message: Verdict };

/** A serialized EventPayload carrying one confirmation-protocol message (the `payload` to send). */
export function protocolPayload(message: ProtocolMessage): Uint8Array {
  const any =
    message.kind === "request"
      ? anyPack(ConfirmationRequestSchema, message.message)
      : message.kind === "response"
        ? anyPack(ConfirmationResponseSchema, message.message)
        : anyPack(VerdictSchema, message.message);
  return toBinary(
    EventPayloadSchema,
    create(EventPayloadSchema, { content: { case: "message", value: any } }),
  );
}

/**
 * The confirmation-protocol message in a serialized EventPayload; undefined for anything else
 * (topology, time proofs, other kinds' messages) and for bytes that do not parse, which a
 * receiver must skip rather than fail on: the sequencer delivers whatever a member sent.
 */
export function parseProtocolMessage(payload: Bytes): ProtocolMessage | undefined {
  if (payload.length === 0) return undefined;
  try {
    const envelope = fromBinary(EventPayloadSchema, payload);
    if (envelope.content.case !== "message") return undefined;
    const any = envelope.content.value;
    if (anyIs(any, ConfirmationRequestSchema)) {
      const message = anyUnpack(any, ConfirmationRequestSchema);
      return message && { kind: "request", message };
    }
    if (anyIs(any, ConfirmationResponseSchema)) {
      const message = anyUnpack(any, ConfirmationResponseSchema);
      return message && { kind: "response", message };
    }
    if (anyIs(any, VerdictSchema)) {
      const message = anyUnpack(any, VerdictSchema);
      return message && { kind: "verdict", message };
    }
  } catch {
    // Not a protocol message we understand.
  }
  return undefined;
}

/** What a participant's signature on a ConfirmationResponse covers (every field but the signature). */
export function confirmationResponseDigest(
  response: Pick<
    ConfirmationResponse,
    "requestId" | "rootHash" | "participant" | "confirmingParties" | "verdict"
  >,
): Buffer {
  const verdict = response.verdict;
  const verdictFields =
    verdict.case === "approve"
      ? ["approve"]
      : verdict.case === "reject"
        ? ["reject", verdict.value.code, verdict.value.reason, verdict.value.participant]
        : ["none"];
  return signingDigest(
    "confirmation-response",
    int64Bytes(response.requestId),
    response.rootHash,
    response.participant,
    int64Bytes(BigInt(response.confirmingParties.length)),
    ...response.confirmingParties,
    ...verdictFields,
  );
}

/** Builds a response and signs it with the participant's signing key (any signature in `init` is replaced). */
export function signConfirmationResponse(
  init: MessageInitShape<typeof ConfirmationResponseSchema>,
  signingKey: KeyPair,
): ConfirmationResponse {
  const response = create(ConfirmationResponseSchema, init);
  response.signature = sign(signingKey.privateKey, confirmationResponseDigest(response));
  response.signingKeyFingerprint = signingKey.fingerprint;
  return response;
}
