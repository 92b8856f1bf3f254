import type { Logger } from "../common/logging.ts";
import type { Micros } from "../common/time.ts";
import type { KeyStore } from "../crypto/key-store.ts";
import type { KeyPair } from "../crypto/keys.ts";
import { protocolPayload, signConfirmationResponse } from "../mediator/confirmation-messages.ts";
import type { SequencerClient } from "../sequencer-client/sequencer-client.ts";
import type { Db } from "../storage/db.ts";
import { type StoredRequest, unsentResponses } from "./request-store.ts";

/** A response submission without receipt or deliver error after this long is sent again. */
const RESEND_AFTER_MS = 10_000;

/**
 * Sends this participant's ConfirmationResponses to the mediator, after the handler's transaction
 * stored the local verdict (so a response never reports a decision that a crash could undo).
 * At-least-once, like the mediator's verdicts: a response stays unsent until the receipt of its
 * submission is processed, and every unsent one is sent again on start, after a deliver error,
 * and when no receipt came for a while. The mediator counts a participant's response once.
 */
export class ConfirmationSender {
  private readonly inFlight = new Map<Micros, { messageId: string; sentAt: number }>();
  private flushing: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(
    private readonly db: Db,
    private readonly client: SequencerClient,
    private readonly keys: KeyStore,
    private readonly log: Logger,
  ) {}

  /** A response submission was refused by the sequencer: send it again on the next flush. */
  refused(messageId: string): void {
    for (const [requestId, sent] of this.inFlight)
      if (sent.messageId === messageId) this.inFlight.delete(requestId);
  }

  /** Coalesces: one flush at a time, and one more after it when asked meanwhile. */
  flush(): void {
    if (this.stopped) return;
    if (this.flushing) {
      this.again = true;
      return;
    }
    this.flushing = this.loop().finally(() => {
      this.flushing = undefined;
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.flushing;
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      try {
        await this.sendUnsent();
      } catch (error) {
        this.log.warn({ err: error }, "sending confirmation responses failed; retrying on the next tick");
      }
    } while (this.again && !this.stopped);
  }

  private async sendUnsent(): Promise<void> {
    const requests = await unsentResponses(this.db);
    const unsent = new Set(requests.map((r) => r.requestId));
    for (const requestId of this.inFlight.keys()) if (!unsent.has(requestId)) this.inFlight.delete(requestId);
    const due = requests.filter((request) => {
      const sent = this.inFlight.get(request.requestId);
      return !(sent && Date.now() - sent.sentAt < RESEND_AFTER_MS);
    });
    if (due.length === 0 || this.stopped) return;
    // All at once: the sequencer client coalesces concurrent sends into one SendBatch call.
    const signing = await this.keys.activeSigningKey();
    const results = await Promise.allSettled(
      due.map((request) => this.send(request, this.inFlight.has(request.requestId), signing)),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  private async send(request: StoredRequest, resend: boolean, signing: KeyPair): Promise<void> {
    const self = this.client.member;
    const rejection = request.localRejection;
    const response = signConfirmationResponse(
      {
        requestId: request.requestId,
        rootHash: request.rootHash,
        participant: self,
        confirmingParties: [...request.confirmingParties],
        verdict: rejection
          ? { case: "reject", value: { code: rejection.code, reason: rejection.reason, participant: self } }
          : { case: "approve", value: {} },
      },
      signing,
    );
    const messageId = `response-${request.requestId}-${Date.now().toString(36)}`;
    this.inFlight.set(request.requestId, { messageId, sentAt: Date.now() });
    try {
      await this.client.send({
        recipients: [request.mediator],
        payload: protocolPayload({ kind: "response", message: response }),
        messageId,
      });
      this.log.debug(
        { requestId: String(request.requestId), reject: rejection?.code, resend },
        "confirmation response sent",
      );
    } catch (error) {
      this.inFlight.delete(request.requestId);
      throw error;
    }
  }
}
