import assert from "node:assert/strict";
import { test } from "node:test";
import { LockstepError } from "../../src/common/errors.ts";
import { untilExpiry } from "../../src/participant/ledger-api-auth.ts";
import {
  authContextOf,
  authorizeSubmission,
  checkUserId,
  matchingUserId,
  requireAdmin,
  requireRead,
  rightKey,
} from "../../src/participant/user-rights.ts";

const codeOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof LockstepError);
    return error.code;
  }
  return "none";
};

const alice = "alice::1220ab";
const bob = "bob::1220ab";
const carol = "carol::1220ab";
const app = authContextOf("app", [
  { kind: "can-act-as", party: alice },
  { kind: "can-read-as", party: bob },
]);
const admin = authContextOf("admin", [{ kind: "participant-admin" }]);

test("a submission needs CanActAs for every act-as party and the token's own user id", () => {
  assert.equal(authorizeSubmission(app, { userId: "app", actAs: [alice] }), "app");
  assert.equal(
    authorizeSubmission(app, { userId: "", actAs: [alice], readAs: [bob] }),
    "app",
    "empty: the token's",
  );
  assert.equal(
    codeOf(() => authorizeSubmission(app, { userId: "app", actAs: [alice, bob] })),
    "PERMISSION_DENIED",
  );
  assert.equal(
    codeOf(() => authorizeSubmission(app, { userId: "other", actAs: [alice] })),
    "PERMISSION_DENIED",
  );
  assert.equal(
    codeOf(() => authorizeSubmission(app, { userId: "app", actAs: [alice], readAs: [carol] })),
    "PERMISSION_DENIED",
  );
  // ParticipantAdmin does not act as anyone (Canton's rights are separate).
  assert.equal(
    codeOf(() => authorizeSubmission(admin, { userId: "admin", actAs: [alice] })),
    "PERMISSION_DENIED",
  );
});

test("reading needs CanReadAs or CanActAs; administration ParticipantAdmin", () => {
  requireRead(app, [alice, bob], "read");
  assert.equal(
    codeOf(() => requireRead(app, [carol], "read")),
    "PERMISSION_DENIED",
  );
  requireAdmin(admin, "allocate a party");
  assert.equal(
    codeOf(() => requireAdmin(app, "allocate a party")),
    "PERMISSION_DENIED",
  );
  assert.equal(matchingUserId(app, "", "read completions"), "app");
  assert.equal(
    codeOf(() => matchingUserId(app, "admin", "read completions")),
    "PERMISSION_DENIED",
  );
});

test("user ids follow Canton's syntax; rights print as Canton names them", () => {
  assert.equal(checkUserId("alice-app@corp.example"), "alice-app@corp.example");
  for (const bad of ["", "has space", "x".repeat(129), "ünïcode"])
    assert.equal(
      codeOf(() => checkUserId(bad)),
      "INVALID_ARGUMENT",
    );
  assert.equal(rightKey({ kind: "can-act-as", party: alice }), `CanActAs(${alice})`);
  assert.equal(rightKey({ kind: "participant-admin" }), "ParticipantAdmin");
});

test("untilExpiry ends a quiet stream at the expiry with ACCESS_TOKEN_EXPIRED and stops its producer", async () => {
  const abort = new AbortController();
  let produced = 0;
  async function* quiet(): AsyncIterable<number> {
    produced++;
    yield 1;
    // Waits for more, as a live update stream does, until aborted.
    await new Promise<void>((resolve) =>
      abort.signal.addEventListener("abort", () => resolve(), { once: true }),
    );
  }
  const seen: number[] = [];
  const expiresAt = Date.now() + 150;
  await assert.rejects(
    (async () => {
      for await (const n of untilExpiry(quiet(), expiresAt, abort)) seen.push(n);
    })(),
    (error: unknown) => error instanceof LockstepError && error.code === "ACCESS_TOKEN_EXPIRED",
  );
  assert.deepEqual(seen, [1]);
  assert.ok(Date.now() >= expiresAt, "not before the expiry");
  assert.ok(abort.signal.aborted, "the producer was told to stop");
  assert.equal(produced, 1);

  // Without an expiry the stream is passed through unchanged.
  async function* three(): AsyncIterable<number> {
    yield* [1, 2, 3];
  }
  const all: number[] = [];
  for await (const n of untilExpiry(three(), undefined, new AbortController())) all.push(n);
  assert.deepEqual(all, [1, 2, 3]);
});
