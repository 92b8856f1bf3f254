import { z } from "zod";
import { canonicalJson } from "../common/canonical-json.ts";
import { LockstepError } from "../common/errors.ts";
import { type Bytes, sha256Hex, toHex } from "../common/hash.ts";
import { parseUniqueIdentifier } from "../common/ids.ts";
import { FINGERPRINT_PATTERN, type KeyPair, type PublicKeyInfo, sign, signingDigest } from "./keys.ts";

/**
 * Topology transactions (docs/design.md §2 "Topology and keys"): the mappings, their canonical
 * serialization (JSON with sorted keys, no white space) and signing. topology.ts reduces them
 * into a state; it re-exports everything here.
 *
 * Authorization: a transaction is signed by the namespace key that owns its mapping, and namespaces
 * are key fingerprints, so every signature is self-certifying (fingerprint(signer key) must be the
 * owning namespace). Owners: MemberKeys → the member's own namespace (self-signed onboarding);
 * PartyToParticipant → the hosting participant's (which must also be the party's namespace);
 * SynchronizerParameters and MediatorDomainState → the synchronizer's namespace.
 *
 * Serials (as Canton's): each mapping's unique key (member, party, or the singleton) has serials
 * 1, 2, 3, … across adds and removes, so an old signed transaction can never be replayed.
 */

export interface MemberKeys {
  readonly type: "MemberKeys";
  /** `name::namespace`; the namespace must be fingerprint(namespaceKey). */
  readonly member: string;
  /** Raw Ed25519 namespace public key, hex. */
  readonly namespaceKey: string;
  /** The member's signing keys; an add replaces the whole list (that is how keys are rotated or removed). */
  readonly signingKeys: readonly { readonly fingerprint: string; readonly publicKey: string }[];
}

export interface PartyToParticipant {
  readonly type: "PartyToParticipant";
  /** `alice::<participant namespace>`. */
  readonly party: string;
  readonly participant: string;
}

export interface SynchronizerParametersValues {
  readonly ledgerTimeRecordTimeToleranceMs: number;
  readonly participantResponseTimeoutMs: number;
  readonly maxDeduplicationDurationMs: number;
}

export interface SynchronizerParameters extends SynchronizerParametersValues {
  readonly type: "SynchronizerParameters";
}

export interface MediatorDomainState {
  readonly type: "MediatorDomainState";
  readonly mediators: readonly string[];
}

export type TopologyMapping = MemberKeys | PartyToParticipant | SynchronizerParameters | MediatorDomainState;

export type TopologyOperation = "add" | "remove";

export interface TopologyTransaction {
  readonly operation: TopologyOperation;
  /** 1 for the first transaction of the mapping's unique key, then +1 each. */
  readonly serial: number;
  readonly mapping: TopologyMapping;
}

export interface SignedTopologyTransaction {
  readonly transaction: TopologyTransaction;
  /** The canonical serialization: what is signed and what travels. */
  readonly bytes: Buffer;
  /** Raw namespace public key of the signer. */
  readonly signerKey: Buffer;
  /** Over signingDigest("topology-transaction", bytes). */
  readonly signature: Buffer;
  /** sha256 hex of bytes, to name the transaction in logs and errors. */
  readonly hash: string;
}

/** The wire form, field for field as sequencer.proto's SignedTopologyTransaction. */
export interface SignedTopologyTransactionParts {
  transaction: Uint8Array;
  signerPublicKey: Uint8Array;
  signature: Uint8Array;
}

/** Until the synchronizer issues SynchronizerParameters (same defaults as the config schema). */
export const DEFAULT_SYNCHRONIZER_PARAMETERS: SynchronizerParametersValues = {
  ledgerTimeRecordTimeToleranceMs: 60_000,
  participantResponseTimeoutMs: 30_000,
  maxDeduplicationDurationMs: 7 * 86_400_000,
};

// --- serialization -------------------------------------------------------------------------

const hexKey = z.string().regex(/^[0-9a-f]{64}$/, "a raw Ed25519 public key in lower-case hex");
const uid = z.string().refine((s) => {
  try {
    return FINGERPRINT_PATTERN.test(parseUniqueIdentifier(s).namespace);
  } catch {
    return false;
  }
}, "an id of the form name::<namespace fingerprint>");
const millis = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

