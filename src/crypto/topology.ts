import { LockstepError } from "../common/errors.ts";
import { END_OF_TIME, type Micros } from "../common/time.ts";
import { fingerprint, type KeyPair, type PublicKeyInfo, verify } from "./keys.ts";
import {
  DEFAULT_SYNCHRONIZER_PARAMETERS,
  invalidMapping,
  namespaceOf,
  requiredNamespace,
  type SignedTopologyTransaction,
  type SynchronizerParametersValues,
  signedTopologyFromParts,
  signedTopologyToParts,
  signTopologyTransaction,
  type TopologyMapping,
  type TopologyTransaction,
  topologySigningDigest,
  uniqueKey,
} from "./topology-transaction.ts";

export * from "./topology-transaction.ts";

/**
 * The topology state (docs/design.md §2 "Topology and keys"): signed topology transactions, sequenced like
 * any event and effective from their sequencing timestamp, reduced into a state that answers
 * "as of t" queries. Which key must sign what, and serials: see topology-transaction.ts.
 */

export interface TopologyEntry {
  readonly signed: SignedTopologyTransaction;
  /** Its sequencing timestamp. */
  readonly effectiveAt: Micros;
}

/** Append-only history shared by successive states; a state sees its first `length` entries. */
class TopologyLog {
  readonly entries: TopologyEntry[] = [];
  readonly byKey = new Map<string, number[]>();

  append(entry: TopologyEntry): void {
    const key = uniqueKey(entry.signed.transaction.mapping);
    const indexes = this.byKey.get(key) ?? [];
    indexes.push(this.entries.length);
    this.byKey.set(key, indexes);
    this.entries.push(entry);
  }
}

/**
 * The synchronizer's topology with its whole history: an immutable value (apply returns a new
 * state) whose queries take the time `at` they are asked for; an entry counts from its
 * effectiveAt inclusive. Entries must be applied in sequencing order.
 */
export class TopologyState {
  private constructor(
    /** Fingerprint of the synchronizer's (sequencer operator's) namespace key. */
    readonly synchronizerNamespace: string,
    private readonly log: TopologyLog,
    private readonly length: number,
  ) {}

  static empty(synchronizerNamespace: string): TopologyState {
    return new TopologyState(synchronizerNamespace, new TopologyLog(), 0);
  }

  /**
   * Rebuilds the state from sequenced transactions (e.g. GetTopology when bootstrapping), skipping
   * the ones that are rejected, exactly as every member skips them when they arrive as events.
   */
  static replay(synchronizerNamespace: string, entries: Iterable<TopologyEntry>): TopologyState {
    let state = TopologyState.empty(synchronizerNamespace);
    for (const e of entries) state = state.tryApply(e.signed, e.effectiveAt).state;
    return state;
  }

  /** The accepted transactions, in order; only those effective at or before `asOf` if given. */
  transactions(asOf: Micros = END_OF_TIME): TopologyEntry[] {
    return this.log.entries.slice(0, this.length).filter((e) => e.effectiveAt <= asOf);
  }

  get lastEffectiveAt(): Micros | null {
    return this.length === 0 ? null : (this.log.entries[this.length - 1] as TopologyEntry).effectiveAt;
  }

  /** Validates and applies, or throws the LockstepError that rejects the transaction. */
  apply(signed: SignedTopologyTransaction, effectiveAt: Micros): TopologyState {
    const last = this.lastEffectiveAt;
    if (last !== null && effectiveAt < last) {
      throw new LockstepError("INTERNAL_ERROR", {
        details: `topology transaction at ${effectiveAt} applied after one at ${last}`,
      });
    }
    // Re-derive from the bytes: the signature covers them, not the object a caller may have built.
    const checked = signedTopologyFromParts(signedTopologyToParts(signed));
    this.validate(checked, effectiveAt);
    let log = this.log;
    if (this.length !== log.entries.length) {
      // This state is not the newest of its log: branch off with a copy of its own prefix.
      log = new TopologyLog();
      for (const e of this.log.entries.slice(0, this.length)) log.append(e);
    }
    log.append({ signed: checked, effectiveAt });
    return new TopologyState(this.synchronizerNamespace, log, this.length + 1);
  }

