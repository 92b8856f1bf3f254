import assert from "node:assert/strict";
import { after, test } from "node:test";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import type { SequencedEvent } from "../../src/common/sequenced-event.ts";
import { validateResubscription } from "../../src/sequencer-client/event-validation.ts";
import { startTestPostgres } from "../support/postgres.ts";
import {
  collectEvents,
  sequencerKeys,
  startTestSequencer,
  TestMember,
  type TestSequencer,
} from "../support/sequencer-harness.ts";

const pg = await startTestPostgres();
let seq: TestSequencer | undefined;
after(async () => {
  await seq?.stop();
});

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.equal(fromConnectError(error)?.code, code, String(error));
    return true;
  });
}

test("pruning stays below every acknowledgement, and pruned positions are refused", async () => {
  seq = await startTestSequencer(pg);
  const client = seq.client;
  const alice = new TestMember("alice");
  const bob = new TestMember("bob");
  const aliceAt = await alice.register(client);
  const bobAt = await bob.register(client);
  for (let i = 0; i < 10; i++) {
    await client.send(alice.sendRequest({ recipients: [alice.id, bob.id], messageId: `m-${i}` }));
  }
  const aliceEvents = await collectEvents(client, alice, { count: 12 });
  const bobEvents = await collectEvents(client, bob, { count: 11 });

  // Nobody acknowledged: the safe point is the first registration; above it is refused.
  let status = await client.getSequencerStatus({});
  assert.equal(status.safePruningTimestamp, aliceAt);
  await expectCode(client.prune({ beforeTimestamp: aliceAt + 1n }), "UNSAFE_TO_PRUNE");

  const aliceAck = (aliceEvents[8] as SequencedEvent).timestamp;
  const bobAck = (bobEvents[5] as SequencedEvent).timestamp;
  await client.acknowledge(alice.acknowledgeRequest(aliceAck));
  // bob's acknowledgement still blocks: min(acks) = bob's.
  await client.acknowledge(bob.acknowledgeRequest(bobAck));
  status = await client.getSequencerStatus({});
  assert.ok(bobAck < aliceAck);
  assert.equal(status.safePruningTimestamp, bobAck);
  await expectCode(client.prune({ beforeTimestamp: bobAck + 1n }), "UNSAFE_TO_PRUNE");
  assert.equal((await client.getSequencerStatus({})).pruningLowerBound, undefined);

  const pruned = await client.prune({ beforeTimestamp: bobAck });
  assert.equal(pruned.pruningLowerBound, bobAck);
  assert.ok(pruned.removedEvents > 0n);
  status = await client.getSequencerStatus({});
  assert.equal(status.pruningLowerBound, bobAck);

  // Below the lower bound, or "from the first event" that is gone: refused, never a gap.
  await expectCode(collectEvents(client, bob, { from: bobAck - 1n }), "EVENTS_UNAVAILABLE_FOR_TIMESTAMP");
  await expectCode(collectEvents(client, bob, {}), "EVENTS_UNAVAILABLE_FOR_TIMESTAMP");
  await expectCode(collectEvents(client, alice, { from: aliceAt }), "EVENTS_UNAVAILABLE_FOR_TIMESTAMP");
  assert.ok(bobAt > aliceAt);

  // From the acknowledged event on, everything is still there, the chain intact.
  const { keys } = await sequencerKeys(client);
  const resumed = await collectEvents(client, bob, { from: bobAck, idleMs: 300 });
  validateResubscription(bobEvents[5] as SequencedEvent, resumed[0] as SequencedEvent, keys);
  assert.deepEqual(
    resumed.map((e) => e.messageId),
    bobEvents.slice(5).map((e) => e.messageId),
  );

  // The chain continues across the pruned part: new events link to the last one.
  await client.send(bob.sendRequest({ recipients: [alice.id], messageId: "after-prune" }));
  const next = await collectEvents(client, alice, { from: aliceAck, idleMs: 300 });
  const last = next.at(-1) as SequencedEvent;
  assert.equal(last.messageId, "after-prune");
  assert.equal(last.previousTimestamp, (aliceEvents.at(-1) as SequencedEvent).timestamp);

  // Pruning again at or below the bound is a no-op.
  const again = await client.prune({ beforeTimestamp: bobAck });
  assert.equal(again.removedEvents, 0n);
});
