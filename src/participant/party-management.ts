import { setTimeout as sleep } from "node:timers/promises";
import { LockstepError } from "../common/errors.ts";
import { NAME_PATTERN, uniqueIdentifier } from "../common/ids.ts";
import { END_OF_TIME } from "../common/time.ts";
import type { KeyStore } from "../crypto/key-store.ts";
import { namespaceOf } from "../crypto/topology.ts";
import type { SequencerClient } from "../sequencer-client/sequencer-client.ts";
import type { Db } from "../storage/db.ts";
import type { PartyDetails } from "./ledger-api-backend.ts";
import { displayNames, recordParty } from "./participant-store.ts";

const ALLOCATION_TIMEOUT_MS = 30_000;

/** Parties (Canton's party management): hosting is topology, display names are local metadata. */
export class PartyManagement {
  constructor(
    private readonly db: Db,
    private readonly client: SequencerClient,
    private readonly keys: KeyStore,
  ) {}

  /** `hint::<participant namespace>`, resolved once this participant's topology shows it hosted here. */
  async allocate(partyIdHint: string, displayName = ""): Promise<{ party: string }> {
    if (!NAME_PATTERN.test(partyIdHint)) {
      throw new LockstepError("INVALID_ARGUMENT", {
        details: `party id hint "${partyIdHint}" must match ${NAME_PATTERN.source}`,
      });
    }
    const self = this.client.member;
    const party = uniqueIdentifier(partyIdHint, namespaceOf(self));
    const topology = this.client.topology();
    if (topology.participantOf(party, END_OF_TIME) !== self) {
      const signed = topology.issue(
        { type: "PartyToParticipant", party, participant: self },
        await this.keys.namespaceKey(),
      );
      // The sequencer validates it and sequences it to all members (effective from that timestamp).
      await this.client.submitTopology([signed]);
      await this.awaitHosted(party);
    }
    await recordParty(this.db, party, displayName);
    return { party };
  }

  /**
   * After a migration to a new synchronizer (synchronizer-migration.ts): hosts every party allocated
   * here on it again, signed with this participant's namespace key, and waits until each is effective.
   */
  async announceHosted(): Promise<string[]> {
    const self = this.client.member;
    const topology = this.client.topology();
    const missing = [...(await displayNames(this.db)).keys()].filter(
      (party) => topology.participantOf(party, END_OF_TIME) !== self,
    );
    if (missing.length === 0) return [];
    const key = await this.keys.namespaceKey();
    const signed = missing.map((party) =>
      this.client.topology().issue({ type: "PartyToParticipant", party, participant: self }, key),
    );
    await this.client.submitTopology(signed);
    for (const party of missing) await this.awaitHosted(party);
    return missing;
  }

  async list(): Promise<PartyDetails[]> {
    const self = this.client.member;
    const topology = this.client.topology();
    const names = await displayNames(this.db);
    const parties = new Set<string>();
    for (const entry of topology.transactions()) {
      const mapping = entry.signed.transaction.mapping;
      if (mapping.type === "PartyToParticipant") parties.add(mapping.party);
    }
    const out: PartyDetails[] = [];
    for (const party of [...parties].sort()) {
      const participant = topology.participantOf(party, END_OF_TIME);
      if (participant === undefined) continue;
      out.push({ party, isLocal: participant === self, participant, displayName: names.get(party) ?? "" });
    }
    return out;
  }

  private async awaitHosted(party: string): Promise<void> {
    const until = Date.now() + ALLOCATION_TIMEOUT_MS;
    while (this.client.topology().participantOf(party, END_OF_TIME) !== this.client.member) {
      if (Date.now() > until) {
        throw new LockstepError("REQUEST_TIME_OUT", {
          reason: `party ${party} did not become effective within ${ALLOCATION_TIMEOUT_MS / 1000} s`,
        });
      }
      await sleep(20);
    }
  }
}
