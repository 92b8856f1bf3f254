import assert from "node:assert/strict";
import { test } from "node:test";
import { type FenceNotice, fenceMac, fenceMacValid, judgeFence } from "../../src/node/writer-fencing.ts";

const notice: FenceNotice = {
  node: "participant1",
  targetActivation: "old",
  writerEpoch: 5n,
  writerActivation: "new",
  writerEndpoint: "10.0.0.2:4011",
};
const secret = Buffer.alloc(32, 1);

test("a fence notice's MAC binds every field and the node's secret", () => {
  const mac = fenceMac(secret, notice);
  assert.ok(fenceMacValid(secret, notice, mac));
  assert.ok(!fenceMacValid(Buffer.alloc(32, 2), notice, mac), "another node's secret");
  for (const changed of [
    { node: "participant2" },
    { targetActivation: "other" },
    { writerEpoch: 6n },
    { writerActivation: "x" },
    { writerEndpoint: "10.0.0.3:4011" },
  ]) {
    assert.ok(
      !fenceMacValid(secret, { ...notice, ...changed }, mac),
      JSON.stringify(changed, (_, v) => `${v}`),
    );
  }
  assert.ok(!fenceMacValid(secret, notice, mac.subarray(0, 16)), "a truncated MAC");
});

test("judging a notice: only the target activation's process, and only on a stale copy, is fenced", () => {
  assert.equal(judgeFence({ ownActivation: "old", notice, databaseEpoch: 4n }), "fenced");
  // Its database already carries the sender's epoch: one database, the lock decides.
  assert.equal(judgeFence({ ownActivation: "old", notice, databaseEpoch: 5n }), "same-database");
  assert.equal(judgeFence({ ownActivation: "old", notice, databaseEpoch: 9n }), "same-database");
  // Never active here, or active since under another activation.
  assert.equal(judgeFence({ ownActivation: undefined, notice, databaseEpoch: 1n }), "not-that-activation");
  assert.equal(judgeFence({ ownActivation: "newer", notice, databaseEpoch: 1n }), "not-that-activation");
});
