import type { Logger } from "../common/logging.ts";
import type { KeyStore } from "../crypto/key-store.ts";
import type { KeyPair } from "../crypto/keys.ts";
import { protocolPayload, signConfirmationResponse } from "../protocol/confirmation-messages.ts";
import type { SequencerClient } from "../sequencer-client/sequencer-client.ts";
import { UnsequencedSender } from "../sequencer-client/unsequenced-sender.ts";
import type { Db } from "../storage/db.ts";
import { type StoredRequest, unsentResponses } from "./request-store.ts";

/** A response submission without receipt or deliver error after this long is sent again. */
const RESEND_AFTER_MS = 10_000;

/**
 * Sends this participant's ConfirmationResponses to the mediator, after the handler's transaction
 * stored the local verdict (so a response never reports a decision that a crash could undo).
 * At-least-once, like the mediator's verdicts (UnsequencedSender): a response stays unsent until
 * the receipt of its submission is processed, and every unsent one is sent again on start, after
 * a deliver error, and when no receipt came for a while. The mediator counts a participant's
 * response once.
 */
export class ConfirmationSender {
  private readonly sender: UnsequencedSender<StoredRequest, KeyPair>;

  constructor(db: Db, client: SequencerClient, keys: KeyStore, log: Logger) {
    this.sender = new UnsequencedSender({
      unsequenced: () => unsentResponses(db),
      keyOf: (request) => request.requestId,
      messagePrefix: "response-",
      resendAfterMs: RESEND_AFTER_MS,
      // One signing key read per round, for all its responses.
      prepare: () => keys.activeSigningKey(),
      send: async (request, { messageId, resend }, signing) => {
        await client.send({
          recipients: [request.mediator],
          payload: protocolPayload({
            kind: "response",
            message: responseOf(request, client.member, signing),
          }),
          messageId,
        });
        log.debug(
          { requestId: String(request.requestId), reject: request.localRejection?.code, resend },
          "confirmation response sent",
        );
        return true;
      },
      what: "confirmation responses",
      log,
    });
  }

  /** A response submission was refused by the sequencer: send it again on the next flush. */
  refused(messageId: string): void {
    this.sender.refused(messageId);
  }

  /** Coalesces: one flush at a time, and one more after it when asked meanwhile. */
  flush(): void {
    this.sender.flush();
  }

  async stop(): Promise<void> {
    await this.sender.stop();
  }
}

function responseOf(request: StoredRequest, self: string, signing: KeyPair) {
  const rejection = request.localRejection;
  return signConfirmationResponse(
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
}
