import assert from "node:assert/strict";
import { test } from "node:test";
import type { SequencedEvent } from "../../src/common/sequenced-event.ts";
import { RecentEvents } from "../../src/sequencer/recent-events.ts";

function view(
  member: string,
  timestamp: bigint,
  payloadBytes = 0,
): { member: string; event: SequencedEvent } {
  return {
    member,
    event: {
      timestamp,
      previousTimestamp: null,
      sender: "s::1220",
      messageId: `m-${timestamp}`,
      recipients: [member],
      payload: new Uint8Array(payloadBytes),
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

test("big payloads: the byte limit evicts too, and reads from there go to the database", () => {
  const recent = new RecentEvents(null, 100, 1000);
  recent.add([view("a", 1n, 600), view("a", 2n, 600), view("a", 3n, 600)]);
  assert.deepEqual(stamps(recent.read("a", 0n, 10)), [1, 2, 3], "not yet at 2 × 1000 bytes");
  recent.add([view("a", 4n, 600)]);
  // 2400 bytes > 2000: evicted down to at most 1000 bytes, i.e. the last one.
  assert.equal(recent.read("a", 3n, 10), undefined);
  assert.deepEqual(stamps(recent.read("a", 4n, 10)), [4]);
  recent.add([view("a", 5n, 600), view("a", 6n, 600)]);
  assert.deepEqual(stamps(recent.read("a", 4n, 10)), [4, 5, 6]);
  recent.add([view("a", 7n, 600)]);
  assert.deepEqual(stamps(recent.read("a", 7n, 10)), [7]);
  assert.equal(recent.read("a", 6n, 10), undefined);
});
