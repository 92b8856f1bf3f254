import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { END_OF_TIME } from "../common/time.ts";
import type { OwnTopology } from "../crypto/key-rotation.ts";
import type { KeyStore } from "../crypto/key-store.ts";
import { type KeyPair, signAsync } from "../crypto/keys.ts";
import type { SequencerWriter } from "./sequencer-writer.ts";
import { checkTime } from "./submission-intake.ts";

/**
 * The sequencer's keys (docs/keys.md): the namespace key the synchronizer's id hangs on, and the
 * signing key it signs events with, which changes when a rotation activates a new one.
 */
export class SequencerKeys {
  private constructor(
    readonly store: KeyStore,
    readonly namespace: KeyPair,
    /** Preferred: the newest active key. */
    private signing: KeyPair,
    /** Every stored signing key not revoked, by fingerprint (signerFor falls back to these). */
    private candidates: Map<string, KeyPair>,
  ) {}

  /** Loaded once the store follows topology (KeyStore.reconcile), so the picked key is listed. */
  static async load(store: KeyStore, namespace: KeyPair): Promise<SequencerKeys> {
    return new SequencerKeys(
      store,
      namespace,
      await store.activeSigningKey(),
      await signingCandidates(store),
    );
  }

  get signingKey(): KeyPair {
    return this.signing;
  }

  /**
   * Signs an event's bytes with the preferred key while topology lists it, else a stored key it
   * lists: recipients check an event with the keys at t - 1, and a rotation's revoke may drop the
   * preferred key before keysChanged runs.
   */
  sign(bytes: Buffer, listed: readonly string[]): Promise<Buffer> {
    return signAsync(this.signerFor(listed).privateKey, bytes);
  }

  /** The key to sign an event with, given the fingerprints topology lists just before it. */
  private signerFor(listed: readonly string[]): KeyPair {
    if (listed.includes(this.signing.fingerprint)) return this.signing;
    for (const fingerprint of listed) {
      const key = this.candidates.get(fingerprint);
      if (key) return key;
    }
    // Before the sequencer's own MemberKeys exist (its first bootstrap event) nothing is listed.
    return this.signing;
  }

  /** The sequencer's own topology for its key rotation (node/key-admin.ts): its writer sequences it at once. */
  ownTopology(args: { writer: SequencerWriter; sequencerId: string; logger: Logger }): OwnTopology {
    const { writer, sequencerId, logger } = args;
    return {
      member: () => sequencerId,
      topology: () => writer.topology,
      submit: async (transactions) => {
        let state = writer.topology;
        // Validated first: the writer skips a rejected transaction, which would pass for done.
        for (const signed of transactions) state = state.apply(signed, checkTime(writer) + 1n);
        // The keys it may sign with from then on: every stored one not revoked (a pending key
        // being announced among them); never a listing it holds no private key for.
        this.candidates = await signingCandidates(this.store);
        const listed = state.signingKeysOf(sequencerId, END_OF_TIME);
        if (!listed.some((k) => this.candidates.has(k.fingerprint))) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details:
              "the sequencer would be left without a signing key it holds: keep one of its stored keys",
          });
        }
        return writer.submit({ kind: "topology", transactions });
      },
      awaitEffective: async () => {},
      keysChanged: async () => {
        this.candidates = await signingCandidates(this.store);
        this.signing = await this.store.activeSigningKey();
        logger.info({ fingerprint: this.signing.fingerprint }, "signing events with key");
      },
    };
  }
}

async function signingCandidates(store: KeyStore): Promise<Map<string, KeyPair>> {
  const keys = await store.list();
  return new Map(
    keys.filter((k) => k.purpose === "signing" && k.state !== "revoked").map((k) => [k.fingerprint, k]),
  );
}
