import type { Micros } from "../common/time.ts";
import type { KeyState } from "./key-store.ts";
import type { KeyPurpose, PublicKeyInfo } from "./keys.ts";
import type { SignedTopologyTransaction, TopologyState } from "./topology.ts";
import { type MemberKeys, memberKeys } from "./topology-transaction.ts";

/**
 * Signing key rotation as pure decisions (docs/keys.md). The order is Canton's backup advice made a
 * rule: generate and store (pending) → back up → announce (topology lists old and new) → activate
 * (the node signs with the new key) → revoke the old (topology lists the new only). Announcing first
 * and revoking only once the new key is in force means there is never a moment without a key the
 * network accepts; refusing both steps until a backup holds the new key means no restore can come
 * back without the key topology expects.
 */

export interface StoredKeyState {
  readonly fingerprint: string;
  readonly purpose: KeyPurpose;
  readonly state: KeyState;
}

export interface KeyTransition {
  readonly fingerprint: string;
  readonly to: KeyState;
}

/**
 * Brings the store's signing key states in line with what topology lists for the member now: a
 * pending key topology lists becomes active (its announcement took effect, e.g. the node stopped
 * before it marked it, or it was restored from a set taken mid-rotation); an active key topology no
 * longer lists becomes revoked. Nothing when topology lists none of the stored keys: that store
 * does not belong to this topology (the restore check's MISSING_PRIVATE_KEY, not ours to paper over).
 */
export function reconcileKeyStates(
  stored: readonly StoredKeyState[],
  listed: ReadonlySet<string>,
): KeyTransition[] {
  const signing = stored.filter((k) => k.purpose === "signing");
  if (!signing.some((k) => listed.has(k.fingerprint))) return [];
  const out: KeyTransition[] = [];
  for (const key of signing) {
    if (key.state === "pending" && listed.has(key.fingerprint))
      out.push({ fingerprint: key.fingerprint, to: "active" });
    if (key.state === "active" && !listed.has(key.fingerprint))
      out.push({ fingerprint: key.fingerprint, to: "revoked" });
  }
  return out;
}

/** The member's keys with `added` announced beside the ones listed; undefined when it is listed already. */
export function announceMapping(
  member: string,
  namespaceKey: { readonly publicKey: Buffer },
  listed: readonly PublicKeyInfo[],
  added: PublicKeyInfo,
): MemberKeys | undefined {
  if (listed.some((k) => k.fingerprint === added.fingerprint)) return undefined;
  return memberKeys(member, namespaceKey, [...listed, added]);
}

/**
 * The member's keys with only `keep` left; undefined when that is already so. `keep` must be listed:
 * revoking every other key before the new one is in force would leave the member without a key.
 */
export function revokeMapping(
  member: string,
  namespaceKey: { readonly publicKey: Buffer },
  listed: readonly PublicKeyInfo[],
  keep: string,
): { mapping: MemberKeys; revoked: string[] } | undefined | "keep-not-listed" {
  const kept = listed.find((k) => k.fingerprint === keep);
  if (!kept) return "keep-not-listed";
  const revoked = listed.filter((k) => k.fingerprint !== keep).map((k) => k.fingerprint);
  if (revoked.length === 0) return undefined;
  return { mapping: memberKeys(member, namespaceKey, [kept]), revoked };
}

/** How a node kind reaches the synchronizer's topology for its own keys. */
export interface OwnTopology {
  /** The node's member id (throws before it registered). */
  member(): string;
  /** The newest topology the node has; after awaitEffective(t) it includes what is effective at t. */
  topology(): TopologyState;
  /** Sequences the transactions; resolves with the timestamp they are effective from. */
  submit(transactions: readonly SignedTopologyTransaction[]): Promise<Micros>;
  awaitEffective(at: Micros): Promise<void>;
  /** The store's active signing keys changed (the sequencer re-picks the key it signs events with). */
  keysChanged?(): Promise<void> | void;
}
