import { setTimeout as sleep } from "node:timers/promises";
import { ConnectError } from "@connectrpc/connect";
import { fromConnectError } from "../common/connect-errors.ts";

/**
 * Runs `call`, and again while the node answers with a retryable error (e.g. it is still
 * registering with its sequencer after a start), for at most `limitMs`; progress is told once per
 * distinct reason. A node that does not answer at all fails at once: waiting would not help.
 */
export async function retryRetryable<T>(
  call: () => Promise<T>,
  progress: (line: string) => void,
  limitMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + limitMs;
  let told = "";
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const known = error instanceof ConnectError ? fromConnectError(error) : undefined;
      if (!known?.retryable || Date.now() > deadline) throw error;
      if (known.message !== told) {
        told = known.message;
        progress(`  waiting: ${known.message}`);
      }
      await sleep(Math.min(200 * 2 ** attempt, 2000));
    }
  }
}
