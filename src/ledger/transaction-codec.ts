import { z } from "zod";
import { LockstepError } from "../common/errors.ts";
import { type Bytes, hashFields } from "../common/hash.ts";
import type { ActiveContract } from "./contract.ts";
import { ledgerJson } from "./ledger-value.ts";
import { issuesText } from "./templates/template-registry.ts";
import type { Transaction, TransactionNode } from "./transaction.ts";

/**
 * The canonical serialization of a transaction: what travels (opaque) in a confirmation request
 * and what its root hash covers. JSON with sorted keys and no white space; bigints as decimal
 * strings. A parser accepts only this one encoding, so equal transactions have equal bytes.
 */

const micros = z
  .string()
  .regex(/^-?\d{1,20}$/, "microseconds as a decimal string")
  .transform((s) => BigInt(s));
const parties = z.array(z.string().min(1));
const record = z.record(z.string(), z.json());

const contractSchema = z.strictObject({
  contractId: z.string(),
  template: z.string(),
  arguments: record,
  signatories: parties,
  observers: parties,
  createdAt: micros,
  salt: z.string().regex(/^[0-9a-f]{64}$/),
});

const createNodeSchema = z.strictObject({
  kind: z.literal("create"),
  contractId: z.string(),
  template: z.string(),
  arguments: record,
  signatories: parties,
  observers: parties,
});

const nodeSchema: z.ZodType<TransactionNode> = z.lazy(() =>
  z.discriminatedUnion("kind", [
    createNodeSchema,
    z.strictObject({
      kind: z.literal("exercise"),
      contractId: z.string(),
      template: z.string(),
      choice: z.string(),
      argument: z.json(),
      actingParties: parties,
      consuming: z.boolean(),
      signatories: parties,
      observers: parties,
      children: z.array(nodeSchema),
    }),
  ]),
);

const commandSchema = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("create"), template: z.string(), arguments: z.json(), actAs: parties }),
  z.strictObject({
    kind: z.literal("exercise"),
    contractId: z.string(),
    choice: z.string(),
    argument: z.json(),
    actAs: parties,
  }),
]);

const transactionSchema = z.strictObject({
  version: z.literal(1),
  command: commandSchema,
  submitter: z.strictObject({
    participant: z.string(),
    userId: z.string(),
    commandId: z.string(),
    submissionId: z.string(),
  }),
  ledgerTime: micros,
  nodes: z.array(nodeSchema),
  inputContracts: z.array(contractSchema),
  createdContracts: z.array(contractSchema),
  archivedContracts: z.array(z.string()),
  informees: parties,
  confirmingParties: parties,
});

function contractToWire(c: ActiveContract) {
  return { ...c, createdAt: c.createdAt.toString() };
}

/** The transaction as a JSON value (bigints as strings); what serializeTransaction encodes. */
export function transactionToJson(tx: Transaction): Record<string, unknown> {
  return {
    ...tx,
    ledgerTime: tx.ledgerTime.toString(),
    inputContracts: tx.inputContracts.map(contractToWire),
    createdContracts: tx.createdContracts.map(contractToWire),
  };
}

export function serializeTransaction(tx: Transaction): Uint8Array {
  return Buffer.from(ledgerJson(transactionToJson(tx)), "utf8");
}

/** Parses and checks the shape; LOCAL_VERDICT_MALFORMED_PAYLOAD for anything but the canonical encoding. */
export function parseTransaction(bytes: Bytes): Transaction {
  const text = Buffer.from(bytes).toString("utf8");
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw malformed("the transaction is not JSON");
  }
  const parsed = transactionSchema.safeParse(json);
  if (!parsed.success) throw malformed(issuesText(parsed.error));
  const tx: Transaction = parsed.data;
  if (ledgerJson(transactionToJson(tx)) !== text) {
    throw malformed("the transaction is not in canonical form (sorted keys, no white space)");
  }
  return tx;
}

/** The root hash: SHA-256 over the canonical serialization (32 bytes). */
export function transactionHash(tx: Transaction): Buffer {
  return hashSerializedTransaction(serializeTransaction(tx));
}

/** The root hash of serialized bytes; equals transactionHash(parseTransaction(bytes)). */
export function hashSerializedTransaction(bytes: Bytes): Buffer {
  return hashFields("lockstep-transaction-v1", bytes);
}

function malformed(details: string): LockstepError {
  return new LockstepError("LOCAL_VERDICT_MALFORMED_PAYLOAD", { details });
}
