import assert from "node:assert/strict";
import { test } from "node:test";
import type { SequencedEvent } from "../../src/common/sequenced-event.ts";
import { RecentEvents } from "../../src/sequencer/recent-events.ts";

function view(member: string, timestamp: bigint): { member: string; event: SequencedEvent } {
  return {
    member,
    event: {
      timestamp,
      previousTimestamp: null,
      sender: "s::1220",
      messageId: `m-${timestamp}`,
      recipients: [member],
      payload: new Uint8Array(0),
      chainHash: Buffer.alloc(32),
      signature: Buffer.alloc(64),
    },
  };
}
const stamps = (events: SequencedEvent[] | undefined) => events?.map((e) => Number(e.timestamp));

test("recent events answer only what they hold completely, else undefined (read the database)", () => {
  const recent = new RecentEvents(100n, 3);
  // Before the head at start: not here.
  assert.equal(recent.read("a", 100n, 10), undefined);
  // After it: known to be empty until added.
  assert.deepEqual(recent.read("a", 101n, 10), []);
  recent.add([view("a", 110n), view("b", 110n), view("a", 120n)]);
  assert.deepEqual(stamps(recent.read("a", 101n, 10)), [110, 120]);
  assert.deepEqual(stamps(recent.read("a", 111n, 10)), [120]);
  assert.deepEqual(stamps(recent.read("a", 101n, 1)), [110]);
  assert.deepEqual(stamps(recent.read("b", 111n, 10)), []);
  // A member first seen after start: everything after the start head is here too.
  assert.deepEqual(recent.read("c", 101n, 10), []);
  // Eviction (2 × perMember reached) keeps the newest perMember and raises that member's floor.
  recent.add([view("a", 130n), view("a", 140n), view("a", 150n)]);
  assert.deepEqual(stamps(recent.read("a", 101n, 10)), [110, 120, 130, 140, 150], "not yet at 2 × 3");
  recent.add([view("a", 160n)]);
  assert.equal(recent.read("a", 130n, 10), undefined, "evicted: read the database");
  assert.deepEqual(stamps(recent.read("a", 131n, 10)), [140, 150, 160]);
  assert.deepEqual(stamps(recent.read("b", 101n, 10)), [110], "other members keep theirs");
});

test("after pruning, reads from below the new lower bound go to the database", () => {
  const recent = new RecentEvents(null, 100);
  recent.add([view("a", 10n), view("a", 20n), view("b", 30n)]);
  assert.deepEqual(stamps(recent.read("a", 0n, 10)), [10, 20]);
  recent.prune(20n);
  assert.equal(recent.read("a", 10n, 10), undefined);
  assert.equal(recent.read("b", 19n, 10), undefined);
  assert.deepEqual(stamps(recent.read("a", 20n, 10)), [20]);
  assert.deepEqual(stamps(recent.read("b", 20n, 10)), [30]);
});