  /** As apply, but a rejection is returned (with the unchanged state) instead of thrown. */
  tryApply(
    signed: SignedTopologyTransaction,
    effectiveAt: Micros,
  ): { state: TopologyState; error?: LockstepError } {
    try {
      return { state: this.apply(signed, effectiveAt) };
    } catch (error) {
      if (error instanceof LockstepError && error.code !== "INTERNAL_ERROR") return { state: this, error };
      throw error;
    }
  }

  /** The serial the next transaction of this mapping's unique key must carry (across adds and removes). */
  nextSerial(mapping: TopologyMapping): number {
    const indexes = (this.log.byKey.get(uniqueKey(mapping)) ?? []).filter((i) => i < this.length);
    const last = indexes.at(-1);
    return last === undefined ? 1 : (this.log.entries[last] as TopologyEntry).signed.transaction.serial + 1;
  }

  /** An add of `mapping` with the next serial, signed with the namespace key that owns it. */
  issue(mapping: TopologyMapping, namespaceKey: KeyPair): SignedTopologyTransaction {
    return signTopologyTransaction(
      { operation: "add", serial: this.nextSerial(mapping), mapping },
      namespaceKey,
    );
  }

  snapshot(at: Micros): TopologySnapshot {
    return new TopologySnapshot(this, at);
  }

  isMember(member: string, at: Micros): boolean {
    return this.current(`member:${member}`, at)?.operation === "add";
  }

  members(at: Micros): string[] {
    const members: string[] = [];
    for (const key of this.log.byKey.keys()) {
      const member = key.startsWith("member:") ? key.slice("member:".length) : undefined;
      if (member !== undefined && this.isMember(member, at)) members.push(member);
    }
    return members.sort();
  }

  /** The member's signing keys at `at`; none if it is not (or no longer) a member. */
  signingKeysOf(member: string, at: Micros): PublicKeyInfo[] {
    const tx = this.current(`member:${member}`, at);
    if (tx?.operation !== "add" || tx.mapping.type !== "MemberKeys") return [];
    return tx.mapping.signingKeys.map((k) => ({
      fingerprint: k.fingerprint,
      publicKey: Buffer.from(k.publicKey, "hex"),
    }));
  }

  /** The raw public key of one of the member's signing keys, if it is valid at `at`. */
  signingKey(member: string, keyFingerprint: string, at: Micros): Buffer | undefined {
    return this.signingKeysOf(member, at).find((k) => k.fingerprint === keyFingerprint)?.publicKey;
  }

  participantOf(party: string, at: Micros): string | undefined {
    const tx = this.current(`party:${party}`, at);
    return tx?.operation === "add" && tx.mapping.type === "PartyToParticipant"
      ? tx.mapping.participant
      : undefined;
  }

  partiesOf(participant: string, at: Micros): string[] {
    const parties: string[] = [];
    for (const key of this.log.byKey.keys()) {
      if (key.startsWith("party:") && this.participantOf(key.slice("party:".length), at) === participant) {
        parties.push(key.slice("party:".length));
      }
    }
    return parties.sort();
  }

  parameters(at: Micros): SynchronizerParametersValues {
    const tx = this.current("parameters", at);
    if (tx?.operation !== "add" || tx.mapping.type !== "SynchronizerParameters")
      return DEFAULT_SYNCHRONIZER_PARAMETERS;
    const { type: _type, ...values } = tx.mapping;
    return values;
  }

  mediators(at: Micros): string[] {
    const tx = this.current("mediators", at);
    return tx?.operation === "add" && tx.mapping.type === "MediatorDomainState"
      ? [...tx.mapping.mediators]
      : [];
  }

  /** The newest transaction of a unique key effective at `at` (entries are in effectiveAt order). */
  private current(key: string, at: Micros): TopologyTransaction | undefined {
    const indexes = this.log.byKey.get(key) ?? [];
    for (let i = indexes.length - 1; i >= 0; i--) {
      const index = indexes[i] as number;
      if (index >= this.length) continue;
      const entry = this.log.entries[index] as TopologyEntry;
      if (entry.effectiveAt <= at) return entry.signed.transaction;
    }
    return undefined;
  }

