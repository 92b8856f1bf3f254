import assert from "node:assert/strict";
import { test } from "node:test";
import { LockstepError } from "../../src/common/errors.ts";
import {
  type Admission,
  checkMemberId,
  registrationRefusal,
  revokedRefusal,
} from "../../src/sequencer/member-admissions.ts";

const admitted: Admission = { member: "p::abc", state: "admitted", at: 10n, by: "operator" };
const revoked: Admission = { member: "p::abc", state: "revoked", at: 20n, by: "operator" };

test("registration: open lets anyone in, allow-list only the admitted, nobody lets a revoked member in", () => {
  assert.equal(registrationRefusal("open", "p::abc", undefined, "sync1::x"), undefined);
  assert.equal(registrationRefusal("allow-list", "p::abc", admitted, "sync1::x"), undefined);
  assert.equal(
    registrationRefusal("allow-list", "p::abc", undefined, "sync1::x")?.code,
    "TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED",
  );
  for (const mode of ["open", "allow-list"] as const) {
    const refusal = registrationRefusal(mode, "p::abc", revoked, "sync1::x");
    assert.equal(refusal?.code, "SEQUENCER_MEMBER_REVOKED");
    assert.equal(refusal?.metadata.revokedAt, "20");
  }
});

test("a revoked member's requests are refused; admit and revoke take member ids only, never the sequencer's", () => {
  assert.equal(revokedRefusal(admitted), undefined);
  assert.equal(revokedRefusal(undefined), undefined);
  assert.equal(revokedRefusal(revoked)?.code, "SEQUENCER_MEMBER_REVOKED");
  const ab = `1220${"ab".repeat(32)}`;
  const sequencer = `sequencer1::1220${"cd".repeat(32)}`;
  assert.doesNotThrow(() => checkMemberId(`participant1::${ab}`, sequencer));
  assert.doesNotThrow(() => checkMemberId(`Any_name-1:x y::${ab}`, sequencer));
  // Canton's unique identifiers (topology/Identifier.scala): <= 185 characters of the LF party
  // alphabet without "::", then a fingerprint.
  const bad = ["participant1", "::x", sequencer, "participant1::1220ab", `a::b::${ab}`, `a.b::${ab}`];
  for (const id of [...bad, `a\u0000::${ab}`, `${"n".repeat(186)}::${ab}`]) {
    assert.throws(
      () => checkMemberId(id, sequencer),
      (e) => e instanceof LockstepError && e.code === "INVALID_ARGUMENT",
    );
  }
});
