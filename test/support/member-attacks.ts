/**
 * What the attack tests (test/integration/*-attacks.test.ts) share: the registry code a refused
 * call carried, and a member's own party allocation to submit (or to use as a marker event).
 */
import assert from "node:assert/strict";
import { ConnectError } from "@connectrpc/connect";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { signedTopologyToParts, signTopologyTransaction } from "../../src/crypto/topology.ts";
import type { TestMember } from "./sequencer-harness.ts";

/** A PartyToParticipant of `member`'s, signed by its namespace key. */
export const allocation = (member: TestMember, hint: string) =>
  signedTopologyToParts(
    signTopologyTransaction(
      {
        operation: "add",
        serial: 1,
        mapping: {
          type: "PartyToParticipant",
          party: `${hint}::${member.namespace.fingerprint}`,
          participant: member.id,
        },
      },
      member.namespace,
    ),
  );

/** The registry code of the error a call was refused with; fails when it was not refused. */
export async function refusal(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ConnectError, String(error));
    return fromConnectError(error)?.code;
  }
  assert.fail("not refused");
}
