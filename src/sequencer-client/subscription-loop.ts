import { setTimeout as sleep } from "node:timers/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import type { Bytes } from "../common/hash.ts";
import type { Logger } from "../common/logging.ts";
import { type EventPosition, eventFromProto, type SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import type {
  SequencedEvent as SequencedEventProto,
  SubscribeRequestSchema,
} from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { changesTopology, StreamDrain } from "./event-pipeline.ts";
import { describeRefusal, EventStreamValidator } from "./event-stream-validator.ts";
import { classifySubscriptionError } from "./sequencer-errors.ts";
import type { SequencerTransport } from "./sequencer-transport.ts";
import type { SubscriptionCheck } from "./subscription-check.ts";

/** At most this many events are stored in one commit and processed in one transaction. */
export const MAX_RUN = 200;
/** Received events waiting to be stored before the subscription stream is no longer read. */
const RECEIVE_HIGH_WATER = 4096;

/** What the subscription loop needs from the client (sequencer-client-runtime.ts), nothing more. */
export interface SubscriptionHost {
  readonly transport: SequencerTransport;
  readonly check: SubscriptionCheck;
  readonly log: Logger;
  /** Aborted when the client stops. */
  readonly signal: AbortSignal;
  readonly registeredAt: Micros;
  /** True once the client failed or stopped for good. */
  ended(): boolean;
  lastStored(): SequencedEvent | null;
  /** A signed Subscribe from the last stored event (inclusive); counts the attempt. */
  subscribeRequest(): Promise<MessageInitShape<typeof SubscribeRequestSchema>>;
  /** The sequencer's public signing keys valid for an event at the timestamp. */
  sequencerKeysAt(timestamp: Micros): readonly Bytes[];
  /** An event arrived (sequencer time moves on). */
  arrived(event: SequencedEvent): void;
  setConnected(connected: boolean): void;
  /** Stores a run of validated events in one commit and processes them; false when that failed. */
  storeAndProcess(run: readonly SequencedEvent[]): Promise<boolean>;
  transient(error: LockstepError): void;
  fatal(error: LockstepError): void;
  backoffMs(attempt: number): number;
}

/**
 * Keeps the subscription alive until the client stops or fails: one Subscribe call after the
 * other, with backoff after transient failures (reset once a call connected). One loop per client:
 * receive → validate → store → process, strictly sequential, so the topology used to check an
 * event's signature is always the one after its predecessor.
 */
export async function runSubscriptionLoop(host: SubscriptionHost): Promise<void> {
  let attempt = 0;
  while (!host.signal.aborted && !host.ended()) {
    const ended = await subscribeOnce(host, () => {
      attempt = 0;
    });
    if (host.signal.aborted || host.ended()) break;
    if (ended.streamError === undefined) {
      host.log.info("the sequencer closed the subscription; reconnecting");
    } else {
      const verdict = classifySubscriptionError(ended.streamError);
      if (verdict.fatal) {
        host.fatal(verdict.error);
        break;
      }
      host.transient(verdict.error);
    }
    host.setConnected(false);
    try {
      await sleep(host.backoffMs(attempt++), undefined, { signal: host.signal });
    } catch {
      break; // stopped
    }
  }
  host.setConnected(false);
}

/**
 * One Subscribe call, from the last stored event inclusive, until the stream ends: returns how it
 * ended (the transport's error, for the loop to classify). The client's own failures (validation,
 * storing, processing) are fatal here.
 */
async function subscribeOnce(
  host: SubscriptionHost,
  onConnected: () => void,
): Promise<{ streamError?: unknown }> {
  const { check, log } = host;
  let received: StreamDrain<SequencedEventProto> | undefined;
  try {
    const lastStored = host.lastStored();
    let request: MessageInitShape<typeof SubscribeRequestSchema>;
    try {
      request = await host.subscribeRequest();
    } catch (error) {
      // The sequencer unreachable while the request is prepared (keys reconciled with its
      // topology first): classified like a stream error, so a reconnect like any other.
      return { streamError: error };
    }
    const validator = new EventStreamValidator(lastStored, (t) => host.sequencerKeysAt(t));
    check.begin(lastStored !== null);
    let connected = false;
    const markConnected = () => {
      if (!connected) log.info({ from: String(request.fromTimestamp ?? "start") }, "subscribed");
      connected = true;
      host.setConnected(true);
      onConnected();
      check.connected();
    };
    const abort = new AbortController();
    const stream = host.transport.subscribe(request, {
      signal: AbortSignal.any([host.signal, abort.signal]),
      onConnected: markConnected,
    });
    // Events keep arriving while a run is stored and processed; the next run takes all of them.
    received = new StreamDrain(stream, abort, RECEIVE_HIGH_WATER, markConnected);
    for (;;) {
      let protos: SequencedEventProto[] | null;
      try {
        protos = await received.take(MAX_RUN);
      } catch (streamError) {
        return { streamError };
      }
      if (protos === null || host.signal.aborted) return {};
      const run: SequencedEvent[] = [];
      for (const proto of protos) {
        const event = eventFromProto(proto);
        host.arrived(event);
        const expected = validator.expected;
        let verdict: "echo" | "new";
        try {
          verdict = validator.accept(event);
        } catch (error) {
          logValidationFailure(log, error, expected, event);
          await host.storeAndProcess(run); // the valid events before it
          host.fatal(toLockstepError(error));
          return {};
        }
        if (verdict === "echo") {
          check.echoed();
          continue;
        }
        run.push(event);
        // Later events are checked against the sequencer keys this one may change: process it first.
        if (changesTopology(event, host.registeredAt) && !(await host.storeAndProcess(run.splice(0))))
          return {};
      }
      if (!(await host.storeAndProcess(run))) return {};
    }
  } catch (error) {
    host.fatal(toLockstepError(error));
    return {};
  } finally {
    check.end();
    await received?.close();
  }
}

function logValidationFailure(
  log: Logger,
  error: unknown,
  expected: EventPosition | null,
  received: SequencedEvent,
): void {
  const code = error instanceof LockstepError ? error.code : "INTERNAL_ERROR";
  log.error(
    { code, ...describeRefusal(expected, received) },
    `sequencer event stream refused (${code}): ${(error as Error).message}; not reconnecting`,
  );
}
