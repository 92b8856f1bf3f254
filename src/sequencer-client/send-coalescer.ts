import { LockstepError } from "../common/errors.ts";
import type { SendBatchOutcome } from "./sequencer-transport.ts";

export interface SendCoalescerOptions {
  /**
   * Signs the serialized Submissions once and calls SendBatch (SequencerTransport.sendBatch: one
   * outcome per submission, or "unsupported").
   */
  sendBatch: (submissions: readonly Uint8Array[]) => Promise<SendBatchOutcome>;
  /** Signs one and calls Send: the fallback for a sequencer without SendBatch. */
  send: (submission: Uint8Array) => Promise<unknown>;
  /** Requests per SendBatch at most; default 256 (the sequencer takes up to 1000). */
  maxBatch?: number;
  /**
   * SendBatch calls in flight at once; default 1 (measured best: more calls make smaller batches).
   * More than one lets the sequencer verify the next
   * batch while it commits the previous one; sends that are in flight together may be sequenced in
   * either order, as concurrent Sends may (a send that awaits the previous one stays after it).
   */
  maxInFlight?: number;
}

interface Queued {
  readonly submission: Uint8Array;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Group send on the client: a send() that arrives while `maxInFlight` SendBatch calls are in flight
 * waits for one of them to return and then goes, with every other one that queued meanwhile, in
 * the next SendBatch. Otherwise a send goes at once (a batch of one), so coalescing adds no
 * latency; under load it saves one RPC, one signature and one verification per submission (the
 * batch is signed once, see SendBatchRequest.signed). Every caller gets its own outcome: the
 * sequencer's error for its submission, or the call's failure (SEQUENCER_UNAVAILABLE, …) when the
 * whole SendBatch failed.
 */
export class SendCoalescer {
  private readonly queue: Queued[] = [];
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private inFlight = 0;
  private batchUnsupported = false;

  constructor(private readonly options: SendCoalescerOptions) {
    this.maxBatch = options.maxBatch ?? 256;
    this.maxInFlight = options.maxInFlight ?? 1;
  }

  /** Resolves when the sequencer accepted the submission (as a Send would), or rejects with its error. */
  send(submission: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ submission, resolve, reject });
      if (this.inFlight < this.maxInFlight) void this.flush();
    });
  }

  /**
   * One of up to maxInFlight loops; each stops when it finds the queue empty, and the count drops
   * synchronously with that last look (as the sequencer's writer), so no send is left queued.
   */
  private async flush(): Promise<void> {
    this.inFlight++;
    try {
      while (this.queue.length > 0) await this.sendBatch(this.queue.splice(0, this.maxBatch));
    } finally {
      this.inFlight--;
    }
  }

  private async sendBatch(batch: readonly Queued[]): Promise<void> {
    if (this.batchUnsupported) return this.sendEach(batch);
    let outcome: SendBatchOutcome;
    try {
      outcome = await this.options.sendBatch(batch.map((q) => q.submission));
    } catch (error) {
      // The whole call failed (SEQUENCER_UNAVAILABLE, …): every send in it fails with it.
      for (const q of batch) q.reject(error);
      return;
    }
    if (outcome === "unsupported") {
      // A sequencer from before SendBatch: one Send per submission from now on.
      this.batchUnsupported = true;
      return this.sendEach(batch);
    }
    if (outcome.length !== batch.length) {
      const failure = new LockstepError("INTERNAL_ERROR", {
        details: `SendBatch returned ${outcome.length} results for ${batch.length} requests`,
      });
      for (const q of batch) q.reject(failure);
      return;
    }
    batch.forEach((q, i) => {
      const error = outcome[i];
      if (error) q.reject(error);
      else q.resolve();
    });
  }

  private async sendEach(batch: readonly Queued[]): Promise<void> {
    await Promise.all(
      batch.map(async (q) => {
        try {
          await this.options.send(q.submission);
          q.resolve();
        } catch (error) {
          q.reject(error);
        }
      }),
    );
  }
}

/**
 * A read shared by concurrent callers without ever being stale for them: every caller gets the
 * result of a read that started after it asked. The callers that ask while a read runs share the
 * next one (started when it ends), so under load one read serves many callers (group read), and
 * a change committed before a caller asked (e.g. a newly activated signing key) is always seen.
 */
export class FreshRead<T> {
  private current: Promise<T> | undefined;
  private next: Promise<T> | undefined;

  constructor(private readonly read: () => Promise<T>) {}

  get(): Promise<T> {
    if (!this.current) return this.start();
    this.next ??= this.current
      .catch(() => {})
      .then(() => {
        this.next = undefined;
        return this.start();
      });
    return this.next;
  }

  private start(): Promise<T> {
    const read = this.read().finally(() => {
      if (this.current === read) this.current = undefined;
    });
    this.current = read;
    return read;
  }
}
