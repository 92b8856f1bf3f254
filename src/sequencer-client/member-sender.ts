import { newId } from "../common/ids.ts";
import { type Micros, msToMicros, nowMicros } from "../common/time.ts";
import type { KeyStore } from "../crypto/key-store.ts";
import type { KeyPair } from "../crypto/keys.ts";
import type { TopologyState } from "../crypto/topology.ts";
import { FreshRead, SendCoalescer } from "./send-coalescer.ts";
import type { Registration, SendRequest } from "./sequencer-client.ts";
import { signedSend, signedSubmissions, submissionBytes } from "./sequencer-requests.ts";
import type { SequencerTransport } from "./sequencer-transport.ts";

export interface MemberSenderDeps {
  transport: SequencerTransport;
  keys: KeyStore;
  /** SequencerClient.register: a submission needs the member id. */
  register: () => Promise<Registration>;
  topology: () => TopologyState;
  /** The newest sequencer time seen, for the synchronizer parameters in force. */
  sequencerTime: () => Micros | null;
  /** The writer epoch and activation every submission carries. */
  writer: () => { writerEpoch: bigint; writerActivation: string };
}

/**
 * The send side of the client: builds each Submission (message id, max sequencing time, writer
 * epoch) and sends it through a SendCoalescer, so concurrent sends share SendBatch calls.
 */
export class MemberSender {
  private readonly sends: SendCoalescer;
  /** The active signing key for sends, read once for all the sends that ask meanwhile. */
  private readonly signingKey: FreshRead<KeyPair>;

  constructor(private readonly deps: MemberSenderDeps) {
    const { transport } = deps;
    this.signingKey = new FreshRead(() => deps.keys.activeSigningKey());
    this.sends = new SendCoalescer({
      // The key is read when the batch goes, so a newly activated key is used from then on.
      sendBatch: async (submissions) => {
        const { member } = await deps.register();
        return transport.sendBatch(signedSubmissions(member, submissions, await this.signingKey.get()));
      },
      send: async (submission) => transport.send(signedSend(submission, await this.signingKey.get())),
    });
  }

  /** Resolves when the sequencer accepted it for sequencing, or rejects with its LockstepError. */
  async submit(request: SendRequest & { timeProof: boolean }): Promise<{ messageId: string }> {
    const registration = await this.deps.register();
    const messageId = request.messageId ?? newId();
    const now = nowMicros();
    const at = this.deps.sequencerTime() ?? now;
    const tolerance = this.deps.topology().parameters(at).ledgerTimeRecordTimeToleranceMs;
    const fields = {
      sender: registration.member,
      messageId,
      recipients: request.recipients,
      payload: request.payload,
      maxSequencingTime: request.maxSequencingTime ?? now + msToMicros(tolerance),
      ...this.deps.writer(),
      timeProof: request.timeProof,
    };
    await this.sends.send(submissionBytes(fields));
    return { messageId };
  }
}
