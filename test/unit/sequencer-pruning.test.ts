import assert from "node:assert/strict";
import { test } from "node:test";
import { checkPruningSafe, safePruningPoint } from "../../src/sequencer/sequencer-pruning.ts";

// The safe pruning point is min(acknowledgements, oldest retention hold) (docs/design.md §2); --force may
// release holds but never pass an acknowledgement.

const member = (name: string, acknowledged: bigint | null, registeredAt = 10n) => ({
  member: name,
  registeredAt,
  writerEpoch: 1n,
  writerActivation: "",
  lastDelivered: 500n,
  acknowledged,
});
const hold = (setId: string, timestamp: bigint) => ({ setId, member: "p1", timestamp, createdAt: 0n });

test("the oldest hold pins the safe point below the acknowledgements, and is named", () => {
  const inputs = {
    positions: [member("p1", 300n), member("m1", 280n)],
    head: 500n,
    holds: [hold("set-b", 250n), hold("set-a", 120n)],
  };
  assert.deepEqual(safePruningPoint(inputs), { timestamp: 120n, pinnedBySet: "set-a" });
  assert.deepEqual(checkPruningSafe(120n, inputs), []);
  assert.throws(
    () => checkPruningSafe(121n, inputs),
    (e: Error & { code?: string }) =>
      e.code === "UNSAFE_TO_PRUNE" && /set-a/.test(e.message) && !/set-b/.test(e.message),
  );
  // Forced: both holds in the way are released, the acknowledgements still bound it.
  assert.deepEqual(checkPruningSafe(280n, inputs, true).sort(), ["set-a", "set-b"]);
  assert.throws(() => checkPruningSafe(281n, inputs, true), /m1 acknowledged 280/);
});

test("without holds the acknowledgements decide; a member that never acknowledged holds at its registration", () => {
  const inputs = { positions: [member("p1", null, 40n), member("m1", 280n)], head: 500n, holds: [] };
  assert.deepEqual(safePruningPoint(inputs), { timestamp: 40n, pinnedBySet: null });
  assert.throws(() => checkPruningSafe(41n, inputs, true), /p1 has not acknowledged/);
  // No members at all: everything below the head, unless a hold says otherwise.
  assert.deepEqual(safePruningPoint({ positions: [], head: 500n, holds: [] }).timestamp, 500n);
  assert.deepEqual(safePruningPoint({ positions: [], head: 500n, holds: [hold("s", 7n)] }).timestamp, 7n);
  assert.throws(
    () => checkPruningSafe(1n, { positions: [], head: null, holds: [] }),
    /nothing has been sequenced/,
  );
});
