import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { uniqueIdentifier } from "../../src/common/ids.ts";
import {
  announceMapping,
  reconcileKeyStates,
  revokeMapping,
  type StoredKeyState,
} from "../../src/crypto/key-rotation.ts";
import { generateKeyPair } from "../../src/crypto/keys.ts";
import { memberKeys } from "../../src/crypto/topology.ts";

const ns = generateKeyPair("namespace");
const member = uniqueIdentifier("participant1", ns.fingerprint);
const oldKey = generateKeyPair("signing");
const newKey = generateKeyPair("signing");
const third = generateKeyPair("signing");

const stored = (
  fingerprint: string,
  state: StoredKeyState["state"],
  purpose: StoredKeyState["purpose"] = "signing",
) => ({ fingerprint, state, purpose });

describe("reconcileKeyStates", () => {
  test("a pending key topology lists becomes active; the listed active key stays", () => {
    const transitions = reconcileKeyStates(
      [stored(oldKey.fingerprint, "active"), stored(newKey.fingerprint, "pending")],
      new Set([oldKey.fingerprint, newKey.fingerprint]),
    );
    assert.deepEqual(transitions, [{ fingerprint: newKey.fingerprint, to: "active" }]);
  });

  test("an active key topology no longer lists becomes revoked", () => {
    const transitions = reconcileKeyStates(
      [stored(oldKey.fingerprint, "active"), stored(newKey.fingerprint, "active")],
      new Set([newKey.fingerprint]),
    );
    assert.deepEqual(transitions, [{ fingerprint: oldKey.fingerprint, to: "revoked" }]);
  });

  test("announce and revoke both in topology (a crash before either was marked): both transitions", () => {
    const transitions = reconcileKeyStates(
      [stored(oldKey.fingerprint, "active"), stored(newKey.fingerprint, "pending")],
      new Set([newKey.fingerprint]),
    );
    assert.deepEqual(transitions, [
      { fingerprint: oldKey.fingerprint, to: "revoked" },
      { fingerprint: newKey.fingerprint, to: "active" },
    ]);
  });

  test("a pending key topology does not list stays pending; revoked keys stay revoked", () => {
    const transitions = reconcileKeyStates(
      [
        stored(third.fingerprint, "revoked"),
        stored(oldKey.fingerprint, "active"),
        stored(newKey.fingerprint, "pending"),
      ],
      new Set([oldKey.fingerprint, third.fingerprint]),
    );
    assert.deepEqual(transitions, []);
  });

  test("nothing when topology lists none of the stored keys (a store of another topology)", () => {
    const transitions = reconcileKeyStates(
      [stored(oldKey.fingerprint, "active"), stored(newKey.fingerprint, "pending")],
      new Set([third.fingerprint]),
    );
    assert.deepEqual(transitions, []);
    assert.deepEqual(reconcileKeyStates([stored(oldKey.fingerprint, "active")], new Set()), []);
  });

  test("namespace keys are never touched, listed or not", () => {
    const transitions = reconcileKeyStates(
      [
        stored(ns.fingerprint, "active", "namespace"),
        stored(oldKey.fingerprint, "active"),
        stored(newKey.fingerprint, "pending", "namespace"),
      ],
      new Set([oldKey.fingerprint, newKey.fingerprint]),
    );
    assert.deepEqual(transitions, []);
    // A namespace key that topology "lists" does not make the store look like this topology's.
    assert.deepEqual(
      reconcileKeyStates(
        [stored(ns.fingerprint, "active", "namespace"), stored(oldKey.fingerprint, "active")],
        new Set([ns.fingerprint]),
      ),
      [],
    );
  });
});

describe("announceMapping", () => {
  test("undefined when the key is listed already", () => {
    assert.equal(announceMapping(member, ns, [oldKey, newKey], newKey), undefined);
    assert.equal(announceMapping(member, ns, [newKey], newKey), undefined);
  });

  test("appends the new key after the listed ones, for the member under its namespace key", () => {
    const mapping = announceMapping(member, ns, [oldKey], newKey);
    assert.deepEqual(mapping, memberKeys(member, ns, [oldKey, newKey]));
    assert.equal(mapping?.member, member);
    assert.equal(mapping?.namespaceKey, ns.publicKey.toString("hex"));
    assert.deepEqual(
      mapping?.signingKeys.map((k) => k.fingerprint),
      [oldKey.fingerprint, newKey.fingerprint],
    );
  });
});

describe("revokeMapping", () => {
  test("keep-not-listed when the key to keep is not in topology (it was never announced)", () => {
    assert.equal(revokeMapping(member, ns, [oldKey], newKey.fingerprint), "keep-not-listed");
    assert.equal(revokeMapping(member, ns, [], newKey.fingerprint), "keep-not-listed");
  });

  test("undefined when only the key to keep is listed (already revoked)", () => {
    assert.equal(revokeMapping(member, ns, [newKey], newKey.fingerprint), undefined);
  });

  test("the mapping lists only the kept key; every other listed key is revoked", () => {
    const plan = revokeMapping(member, ns, [oldKey, third, newKey], newKey.fingerprint);
    assert.ok(plan !== undefined && plan !== "keep-not-listed");
    assert.deepEqual(plan.mapping, memberKeys(member, ns, [newKey]));
    assert.deepEqual(plan.revoked, [oldKey.fingerprint, third.fingerprint]);
  });
});
