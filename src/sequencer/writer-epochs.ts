import { LockstepError } from "../common/errors.ts";
import type { SequencerStore } from "./sequencer-store.ts";

/** A member's writer on record: the highest epoch seen and the activation that carried it. */
export interface WriterRecord {
  readonly epoch: bigint;
  /** '' until a request carrying an activation was seen at `epoch` (records from older builds). */
  readonly activation: string;
}

/**
 * Writer epoch fencing (docs/design.md §3): the highest epoch seen per member, with its activation. A
 * lower epoch is refused, and so is an EQUAL one from another activation: two copies of one node
 * database (restored twice from the same set, or a forgotten site) bump to the same epoch, and
 * only the first one heard may act. A higher epoch is recorded durably before the request
 * proceeds, so that once a new writer has been heard the old one cannot act, even across a
 * sequencer restart. (Canton's HA runs replicas active-passive on a shared database and fences them
 * with its lock: digital-asset/canton docs-open participant/explanations/overview-ha.rst. The epoch
 * and activation are ours, for writers that do not share a database: other sites, restored copies.)
 */
export class WriterEpochs {
  private readonly records: Map<string, WriterRecord>;
  /** The durable write of the member's newest record, while it runs: requests wait for it. */
  private readonly recording = new Map<string, Promise<void>>();

  constructor(
    private readonly store: SequencerStore,
    initial: Iterable<[string, WriterRecord]>,
  ) {
    this.records = new Map(initial);
  }

  get(member: string): WriterRecord {
    return this.records.get(member) ?? { epoch: 0n, activation: "" };
  }

  async check(member: string, epoch: bigint, activation: string): Promise<void> {
    const current = this.get(member);
    if (
      epoch < current.epoch ||
      (epoch === current.epoch && current.activation !== "" && activation !== current.activation)
    ) {
      throw new LockstepError("STALE_WRITER_EPOCH", { member, epoch, current: current.epoch });
    }
    // A higher epoch takes over; at an equal epoch, a record without activation adopts the first.
    if (epoch > current.epoch || (current.activation === "" && activation !== "")) {
      // Raised before the write, so a competing request meanwhile is already judged against it.
      const record = { epoch, activation };
      this.records.set(member, record);
      const write = this.store.recordWriterEpoch(member, epoch, activation);
      this.recording.set(member, write);
      try {
        await write;
      } catch (error) {
        // Not durable: forget it, so it is neither trusted nor blocks the member for good.
        if (this.records.get(member) === record) this.records.set(member, current);
        throw error;
      } finally {
        if (this.recording.get(member) === write) this.recording.delete(member);
      }
      return;
    }
    // Same writer as on record: proceed only once its record is durable.
    await this.recording.get(member);
  }
}
