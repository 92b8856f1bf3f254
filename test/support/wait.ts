import { setTimeout as sleep } from "node:timers/promises";

/**
 * The one polling helper of the tests: calls `probe` until it returns a value (not undefined) and
 * returns it. A probe that throws counts as "not yet" (e.g. a node still starting); the last error is
 * in the timeout message. Generous default timeout because CI shares two cores.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}

/** waitFor for a condition: until `check` holds. */
export async function waitUntil(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  intervalMs = 50,
): Promise<void> {
  await waitFor(what, async () => ((await check()) ? true : undefined), timeoutMs, intervalMs);
}

/** `promise`, or a failure naming `what` if it has not settled within `seconds` (a guard, not a wait). */
export async function withinSeconds<T>(promise: Promise<T>, seconds: number, what: string): Promise<T> {
  const guard = new AbortController();
  try {
    return await Promise.race([
      promise,
      sleep(seconds * 1000, undefined, { signal: guard.signal }).then(
        () => {
          throw new Error(`timed out after ${seconds} s waiting for ${what}`);
        },
        () => new Promise<never>(() => {}), // aborted once the race is decided
      ),
    ]);
  } finally {
    guard.abort();
  }
}
