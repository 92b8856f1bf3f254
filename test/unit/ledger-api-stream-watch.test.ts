import assert from "node:assert/strict";
import { test } from "node:test";
import { Code } from "@connectrpc/connect";
import { LockstepError } from "../../src/common/errors.ts";
import { watchStream } from "../../src/participant/ledger-api-stream-watch.ts";
import { waitUntil } from "../support/wait.ts";

// watchStream's closes on real timers, with short intervals: the expiry, a re-check that finds the
// rights changed or cannot read them, and the safety switch of stuck checks. The end-to-end
// behaviour through a participant is in test/integration/ledger-api-stream-auth.test.ts.

/** A live stream: yields what is pushed, waits for more until its signal aborts (as the backend's). */
function liveStream(signal: AbortSignal) {
  const queue: number[] = [];
  let notify: (() => void) | undefined;
  let produced = 0;
  async function* items(): AsyncIterable<number> {
    while (!signal.aborted) {
      const next = queue.shift();
      if (next !== undefined) {
        produced++;
        yield next;
        continue;
      }
      await new Promise<void>((resolve) => {
        notify = resolve;
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
    }
  }
  return {
    items: items(),
    push(n: number) {
      queue.push(n);
      notify?.();
    },
    produced: () => produced,
  };
}

/** Consumes `stream` into `seen`; resolves with the error it ended with (undefined: it completed). */
async function drain(stream: AsyncIterable<number>, seen: number[]): Promise<LockstepError | undefined> {
  try {
    for await (const n of stream) seen.push(n);
    return undefined;
  } catch (error) {
    assert.ok(error instanceof LockstepError, String(error));
    return error;
  }
}

test("a quiet stream ends at its token's expiry with ACCESS_TOKEN_EXPIRED and stops its producer", async () => {
  const abort = new AbortController();
  const live = liveStream(abort.signal);
  live.push(1);
  const seen: number[] = [];
  const expiresAt = Date.now() + 150;
  const ended = await drain(
    watchStream(live.items, { expiresAtMs: expiresAt, checkIntervalMs: 1000 }, abort),
    seen,
  );
  assert.equal(ended?.code, "ACCESS_TOKEN_EXPIRED");
  assert.equal(ended?.grpc, Code.Unauthenticated);
  assert.deepEqual(seen, [1]);
  assert.ok(Date.now() >= expiresAt, "not before the expiry");
  assert.ok(abort.signal.aborted, "the producer was told to stop");

  // Without expiry or checks the stream is passed through unchanged.
  async function* three(): AsyncIterable<number> {
    yield* [1, 2, 3];
  }
  const all: number[] = [];
  assert.equal(
    await drain(watchStream(three(), { checkIntervalMs: 1000 }, new AbortController()), all),
    undefined,
  );
  assert.deepEqual(all, [1, 2, 3]);
});

test("re-checks run at the interval; the stream stays open while they pass and closes when one fails", async () => {
  const abort = new AbortController();
  const live = liveStream(abort.signal);
  let checks = 0;
  let reason: string | undefined;
  const recheck = async () => {
    checks++;
    return reason;
  };
  const seen: number[] = [];
  const done = drain(watchStream(live.items, { recheck, checkIntervalMs: 100 }, abort), seen);
  live.push(1);
  await waitUntil("three checks", () => checks >= 3, 5_000, 10);
  // After several passing checks, and past twice the interval, items still flow.
  live.push(2);
  await waitUntil("item 2 delivered", () => seen.length === 2, 5_000, 10);
  reason = "user app no longer has CanReadAs or CanActAs for bob";
  const ended = await done;
  assert.equal(ended?.code, "STALE_STREAM_AUTHORIZATION");
  assert.equal(ended?.retryable, true);
  assert.match(ended?.message ?? "", /no longer has CanReadAs or CanActAs for bob/);
  assert.deepEqual(seen, [1, 2]);
  assert.equal(ended?.grpc, Code.Aborted, "Canton's ContentionOnSharedResources");
  assert.ok(abort.signal.aborted, "the producer was told to stop");
});

test("a re-check that cannot read the rights closes the stream", async () => {
  const abort = new AbortController();
  const live = liveStream(abort.signal);
  const recheck = async (): Promise<string | undefined> => {
    throw new Error("connection terminated");
  };
  const ended = await drain(watchStream(live.items, { recheck, checkIntervalMs: 50 }, abort), []);
  assert.equal(ended?.code, "STALE_STREAM_AUTHORIZATION");
  assert.match(ended?.message ?? "", /could not be re-read \(connection terminated\)/);
});

test("safety switch: an item while the last check is older than twice the interval closes the stream", async () => {
  const abort = new AbortController();
  const live = liveStream(abort.signal);
  let started = 0;
  // Checks that never answer, as on a database that hangs.
  const recheck = () => {
    started++;
    return new Promise<string | undefined>(() => {});
  };
  const seen: number[] = [];
  const opened = Date.now();
  const done = drain(watchStream(live.items, { recheck, checkIntervalMs: 50 }, abort), seen);
  live.push(1);
  await waitUntil("item 1 delivered", () => seen.length === 1, 5_000, 5);
  await waitUntil(
    "twice the interval passed with a check stuck",
    () => started >= 1 && Date.now() - opened > 120,
  );
  live.push(2);
  const ended = await done;
  assert.equal(ended?.code, "STALE_STREAM_AUTHORIZATION");
  assert.match(ended?.message ?? "", /last checked \d+ ms ago \(every 50 ms\)/);
  assert.deepEqual(seen, [1], "the item after the switch is not sent");
  assert.equal(live.produced(), 2);
});
