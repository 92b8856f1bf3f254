import { LockstepError, toLockstepError } from "../common/errors.ts";
import type { Micros } from "../common/time.ts";
import { submissionBatchDigest, submissionDigest } from "../crypto/keys.ts";
import type { Submission } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { revokedRefusal } from "./member-admissions.ts";
import {
  malformed,
  parseSubmission,
  validateSubmission,
  verifyMemberSignatureAsync,
} from "./request-verification.ts";
import type { SequencerWriter, SubmissionItem } from "./sequencer-writer.ts";
import type { WriterEpochs } from "./writer-epochs.ts";

export interface SendRequestFields {
  submission: Uint8Array;
  signature: Uint8Array;
  signingKeyFingerprint: string;
}

/** SendBatchRequest.signed: one sender's submissions under one signature. */
export interface SignedSubmissionsFields {
  sender: string;
  submissions: readonly Uint8Array[];
  signature: Uint8Array;
  signingKeyFingerprint: string;
}

/** Sequencer time at which member requests are checked: topology at the head. */
export function checkTime(writer: SequencerWriter): Micros {
  return writer.head ?? 0n;
}

/** The member's registration timestamp, or SEQUENCER_SENDER_UNKNOWN. */
export function requireMember(writer: SequencerWriter, member: string): Micros {
  const registeredAt = writer.registeredAt(member);
  if (registeredAt === undefined) throw new LockstepError("SEQUENCER_SENDER_UNKNOWN", { member });
  return registeredAt;
}

/** A revoked member's own (authenticated) requests are refused: SEQUENCER_MEMBER_REVOKED. */
export function requireNotRevoked(writer: SequencerWriter, member: string): void {
  const revoked = revokedRefusal(writer.admission(member));
  if (revoked) throw revoked;
}

/**
 * Send and SendBatch (docs/design.md §2): authenticates each submission's sender, validates it, fences
 * stale writer epochs, and hands what is accepted to the writer. Nothing refused is stored.
 */
export class SubmissionIntake {
  constructor(
    private readonly writer: SequencerWriter,
    private readonly epochs: WriterEpochs,
  ) {}

  /** Resolves once the submission is sequenced durably (its outcome arrives as an event). */
  async send(request: SendRequestFields): Promise<Micros> {
    return this.writer.submit(await this.checkSend(request));
  }

  /**
   * Send for each request, each checked on its own exactly as by send(); one outcome per request,
   * in order (its timestamp, or the error send() would have thrown), so a refused request does not
   * affect the others. The accepted ones reach the writer together and share its next commit.
   */
  async sendBatch(requests: readonly SendRequestFields[]): Promise<(Micros | LockstepError)[]> {
    return this.sequenceChecked(
      await Promise.all(requests.map((request) => this.checkSend(request).catch(toLockstepError))),
    );
  }

  /**
   * One sender's submissions under one signature (verified once): a bad signature or an unknown
   * sender refuses them all; otherwise each is checked on its own as by send() (a submission that
   * names another sender is malformed), with one outcome per submission as sendBatch.
   */
  async sendSigned(batch: SignedSubmissionsFields): Promise<(Micros | LockstepError)[]> {
    try {
      requireMember(this.writer, batch.sender);
      await verifyMemberSignatureAsync(this.writer.topology, checkTime(this.writer), {
        request: "send",
        member: batch.sender,
        fingerprint: batch.signingKeyFingerprint,
        digest: submissionBatchDigest(batch.sender, batch.submissions),
        signature: batch.signature,
      });
    } catch (error) {
      const refusal = toLockstepError(error);
      return batch.submissions.map(() => refusal);
    }
    const check = async (bytes: Uint8Array) => {
      const submission = parseSubmission(bytes);
      if (submission.sender !== batch.sender) {
        throw malformed(
          batch.sender,
          `a submission from ${submission.sender} in a batch signed by another member`,
        );
      }
      return this.checkAuthenticated(submission);
    };
    return this.sequenceChecked(
      await Promise.all(batch.submissions.map((bytes) => check(bytes).catch(toLockstepError))),
    );
  }

  /** Hands the accepted ones to the writer together; one outcome per checked item, in order. */
  private async sequenceChecked(
    checked: readonly (SubmissionItem | LockstepError)[],
  ): Promise<(Micros | LockstepError)[]> {
    const accepted = checked.filter((c): c is SubmissionItem => !(c instanceof LockstepError));
    const sequenced = await Promise.allSettled(this.writer.submitAll(accepted));
    let next = 0;
    return checked.map((c) => {
      if (c instanceof LockstepError) return c;
      const outcome = sequenced[next++] as PromiseSettledResult<Micros>;
      return outcome.status === "fulfilled" ? outcome.value : toLockstepError(outcome.reason);
    });
  }

  /** Authenticates and validates a Send: the writer item, or the error that refuses it. */
  private async checkSend(request: SendRequestFields): Promise<SubmissionItem> {
    const submission = parseSubmission(request.submission);
    requireMember(this.writer, submission.sender);
    await verifyMemberSignatureAsync(this.writer.topology, checkTime(this.writer), {
      request: "send",
      member: submission.sender,
      fingerprint: request.signingKeyFingerprint,
      digest: submissionDigest(request.submission),
      signature: request.signature,
    });
    return this.checkAuthenticated(submission);
  }

  /** The checks after authentication: well formed, and from the sender's current writer epoch. */
  private async checkAuthenticated(submission: Submission): Promise<SubmissionItem> {
    // After authentication, so that only the member itself learns it was revoked.
    requireNotRevoked(this.writer, submission.sender);
    const item = validateSubmission(submission, (m) => this.writer.registeredAt(m) !== undefined);
    await this.epochs.check(submission.sender, submission.writerEpoch, submission.writerActivation);
    return item;
  }
}
