import assert from "node:assert/strict";
import { test } from "node:test";
import { LockstepError } from "../../src/common/errors.ts";
import {
  authContextOf,
  authorizeSubmission,
  checkUserId,
  matchingUserId,
  requireAdmin,
  requireRead,
  rightKey,
  staleStreamReason,
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

test("a stream's authorization is stale when the user is gone or no longer reads its parties", () => {
  assert.equal(staleStreamReason("app", app, [alice, bob]), undefined);
  // Rights added or taken that the stream does not read leave it alone (Canton would close it).
  const more = authContextOf("app", [
    { kind: "can-read-as", party: alice },
    { kind: "can-read-as", party: bob },
    { kind: "participant-admin" },
  ]);
  assert.equal(staleStreamReason("app", more, [alice, bob]), undefined);
  assert.match(
    staleStreamReason("app", authContextOf("app", [{ kind: "can-act-as", party: alice }]), [alice, bob]) ??
      "",
    /no longer has CanReadAs or CanActAs for bob::1220ab/,
  );
  assert.match(staleStreamReason("app", undefined, [alice]) ?? "", /user app no longer exists/);
});
