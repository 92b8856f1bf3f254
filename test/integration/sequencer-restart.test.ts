import assert from "node:assert/strict";
import { after, test } from "node:test";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import type { SequencedEvent } from "../../src/common/sequenced-event.ts";
import { validateNext, validateResubscription } from "../../src/sequencer-client/event-validation.ts";
import { startTestPostgres } from "../support/postgres.ts";
import {
  collectEvents,
  sequencerKeys,
  startTestSequencer,
  TestMember,
  type TestSequencer,
  validateChain,
} from "../support/sequencer-harness.ts";

const pg = await startTestPostgres();
let seq: TestSequencer | undefined;
after(async () => {
  await seq?.stop();
});

test("a restarted sequencer loses nothing, duplicates nothing, and a subscriber resumes inclusively", async () => {
  seq = await startTestSequencer(pg);
  const alice = new TestMember("alice");
  const bob = new TestMember("bob");
  await alice.register(seq.client);
  await bob.register(seq.client);
  const topologyBefore = (await seq.client.getTopology({})).transactions.length;
  const { keys } = await sequencerKeys(seq.client);

  const send = (i: number) =>
    (seq as TestSequencer).client.send(
      (i % 2 ? alice : bob).sendRequest({ recipients: [alice.id, bob.id], messageId: `m-${i}` }),
    );
  await Promise.all(Array.from({ length: 20 }, (_, i) => send(i)));
  // alice stores some of her events before the sequencer goes down.
  const stored = await collectEvents(seq.client, alice, { count: 12 });
  const lastStored = stored.at(-1) as SequencedEvent;
  const headBefore = (await seq.client.getSequencerStatus({})).headTimestamp as bigint;

  // A live subscription ends with a retryable error when the sequencer stops, not silently.
  const live = collectEvents(seq.client, bob, { from: headBefore + 1n, timeoutMs: 30_000 }).then(
    () => undefined,
    (error: unknown) => error,
  );
  await new Promise((resolve) => setTimeout(resolve, 200));
  seq = await seq.restart();
  assert.equal(fromConnectError(await live)?.code, "SEQUENCER_SHUTTING_DOWN");
  // Bootstrapping again is a no-op: same topology.
  assert.equal((await seq.client.getTopology({})).transactions.length, topologyBefore);
  assert.deepEqual((await sequencerKeys(seq.client)).keys, keys);
  await Promise.all(Array.from({ length: 20 }, (_, i) => send(20 + i)));
  const status = await seq.client.getSequencerStatus({});
  assert.ok((status.headTimestamp as bigint) > headBefore);

  // Resume from the last stored event, inclusive: it comes back identical, then the rest follows.
  const resumed = await collectEvents(seq.client, alice, { from: lastStored.timestamp, idleMs: 400 });
  validateResubscription(lastStored, resumed[0] as SequencedEvent, keys);
  let position = { timestamp: lastStored.timestamp, chainHash: lastStored.chainHash };
  for (const event of resumed.slice(1)) position = validateNext(position, event, keys);
  const aliceAll = [...stored, ...resumed.slice(1)];
  const aliceMessages = aliceAll.filter((e) => e.messageId.startsWith("m-")).map((e) => e.messageId);
  assert.equal(aliceMessages.length, 40);
  assert.equal(new Set(aliceMessages).size, 40);

  // bob reads everything from the start in one go across the restart: one chain, 40 messages once.
  const bobAll = await collectEvents(seq.client, bob, { idleMs: 400 });
  validateChain(bobAll, keys);
  const bobMessages = bobAll.filter((e) => e.messageId.startsWith("m-")).map((e) => e.messageId);
  assert.deepEqual(new Set(bobMessages), new Set(Array.from({ length: 40 }, (_, i) => `m-${i}`)));
  assert.equal(bobMessages.length, 40);
  const timestamps = bobAll.map((e) => e.timestamp);
  assert.deepEqual(
    timestamps,
    [...timestamps].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
  );
  assert.equal(new Set(timestamps).size, timestamps.length);
});
