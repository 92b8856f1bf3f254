import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { Micros } from "../common/time.ts";
import type { TopologyState } from "../crypto/topology.ts";
import type { Db } from "../storage/db.ts";
import { topologyTransactionsOf } from "./event-payload.ts";
import type { MemberStateStore } from "./member-state-store.ts";
import type { StoredEvent } from "./sequenced-event-store.ts";
import type { EventHandler } from "./sequencer-client.ts";
import { applyTopologyEvent } from "./topology-bootstrap.ts";

/**
 * The receive side of the event pipeline (group commit at the member): the subscription stream is
 * read in the background into a bounded queue, so that while the member stores and processes one
 * run of events the next ones keep arriving, and the next run takes all of them at once (one
 * commit to store them, one transaction to process them) instead of one event per round.
 *
 * `take()` resolves with up to `max` items that arrived since the last take (at least one), or null
 * once the stream ended with nothing left; a stream error is thrown after everything received
 * before it was taken. Reading pauses while `highWater` items wait (HTTP/2 flow control then holds
 * the sequencer back). `close()` stops reading and aborts the stream.
 */
export class StreamDrain<T> {
  private readonly queue: T[] = [];
  private ended = false;
  private failure: { error: unknown } | undefined;
  private wakeConsumer: (() => void) | undefined;
  private wakeProducer: (() => void) | undefined;
  private closed = false;
  private readonly pumping: Promise<void>;

  constructor(
    source: AsyncIterable<readonly T[]>,
    private readonly abort: AbortController,
    private readonly highWater = 4096,
    onReceive: () => void = () => {},
  ) {
    this.pumping = this.pump(source, onReceive);
  }

  private async pump(source: AsyncIterable<readonly T[]>, onReceive: () => void): Promise<void> {
    try {
      for await (const items of source) {
        onReceive();
        for (const item of items) this.queue.push(item);
        this.notifyConsumer();
        while (this.queue.length >= this.highWater && !this.closed) {
          await new Promise<void>((resolve) => {
            this.wakeProducer = resolve;
          });
        }
        if (this.closed) return;
      }
    } catch (error) {
      if (!this.closed) this.failure = { error };
    } finally {
      this.ended = true;
      this.notifyConsumer();
    }
  }

  private notifyConsumer(): void {
    const wake = this.wakeConsumer;
    this.wakeConsumer = undefined;
    wake?.();
  }

  async take(max: number): Promise<T[] | null> {
    while (this.queue.length === 0) {
      if (this.ended) {
        if (this.failure) throw this.failure.error;
        return null;
      }
      await new Promise<void>((resolve) => {
        this.wakeConsumer = resolve;
      });
    }
    const items = this.queue.splice(0, max);
    const wake = this.wakeProducer;
    this.wakeProducer = undefined;
    wake?.();
    return items;
  }

  /** Stops reading (the stream is aborted) and waits for the reader to finish. */
  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    const wake = this.wakeProducer;
    this.wakeProducer = undefined;
    wake?.();
    await this.pumping;
  }
}

/**
 * True when the event changes the member's topology (after registration): the events after it must
 * be validated against the topology it produces, so a run of events ends with it.
 */
export function changesTopology(event: StoredEvent["event"], registeredAt: Micros): boolean {
  if (event.timestamp <= registeredAt) return false;
  return (topologyTransactionsOf(event)?.length ?? 0) > 0;
}

/** A handler (or topology write) failed on this event; the whole run was rolled back. */
export class RunEventFailure extends Error {
  constructor(
    readonly stored: StoredEvent,
    override readonly cause: unknown,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
  }
}

export interface RunProcessorDeps {
  readonly db: Db;
  readonly memberState: MemberStateStore;
  readonly setClean: (tx: Parameters<EventHandler>[1], timestamp: Micros) => Promise<void>;
  readonly log: Logger;
}

/**
 * Processes a run of stored events, oldest first, in ONE transaction (docs/design.md §2: the clean index
 * moves atomically with the effects): for each event its topology change is applied and written,
 * then the handler runs with the topology after it, seeing the effects of the earlier events of the
 * run through the same `tx`; the clean timestamp becomes the last event's. Returns the topology
 * after the run. On failure nothing of the run commits and RunEventFailure names the event.
 * The commit waits for the synchronous standbys whatever the server's default (docs/design.md §3):
 * the clean index and what it covers (a participant's ledger end, completions, a mediator's
 * verdicts) must survive a fail-over, since the member will not process those events again.
 */
export async function processRun(
  deps: RunProcessorDeps,
  run: readonly StoredEvent[],
  topology: TopologyState,
  registeredAt: Micros,
  handler: EventHandler,
  replayed: boolean,
): Promise<TopologyState> {
  const last = run[run.length - 1];
  if (!last) return topology;
  return deps.db.transaction(
    async (tx) => {
      let state = topology;
      for (const stored of run) {
        const { event, counter } = stored;
        try {
          const applied = applyTopologyEvent(state, event, registeredAt);
          for (const { hash, error } of applied.rejected) {
            deps.log.warn({ hash, code: error.code }, `topology change rejected: ${error.message}`);
          }
          for (const entry of applied.accepted)
            await deps.memberState.appendTopology(tx, entry.signed, entry.effectiveAt);
          state = applied.state;
          await handler(event, tx, { counter, topology: state, replayed });
        } catch (error) {
          throw new RunEventFailure(stored, error);
        }
      }
      await deps.setClean(tx, last.event.timestamp);
      return state;
    },
    { synchronousCommit: true },
  );
}

/** The fatal error of a failed run: the handler's LockstepError, or SEQUENCER_CLIENT_HANDLER_FAILED. */
export function runFailure(failed: unknown, last: StoredEvent): LockstepError {
  const stored = failed instanceof RunEventFailure ? failed.stored : last;
  const error = failed instanceof RunEventFailure ? failed.cause : failed;
  if (error instanceof LockstepError) return error;
  return new LockstepError(
    "SEQUENCER_CLIENT_HANDLER_FAILED",
    {
      timestamp: stored.event.timestamp,
      counter: stored.counter,
      details: error instanceof Error ? error.message : String(error),
    },
    { cause: error },
  );
}

/**
 * Replays events stored before the last stop but not processed, in order, in runs of at most
 * `max`. The number replayed, or undefined when a run failed or the client stopped meanwhile.
 */
export async function replayStored(
  stored: AsyncIterable<StoredEvent>,
  max: number,
  signal: AbortSignal,
  process: (run: readonly StoredEvent[]) => Promise<boolean>,
): Promise<number | undefined> {
  let replayed = 0;
  let run: StoredEvent[] = [];
  for await (const event of stored) {
    if (signal.aborted) return undefined;
    run.push(event);
    if (run.length < max) continue;
    if (!(await process(run))) return undefined;
    replayed += run.length;
    run = [];
  }
  if (signal.aborted) return undefined;
  if (run.length > 0) {
    if (!(await process(run))) return undefined;
    replayed += run.length;
  }
  return replayed;
}