const transactionSchema = z.strictObject({
  operation: z.enum(["add", "remove"]),
  serial: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  mapping: z.discriminatedUnion("type", [
    z.strictObject({
      type: z.literal("MemberKeys"),
      member: uid,
      namespaceKey: hexKey,
      signingKeys: z.array(
        z.strictObject({ fingerprint: z.string().regex(FINGERPRINT_PATTERN), publicKey: hexKey }),
      ),
    }),
    z.strictObject({ type: z.literal("PartyToParticipant"), party: uid, participant: uid }),
    z.strictObject({
      type: z.literal("SynchronizerParameters"),
      ledgerTimeRecordTimeToleranceMs: millis,
      participantResponseTimeoutMs: millis,
      maxDeduplicationDurationMs: millis,
    }),
    z.strictObject({ type: z.literal("MediatorDomainState"), mediators: z.array(uid) }),
  ]),
});

/**
 * One byte string per transaction: the canonical JSON of common/canonical-json.ts. Numbers are
 * serials and durations in millis: safe integers only.
 */
function topologyJson(value: unknown): string {
  return canonicalJson(value, "safe-integer");
}

export function serializeTopologyTransaction(tx: TopologyTransaction): Buffer {
  const parsed = transactionSchema.safeParse(tx);
  if (!parsed.success) throw invalidMapping(z.prettifyError(parsed.error));
  return Buffer.from(topologyJson(parsed.data), "utf8");
}

/** Parses and validates the shape; refuses any encoding but the canonical one. */
export function parseTopologyTransaction(bytes: Bytes): TopologyTransaction {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch {
    throw invalidMapping("the transaction is not JSON");
  }
  const parsed = transactionSchema.safeParse(json);
  if (!parsed.success) throw invalidMapping(z.prettifyError(parsed.error));
  if (!Buffer.from(topologyJson(parsed.data), "utf8").equals(Buffer.from(bytes))) {
    throw invalidMapping("the transaction is not in canonical form (sorted keys, no white space)");
  }
  return parsed.data;
}

export function signTopologyTransaction(
  tx: TopologyTransaction,
  namespaceKey: KeyPair,
): SignedTopologyTransaction {
  const bytes = serializeTopologyTransaction(tx);
  const signature = sign(namespaceKey.privateKey, topologySigningDigest(bytes));
  return {
    transaction: parseTopologyTransaction(bytes),
    bytes,
    signerKey: namespaceKey.publicKey,
    signature,
    hash: sha256Hex(bytes),
  };
}

/** From the wire form; checks the transaction's form, not its signature (apply does). */
export function signedTopologyFromParts(parts: SignedTopologyTransactionParts): SignedTopologyTransaction {
  const bytes = Buffer.from(parts.transaction);
  return {
    transaction: parseTopologyTransaction(bytes),
    bytes,
    signerKey: Buffer.from(parts.signerPublicKey),
    signature: Buffer.from(parts.signature),
    hash: sha256Hex(bytes),
  };
}

export function signedTopologyToParts(signed: SignedTopologyTransaction): SignedTopologyTransactionParts {
  return { transaction: signed.bytes, signerPublicKey: signed.signerKey, signature: signed.signature };
}

export function topologySigningDigest(bytes: Bytes): Buffer {
  return signingDigest("topology-transaction", bytes);
}

/** A MemberKeys mapping from key pairs (or their public parts). */
export function memberKeys(
  member: string,
  namespaceKey: { readonly publicKey: Buffer },
  signingKeys: readonly PublicKeyInfo[],
): MemberKeys {
  return {
    type: "MemberKeys",
    member,
    namespaceKey: toHex(namespaceKey.publicKey),
    signingKeys: signingKeys.map((k) => ({ fingerprint: k.fingerprint, publicKey: toHex(k.publicKey) })),
  };
}

/** The namespace whose key must sign a transaction of this mapping. */
export function requiredNamespace(mapping: TopologyMapping, synchronizerNamespace: string): string {
  switch (mapping.type) {
    case "MemberKeys":
      return namespaceOf(mapping.member);
    case "PartyToParticipant":
      return namespaceOf(mapping.participant);
    case "SynchronizerParameters":
    case "MediatorDomainState":
      return synchronizerNamespace;
  }
}

/** The key under which a mapping's transactions replace each other (and count serials). */
export function uniqueKey(mapping: TopologyMapping): string {
  switch (mapping.type) {
    case "MemberKeys":
      return `member:${mapping.member}`;
    case "PartyToParticipant":
      return `party:${mapping.party}`;
    case "SynchronizerParameters":
      return "parameters";
    case "MediatorDomainState":
      return "mediators";
  }
}

export function namespaceOf(id: string): string {
  return parseUniqueIdentifier(id).namespace;
}

export function invalidMapping(reason: string): LockstepError {
  return new LockstepError("INVALID_TOPOLOGY_MAPPING", { reason });
}
