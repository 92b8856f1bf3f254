import { LockstepError } from "../common/errors.ts";
import type { SequencerStore } from "./sequencer-store.ts";

/**
 * Writer epoch fencing (DESIGN §3): the highest epoch seen per member. A lower one is refused,
 * a higher one is recorded durably before the request proceeds, so that once a new writer of a
 * member has been heard, the old one cannot act, even across a sequencer restart.
 */
export class WriterEpochs {
  private readonly highest: Map<string, bigint>;

  constructor(
    private readonly store: SequencerStore,
    initial: Iterable<[string, bigint]>,
  ) {
    this.highest = new Map(initial);
  }

  get(member: string): bigint {
    return this.highest.get(member) ?? 0n;
  }

  async check(member: string, epoch: bigint): Promise<void> {
    const current = this.get(member);
    if (epoch < current) {
      throw new LockstepError("STALE_WRITER_EPOCH", { member, epoch, current });
    }
    if (epoch > current) {
      // Raised before the write, so a lower epoch arriving meanwhile is already refused.
      this.highest.set(member, epoch);
      await this.store.recordWriterEpoch(member, epoch);
    }
  }
}
