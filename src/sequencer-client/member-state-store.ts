import type { Micros } from "../common/time.ts";
import {
  type SignedTopologyTransaction,
  signedTopologyFromParts,
  type TopologyEntry,
  TopologyState,
} from "../crypto/topology.ts";
import type { Db, Queryable } from "../storage/db.ts";
import type { Registration } from "./sequencer-client.ts";

interface RegistrationRow {
  member: string;
  registered_at: bigint;
  sequencer_id: string;
  synchronizer_id: string;
  synchronizer_namespace: string;
}

interface TopologyRow {
  effective_at: bigint;
  transaction: Buffer;
  signer_public_key: Buffer;
  signature: Buffer;
}

/**
 * What the client keeps about its membership in the member's DB: the registration (so a restart
 * does not register again) and the accepted topology transactions (so event signatures are checked
 * against the sequencer keys of the member's own history, not whatever the sequencer says now).
 */
export class MemberStateStore {
  constructor(private readonly db: Db) {}

  async registration(): Promise<Registration | undefined> {
    const row = await this.db.maybeOne<RegistrationRow>(
      "SELECT member, registered_at, sequencer_id, synchronizer_id, synchronizer_namespace FROM sequencer_client_registration",
    );
    return (
      row && {
        member: row.member,
        registeredAt: row.registered_at,
        sequencerId: row.sequencer_id,
        synchronizerId: row.synchronizer_id,
        synchronizerNamespace: row.synchronizer_namespace,
      }
    );
  }

  /** Stores the registration with the topology it starts from, atomically: both or neither. */
  async saveRegistration(registration: Registration, topology: readonly TopologyEntry[]): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.execute(
        `INSERT INTO sequencer_client_registration
           (member, registered_at, sequencer_id, synchronizer_id, synchronizer_namespace)
         VALUES ($1, $2, $3, $4, $5)`,
        [
          registration.member,
          registration.registeredAt,
          registration.sequencerId,
          registration.synchronizerId,
          registration.synchronizerNamespace,
        ],
      );
      for (const entry of topology) await this.appendTopology(tx, entry.signed, entry.effectiveAt);
    });
  }

  async appendTopology(tx: Queryable, signed: SignedTopologyTransaction, effectiveAt: Micros): Promise<void> {
    await tx.execute(
      `INSERT INTO sequencer_client_topology (effective_at, transaction, signer_public_key, signature)
       VALUES ($1, $2, $3, $4)`,
      [effectiveAt, signed.bytes, signed.signerKey, signed.signature],
    );
  }

  /** The topology state as of the last processed event. */
  async loadTopology(synchronizerNamespace: string): Promise<TopologyState> {
    const rows = await this.db.query<TopologyRow>(
      "SELECT effective_at, transaction, signer_public_key, signature FROM sequencer_client_topology ORDER BY seq",
    );
    return TopologyState.replay(
      synchronizerNamespace,
      rows.map((r) => ({
        effectiveAt: r.effective_at,
        signed: signedTopologyFromParts({
          transaction: r.transaction,
          signerPublicKey: r.signer_public_key,
          signature: r.signature,
        }),
      })),
    );
  }
}
