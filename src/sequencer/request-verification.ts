import { fromBinary } from "@bufbuild/protobuf";
import { LockstepError } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";
import { verify, verifyAsync } from "../crypto/keys.ts";
import type { TopologyState } from "../crypto/topology.ts";
import {
  EventPayloadSchema,
  type Submission,
  SubmissionSchema,
} from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import type { SubmissionItem } from "./sequencer-writer.ts";

/**
 * Pure checks of member requests (Send, Subscribe, Acknowledge): who signed, and whether the
 * request is well formed. They run before anything is stored, so a refused request leaves no trace.
 */

export type MemberRequestKind = "send" | "subscribe" | "acknowledge";

export interface SignedMemberRequest {
  readonly request: MemberRequestKind;
  readonly member: string;
  readonly fingerprint: string;
  readonly digest: Buffer;
  readonly signature: Uint8Array;
}

/** The request must be signed by one of the member's signing keys in topology at `at`. */
export function verifyMemberSignature(topology: TopologyState, at: Micros, req: SignedMemberRequest): void {
  const key = topology.signingKey(req.member, req.fingerprint, at);
  checkSignature(req, key, key !== undefined && verify(key, req.digest, req.signature));
}

/**
 * verifyMemberSignature on the libuv thread pool (keys.ts verifyAsync): Send and SendBatch verify
 * every submission, and so the event loop stays free and a batch's verifications use every core.
 */
export async function verifyMemberSignatureAsync(
  topology: TopologyState,
  at: Micros,
  req: SignedMemberRequest,
): Promise<void> {
  const key = topology.signingKey(req.member, req.fingerprint, at);
  checkSignature(req, key, key !== undefined && (await verifyAsync(key, req.digest, req.signature)));
}

function checkSignature(req: SignedMemberRequest, key: Uint8Array | undefined, valid: boolean): void {
  const reason = !key
    ? "the key is not a signing key of the member in the sequencer's topology"
    : !valid
      ? "wrong signature"
      : undefined;
  if (reason) {
    throw new LockstepError("SEQUENCER_REQUEST_SIGNATURE_INVALID", {
      request: req.request,
      member: req.member,
      fingerprint: req.fingerprint || "(none)",
      reason,
    });
  }
}

export function parseSubmission(bytes: Uint8Array): Submission {
  try {
    return fromBinary(SubmissionSchema, bytes);
  } catch (error) {
    throw malformed("(unknown)", `the submission does not parse: ${(error as Error).message}`);
  }
}

/** A SubmissionItem for the writer, or the error that refuses the submission. */
export function validateSubmission(
  submission: Submission,
  isMember: (member: string) => boolean,
): SubmissionItem {
  const sender = submission.sender;
  if (submission.messageId === "") throw malformed(sender, "message_id is empty");
  const maxSequencingTime = submission.maxSequencingTime > 0n ? submission.maxSequencingTime : null;
  if (submission.timeProof) {
    return {
      kind: "submission",
      sender,
      messageId: submission.messageId,
      recipients: [],
      payload: new Uint8Array(0),
      maxSequencingTime,
      timeProof: true,
    };
  }
  if (submission.recipients.length === 0) throw malformed(sender, "recipients are empty");
  if (new Set(submission.recipients).size !== submission.recipients.length) {
    throw malformed(sender, "a recipient is listed twice");
  }
  const unknown = submission.recipients.filter((r) => !isMember(r));
  if (unknown.length > 0) {
    throw new LockstepError("SEQUENCER_UNKNOWN_RECIPIENTS", { recipients: unknown.join(", ") });
  }
  // Members may only send protocol messages: topology reaches members through the sequencer alone,
  // else a member could make others' topology state differ from the sequencer's.
  let contentCase: string | undefined;
  try {
    contentCase = fromBinary(EventPayloadSchema, submission.payload).content.case;
  } catch (error) {
    throw malformed(sender, `the payload is not an EventPayload: ${(error as Error).message}`);
  }
  if (contentCase !== "message") throw malformed(sender, "the payload must be an EventPayload message");
  return {
    kind: "submission",
    sender,
    messageId: submission.messageId,
    recipients: submission.recipients,
    payload: submission.payload,
    maxSequencingTime,
    timeProof: false,
  };
}

/** Subscription tokens are valid this long either side of the sequencer's clock. */
export const TOKEN_WINDOW_MICROS = 5n * 60n * 1_000_000n;

export function checkIssuedAt(
  member: string,
  issuedAt: Micros,
  now: Micros,
  window = TOKEN_WINDOW_MICROS,
): void {
  const skew = issuedAt > now ? issuedAt - now : now - issuedAt;
  if (skew > window) {
    throw new LockstepError("SEQUENCER_REQUEST_SIGNATURE_INVALID", {
      request: "subscribe",
      member,
      fingerprint: "-",
      reason: `the token was issued at ${issuedAt}, more than ${window / 1_000_000n}s from the sequencer's time ${now}`,
    });
  }
}

export function malformed(member: string, reason: string): LockstepError {
  return new LockstepError("SEQUENCER_SUBMISSION_REQUEST_MALFORMED", { member, reason });
}
