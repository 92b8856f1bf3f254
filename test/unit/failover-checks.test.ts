import assert from "node:assert/strict";
import { test } from "node:test";
import { exampleConfig } from "../../src/common/config.ts";
import { configNodes } from "../../src/common/config-schema.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import { checkOldPrimary, checkTarget, storageUrlKey } from "../../src/node/failover-checks.ts";
import type { ServerProbe } from "../../src/storage/server-probe.ts";

const node = { name: "participant1", kind: "participant" };
const unreachable = (host = "10.0.0.5:5432"): ServerProbe => ({
  host,
  kind: "unreachable",
  reason: "no answer in time",
});
const server = (
  inRecovery: boolean,
  readOnly = inRecovery,
  nodeState: { name: string; kind: string; writerEpoch: bigint } | null = {
    name: "participant1",
    kind: "participant",
    writerEpoch: 4n,
  },
  host = "10.0.1.5:5432",
): ServerProbe => ({ host, kind: "server", inRecovery, readOnly, nodeState });

function refusedWith(code: string) {
  return (error: unknown) => isLockstepError(error) && error.code === code && error.exitCode === 3;
}

test("the target must be a promoted, writable primary holding this node's database", () => {
  assert.deepEqual(checkTarget(node, "t", [server(false)]), { host: "10.0.1.5:5432", writerEpoch: 4n });
  assert.throws(() => checkTarget(node, "t", [server(true)]), refusedWith("FAILOVER_TARGET_NOT_PRIMARY"));
  assert.throws(
    () => checkTarget(node, "t", [server(false, true)]),
    refusedWith("FAILOVER_TARGET_NOT_PRIMARY"),
  );
  assert.throws(() => checkTarget(node, "t", [unreachable()]), refusedWith("FAILOVER_TARGET_NOT_PRIMARY"));
  assert.throws(
    () =>
      checkTarget(node, "t", [{ host: "h:1", kind: "error", reason: "no such database", sqlState: "3D000" }]),
    refusedWith("FAILOVER_TARGET_NOT_PRIMARY"),
  );
  // Another node's database, or none at all.
  assert.throws(
    () =>
      checkTarget(node, "t", [
        server(false, false, { name: "participant2", kind: "participant", writerEpoch: 1n }),
      ]),
    refusedWith("FAILOVER_TARGET_WRONG_DATABASE"),
  );
  assert.throws(
    () => checkTarget(node, "t", [server(false, false, null)]),
    refusedWith("FAILOVER_TARGET_WRONG_DATABASE"),
  );
});

test("of several hosts the one primary counts; two writable primaries are refused", () => {
  const standby = server(true, true, null, "h1:5432");
  const primary = server(false, false, undefined, "h2:5432");
  assert.equal(checkTarget(node, "t", [standby, unreachable("h3:5432"), primary]).host, "h2:5432");
  assert.throws(
    () => checkTarget(node, "t", [server(false, false, undefined, "h1:5432"), primary]),
    refusedWith("FAILOVER_TARGET_NOT_PRIMARY"),
  );
});

test("the old primary must be unreachable, a standby or read-only, unless the operator asserts it is fenced", () => {
  assert.equal(checkOldPrimary(node, "o", [unreachable()], false).fenced, "unreachable");
  assert.equal(checkOldPrimary(node, "o", [server(true)], false).fenced, "standby");
  assert.equal(checkOldPrimary(node, "o", [server(false, true)], false).fenced, "read-only");
  assert.throws(
    () => checkOldPrimary(node, "o", [server(false)], false),
    (error: unknown) => {
      assert.ok(refusedWith("FAILOVER_OLD_PRIMARY_LIVE")(error));
      assert.match((error as Error).message, /writable primary holding participant1 at writer epoch 4/);
      return true;
    },
  );
  // A server that answers with an error may still take others' writes: not fenced.
  assert.throws(
    () =>
      checkOldPrimary(
        node,
        "o",
        [{ host: "h:1", kind: "error", reason: "password", sqlState: "28P01" }],
        false,
      ),
    refusedWith("FAILOVER_OLD_PRIMARY_LIVE"),
  );
  // One live host of several is enough to refuse.
  assert.throws(
    () =>
      checkOldPrimary(node, "o", [unreachable("h1:5432"), server(false, false, undefined, "h2:5432")], false),
    refusedWith("FAILOVER_OLD_PRIMARY_LIVE"),
  );
  const asserted = checkOldPrimary(node, "o", [server(false)], true);
  assert.equal(asserted.fenced, "asserted");
  assert.equal(asserted.asserted, true);
  assert.match(asserted.hosts[0] as string, /writable primary/);
  // Asserted but also unreachable: the check's own finding is kept, the assertion recorded beside it.
  assert.deepEqual(checkOldPrimary(node, "o", [unreachable()], true), {
    fenced: "unreachable",
    hosts: ["10.0.0.5:5432: unreachable (no answer in time)"],
    asserted: true,
  });
});

test("the config key and its LOCKSTEP_ override for each node's storage.url", () => {
  const config = exampleConfig("/tmp/x");
  const keys = configNodes(config).map((entry) => storageUrlKey(config, entry));
  assert.deepEqual(keys, [
    { key: "synchronizer.sequencer.storage.url", env: "LOCKSTEP_SYNCHRONIZER_SEQUENCER_STORAGE_URL" },
    { key: "synchronizer.mediator.storage.url", env: "LOCKSTEP_SYNCHRONIZER_MEDIATOR_STORAGE_URL" },
    { key: "participants.0.storage.url", env: "LOCKSTEP_PARTICIPANTS_0_STORAGE_URL" },
    { key: "participants.1.storage.url", env: "LOCKSTEP_PARTICIPANTS_1_STORAGE_URL" },
  ]);
});
