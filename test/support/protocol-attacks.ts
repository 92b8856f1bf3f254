/**
 * What test/integration/confirmation-attacks.test.ts builds as a hostile member: confirmation
 * requests and responses as raw protocol payloads, and one-off queries of a node's database.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import pg from "pg";
import { nowMicros } from "../../src/common/time.ts";
import { ConfirmationRequestSchema } from "../../src/gen/lockstep/protocol/v1/confirmation_pb.ts";
import type { ActiveContract } from "../../src/ledger/contract.ts";
import { interpret } from "../../src/ledger/interpreter.ts";
import type { Command } from "../../src/ledger/transaction.ts";
import { hashSerializedTransaction, serializeTransaction } from "../../src/ledger/transaction-codec.ts";
import { protocolPayload, signConfirmationResponse } from "../../src/protocol/confirmation-messages.ts";
import type { TestMember } from "./sequencer-harness.ts";

/** One query (a client per query: a test's own after() runs after the cluster's cleanup). */
export async function queryOnce<R extends pg.QueryResultRow>(url: string, sql: string, values: unknown[]) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, values)).rows;
  } finally {
    await client.end();
  }
}

export const iou = (issuer: string, owner: string, amount = "1.00") => ({
  issuer,
  owner,
  amount,
  currency: "USD",
});
export const createIou = (args: ReturnType<typeof iou>, actAs: string[]): Command => ({
  kind: "create",
  template: "Iou",
  arguments: args,
  actAs,
});

/** A well-formed request as `submitter` would build it, with the given fields overridden. */
export function confirmationRequest(
  submitter: string,
  command: Command,
  overrides: {
    rootHash?: Buffer;
    submittingParticipant?: string;
    confirmingParties?: string[];
    input?: ActiveContract;
  } = {},
) {
  const submissionId = randomUUID();
  const transaction = interpret(command, {
    ledgerTime: nowMicros(),
    submitter: { participant: submitter, userId: "attacker", commandId: randomUUID(), submissionId },
    lookupContract: (id) => (id === overrides.input?.contractId ? overrides.input : undefined),
  });
  const bytes = serializeTransaction(transaction);
  const rootHash = overrides.rootHash ?? hashSerializedTransaction(bytes);
  const message = create(ConfirmationRequestSchema, {
    rootHash,
    informees: [...transaction.informees],
    confirmingParties: overrides.confirmingParties ?? [...transaction.confirmingParties],
    submittingParticipant: overrides.submittingParticipant ?? submitter,
    ledgerTime: transaction.ledgerTime,
    transaction: bytes,
  });
  return { rootHash, payload: protocolPayload({ kind: "request", message }) };
}

/** `member`'s signed response; `participant` and `signWith` forge it. */
export function responsePayload(
  member: TestMember,
  r: { requestId: bigint; rootHash: Buffer },
  parties: string[],
  verdict: "approve" | "reject",
  forge: { participant?: string; signWith?: TestMember } = {},
): Uint8Array {
  const response = signConfirmationResponse(
    {
      requestId: r.requestId,
      rootHash: r.rootHash,
      participant: forge.participant ?? member.id,
      confirmingParties: parties,
      verdict:
        verdict === "approve"
          ? { case: "approve", value: {} }
          : {
              case: "reject",
              value: { code: "MALLORY_SAYS_NO", reason: "changed my mind", participant: member.id },
            },
    },
    (forge.signWith ?? member).signing,
  );
  response.signingKeyFingerprint = member.signing.fingerprint;
  return protocolPayload({ kind: "response", message: response });
}
