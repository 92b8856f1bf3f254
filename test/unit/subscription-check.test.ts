import assert from "node:assert/strict";
import { test } from "node:test";
import { LockstepError } from "../../src/common/errors.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { SynchronizerConnection } from "../../src/participant/synchronizer-connection.ts";
import type { SequencerClientStatus } from "../../src/sequencer-client/sequencer-client.ts";
import { CHECK_PROBE_DELAY_MS, SubscriptionCheck } from "../../src/sequencer-client/subscription-check.ts";

const log = silentLogger();

function harness() {
  const calls = { proofs: 0, passed: [] as number[] };
  const check = new SubscriptionCheck({
    requestTimeProof: async () => {
      calls.proofs++;
    },
    onPassed: ({ subscription }) => calls.passed.push(subscription),
    log,
  });
  return { check, calls };
}

test("a resubscription passes on the echo; a time proof is asked for only when the echo is late", async (t) => {
  // Mocked timers: "no time proof" is decided by moving the clock past the probe delay, not by waiting.
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { check, calls } = harness();
  assert.equal(check.state, "pending");
  check.begin(true);
  check.connected();
  check.echoed();
  assert.equal(check.state, "passed");
  t.mock.timers.tick(CHECK_PROBE_DELAY_MS + 100);
  assert.equal(calls.proofs, 0, "the echo came first: no time proof");

  // Reconnect: pending again until decided; without the echo a time proof goes out.
  check.end();
  assert.equal(check.state, "pending");
  check.begin(true);
  check.connected();
  t.mock.timers.tick(CHECK_PROBE_DELAY_MS + 100);
  assert.equal(calls.proofs, 1);
  assert.equal(check.state, "pending");
  check.echoed();
  assert.deepEqual(calls.passed, [1, 2], "called on every pass");
  check.end();
});

test("a member with nothing stored passes once subscribed; a stopped subscription stops probing", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { check, calls } = harness();
  check.begin(false);
  assert.equal(check.state, "pending", "not before the subscription is established");
  check.connected();
  assert.equal(check.state, "passed");
  check.begin(true);
  check.connected();
  check.end();
  t.mock.timers.tick(CHECK_PROBE_DELAY_MS + 100);
  assert.equal(calls.proofs, 0);
});

test("submissions: refused while reconnecting or checking, allowed once passed, the fatal error once stopped", async () => {
  let status: Pick<SequencerClientStatus, "connected" | "failed" | "lastError" | "subscriptionCheck"> = {
    connected: false,
    failed: false,
    lastError: null,
    subscriptionCheck: "pending",
  };
  let stopped: LockstepError | undefined;
  const connection = new SynchronizerConnection(
    "sync1",
    () => status as SequencerClientStatus,
    () => stopped,
  );
  const reconnecting = connection.refusal();
  assert.equal(reconnecting?.code, "NOT_CONNECTED_TO_SYNCHRONIZER");
  assert.equal(reconnecting?.retryable, true);
  assert.match(reconnecting?.metadata.reason ?? "", /reconnecting/);
  status = { ...status, connected: true };
  assert.equal(connection.refusal()?.metadata.reason, "checking its history against the sequencer");
  await assert.rejects(connection.awaitSubmittable(undefined, 50), /checking its history/);
  const waiting = connection.awaitSubmittable(undefined, 5000);
  status = { ...status, subscriptionCheck: "passed" };
  await waiting;
  assert.equal(connection.refusal(), undefined);
  assert.equal(connection.fatal(), undefined);

  stopped = new LockstepError("SEQUENCER_FORK_DETECTED", {
    timestamp: 5,
    receivedTimestamp: 9,
    storedHash: "aa",
    receivedHash: "bb",
  });
  status = { ...status, failed: true, connected: false, subscriptionCheck: "pending" };
  const fatal = connection.fatal();
  assert.equal(fatal?.code, "SEQUENCER_FORK_DETECTED");
  assert.equal(fatal?.message, stopped.message);
  assert.equal(fatal?.remedy, stopped.remedy);
  const started = Date.now();
  await assert.rejects(connection.awaitSubmittable(undefined, 5000), /differs/);
  assert.ok(Date.now() - started < 1000, "no grace once stopped for good");
});