  private validate(signed: SignedTopologyTransaction, effectiveAt: Micros): void {
    const { hash, transaction: tx } = signed;
    const mapping = tx.mapping;
    if (!verify(signed.signerKey, topologySigningDigest(signed.bytes), signed.signature)) {
      throw new LockstepError("INVALID_TOPOLOGY_TX_SIGNATURE_ERROR", {
        hash,
        reason: `the signature does not verify with signer key ${fingerprint(signed.signerKey)}`,
      });
    }
    const signer = fingerprint(signed.signerKey);
    const required = requiredNamespace(mapping, this.synchronizerNamespace);
    if (signer !== required) {
      throw new LockstepError("UNAUTHORIZED_TOPOLOGY_TRANSACTION", {
        hash,
        reason: `${mapping.type} must be signed by namespace ${required}, not ${signer}`,
      });
    }
    const prior = this.current(uniqueKey(mapping), END_OF_TIME);
    const expected = (prior?.serial ?? 0) + 1;
    if (tx.serial !== expected) {
      throw new LockstepError("SERIAL_MISMATCH", { hash, actual: tx.serial, expected });
    }
    if (tx.operation === "remove") {
      if (mapping.type === "SynchronizerParameters")
        throw invalidMapping("synchronizer parameters cannot be removed");
      if (prior?.operation !== "add") throw invalidMapping(`nothing to remove for ${uniqueKey(mapping)}`);
      return;
    }
    switch (mapping.type) {
      case "MemberKeys": {
        if (fingerprint(Buffer.from(mapping.namespaceKey, "hex")) !== namespaceOf(mapping.member)) {
          throw invalidMapping(`the namespace key of ${mapping.member} does not match its namespace`);
        }
        if (mapping.signingKeys.length === 0)
          throw invalidMapping(`${mapping.member} must have a signing key`);
        const seen = new Set<string>();
        for (const k of mapping.signingKeys) {
          if (fingerprint(Buffer.from(k.publicKey, "hex")) !== k.fingerprint) {
            throw invalidMapping(`signing key ${k.fingerprint} does not match its public key`);
          }
          if (seen.has(k.fingerprint)) throw invalidMapping(`signing key ${k.fingerprint} is listed twice`);
          seen.add(k.fingerprint);
        }
        return;
      }
      case "PartyToParticipant":
        // One signature authorizes both sides only when the party lives in the participant's namespace.
        if (namespaceOf(mapping.party) !== namespaceOf(mapping.participant)) {
          throw new LockstepError("UNAUTHORIZED_TOPOLOGY_TRANSACTION", {
            hash,
            reason: `party ${mapping.party} is not in the namespace of participant ${mapping.participant}`,
          });
        }
        if (!this.isMember(mapping.participant, effectiveAt)) {
          throw invalidMapping(`participant ${mapping.participant} is not a member`);
        }
        return;
      case "MediatorDomainState": {
        if (mapping.mediators.length === 0)
          throw invalidMapping("a mediator state needs a mediator; remove it instead");
        if (new Set(mapping.mediators).size !== mapping.mediators.length)
          throw invalidMapping("a mediator is listed twice");
        const unknown = mapping.mediators.filter((m) => !this.isMember(m, effectiveAt));
        if (unknown.length > 0) throw invalidMapping(`mediators are not members: ${unknown.join(", ")}`);
        return;
      }
      case "SynchronizerParameters":
        return;
    }
  }
}

/** The topology as of one timestamp: what a member validates an event at `at` against. */
export class TopologySnapshot {
  constructor(
    private readonly state: TopologyState,
    readonly at: Micros,
  ) {}

  isMember(member: string): boolean {
    return this.state.isMember(member, this.at);
  }
  members(): string[] {
    return this.state.members(this.at);
  }
  signingKeysOf(member: string): PublicKeyInfo[] {
    return this.state.signingKeysOf(member, this.at);
  }
  signingKey(member: string, keyFingerprint: string): Buffer | undefined {
    return this.state.signingKey(member, keyFingerprint, this.at);
  }
  participantOf(party: string): string | undefined {
    return this.state.participantOf(party, this.at);
  }
  partiesOf(participant: string): string[] {
    return this.state.partiesOf(participant, this.at);
  }
  parameters(): SynchronizerParametersValues {
    return this.state.parameters(this.at);
  }
  mediators(): string[] {
    return this.state.mediators(this.at);
  }
}
