import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { isLockstepError, type LockstepError } from "../../src/common/errors.ts";
import type { SubmitCommands } from "../../src/participant/ledger-api-backend.ts";
import { startParticipantNetwork } from "../support/participant-network.ts";
import { startTestPostgres } from "../support/postgres.ts";

// SubmitAndWait without a caller deadline ends by the participant's tracking timeout (Canton's
// default-tracking-timeout; 5 minutes by default, 3 s here) with REQUEST_TIME_OUT, and the
// submission stays in flight. Old code: it waited as long as the caller did, here for ever.

const TRACKING_TIMEOUT_MS = 3000;
const pg = await startTestPostgres();
const net = await startParticipantNetwork(pg, ["participant1"], undefined, {
  commandTrackingTimeoutMs: TRACKING_TIMEOUT_MS,
});
after(() => net.stop());

async function rejection(promise: Promise<unknown>, guardMs: number): Promise<LockstepError> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${guardMs} ms`)), guardMs);
  });
  try {
    await Promise.race([promise, guard]);
  } catch (error) {
    if (isLockstepError(error)) return error;
    throw error;
  } finally {
    clearTimeout(timer);
  }
  assert.fail("expected a rejection");
}

test("a SubmitAndWait without a deadline ends with REQUEST_TIME_OUT by the tracking timeout; the change id stays in flight", async () => {
  const backend = net.backend("participant1");
  const alice = (await backend.allocateParty("alice")).party;
  const command: SubmitCommands = {
    userId: "app",
    commandId: randomUUID(),
    actAs: [alice],
    command: {
      kind: "create",
      template: "Iou",
      arguments: { issuer: alice, owner: alice, amount: "1.00", currency: "USD" },
    },
  };
  // Without the mediator no verdict comes: the request can never complete.
  await net.mediator.stop();
  const started = Date.now();
  const timedOut = await rejection(backend.submitAndWait(command), 30_000);
  const elapsed = Date.now() - started;
  assert.equal(timedOut.code, "REQUEST_TIME_OUT", timedOut.message);
  assert.ok(elapsed >= TRACKING_TIMEOUT_MS - 100 && elapsed < TRACKING_TIMEOUT_MS + 5000, `${elapsed} ms`);
  assert.equal(timedOut.metadata.submissionId !== undefined, true);

  const again = await rejection(backend.submit(command), 30_000);
  assert.equal(again.code, "SUBMISSION_ALREADY_IN_FLIGHT", again.message);
});
