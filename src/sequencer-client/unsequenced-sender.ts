import type { Logger } from "../common/logging.ts";

export interface UnsequencedSenderOptions<T, R> {
  /** The side's own storage query: what it decided (committed) and has not yet seen sequenced. */
  unsequenced: () => Promise<readonly T[]>;
  /** The item's key, e.g. its request id. */
  keyOf: (item: T) => bigint;
  /** Message ids are `${messagePrefix}${key}-${time}`: each submission has its own. */
  messagePrefix: string;
  /** A submission without receipt or deliver error after this long is sent again. */
  resendAfterMs: number;
  /** Once per round in which something is due, before its sends (e.g. reads the signing key). */
  prepare: () => Promise<R>;
  /**
   * Sends one item with this messageId (SequencerClient.send); false when there was nothing to send
   * it to, so it is not in flight. A rejection fails the round, which is logged and tried again.
   */
  send: (item: T, submission: { messageId: string; resend: boolean }, round: R) => Promise<boolean>;
  /** Before each round, e.g. until the handler's transaction that asked for it committed. */
  beforeRound?: () => Promise<void>;
  /** For the log line of a failed round, e.g. "verdicts". */
  what: string;
  log: Logger;
}

/**
 * The send-unsequenced loop shared by the mediator (verdicts) and participants (confirmation
 * responses): at-least-once sending of what the handler decided, after commit. An item stays
 * unsequenced (in the side's own store) until the receipt of its submission is processed; every
 * round sends each unsequenced item that is not in flight, or was sent longer than resendAfterMs
 * ago without receipt, all at once (the client coalesces them into one SendBatch). Rounds are
 * coalesced: one at a time, and one more after it when flush() is called meanwhile.
 */
export class UnsequencedSender<T, R = void> {
  /** Submissions sent and not yet seen sequenced or refused, by key. */
  private readonly inFlight = new Map<bigint, { messageId: string; sentAt: number }>();
  private flushing: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(private readonly options: UnsequencedSenderOptions<T, R>) {}

  /** A submission was refused by the sequencer: its item goes again on the next round. Its key, if ours. */
  refused(messageId: string): bigint | undefined {
    for (const [key, sent] of this.inFlight) {
      if (sent.messageId !== messageId) continue;
      this.inFlight.delete(key);
      return key;
    }
    return undefined;
  }

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
      await this.options.beforeRound?.();
      try {
        await this.round();
      } catch (error) {
        this.options.log.warn(
          { err: error },
          `sending ${this.options.what} failed; retrying on the next tick`,
        );
      }
    } while (this.again && !this.stopped);
  }

  private async round(): Promise<void> {
    const { keyOf, resendAfterMs } = this.options;
    const items = await this.options.unsequenced();
    const unsequenced = new Set(items.map(keyOf));
    // Sequenced since (its receipt committed): no longer in flight.
    for (const key of this.inFlight.keys()) if (!unsequenced.has(key)) this.inFlight.delete(key);
    const due = items.filter((item) => {
      const sent = this.inFlight.get(keyOf(item));
      return !(sent && Date.now() - sent.sentAt < resendAfterMs);
    });
    if (due.length === 0 || this.stopped) return;
    const round = await this.options.prepare();
    // All at once: the sequencer client coalesces concurrent sends into one SendBatch call.
    const results = await Promise.allSettled(due.map((item) => this.sendOne(item, round)));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  private async sendOne(item: T, round: R): Promise<void> {
    if (this.stopped) return;
    const key = this.options.keyOf(item);
    const resend = this.inFlight.has(key);
    const messageId = `${this.options.messagePrefix}${key}-${Date.now().toString(36)}`;
    this.inFlight.set(key, { messageId, sentAt: Date.now() });
    try {
      if (!(await this.options.send(item, { messageId, resend }, round))) this.inFlight.delete(key);
    } catch (error) {
      this.inFlight.delete(key);
      throw error;
    }
  }
}
