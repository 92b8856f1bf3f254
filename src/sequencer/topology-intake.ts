import { LockstepError } from "../common/errors.ts";
import { parseUniqueIdentifier, uniqueIdentifierProblem } from "../common/ids.ts";
import type { Logger } from "../common/logging.ts";
import { END_OF_TIME, type Micros, maxMicros } from "../common/time.ts";
import { FINGERPRINT_PATTERN, type KeyPair } from "../crypto/keys.ts";
import { type SignedTopologyTransactionParts, signedTopologyFromParts } from "../crypto/topology.ts";
import type { AdmissionControl } from "./admission-control.ts";
import { addMediatorTransaction } from "./sequencer-bootstrap.ts";
import type { SequencerWriter } from "./sequencer-writer.ts";
import { checkTime } from "./submission-intake.ts";

export interface TopologyIntakeOptions {
  writer: SequencerWriter;
  admissions: AdmissionControl;
  sequencerId: string;
  /** Signs the MediatorDomainState the configured mediator's registration adds. */
  namespaceKey: KeyPair;
  /** The configured mediator's name: registering it also adds it to the MediatorDomainState. */
  mediatorName?: string;
  logger: Logger;
}

/**
 * RegisterMember and SubmitTopology: the topology members bring to the sequencer. Each is validated
 * against the writer's topology before it is queued, so a bad transaction is refused without a
 * writer round trip; the writer validates again at the sequencing timestamp.
 */
export class TopologyIntake {
  constructor(private readonly options: TopologyIntakeOptions) {}

  /**
   * Sequences a self-signed MemberKeys add; the member is registered from its timestamp. A retry
   * of the same transaction returns the first registration. The configured mediator is also added
   * to the MediatorDomainState, in the same event.
   */
  async registerMember(
    parts: SignedTopologyTransactionParts,
  ): Promise<{ member: string; registeredAt: Micros }> {
    const { writer, admissions, sequencerId, logger } = this.options;
    const signed = signedTopologyFromParts(parts);
    const { operation, mapping } = signed.transaction;
    if (operation !== "add" || mapping.type !== "MemberKeys") {
      throw new LockstepError("INVALID_TOPOLOGY_MAPPING", {
        reason: `RegisterMember takes a MemberKeys add, not a ${mapping.type} ${operation}`,
      });
    }
    const member = mapping.member;
    // The topology checks the namespace; the name must follow Canton's rules too (ids.ts), or a
    // stranger could store what no operator can name (a NUL byte, a 1 MiB name) under open onboarding.
    const problem = uniqueIdentifierProblem(member, FINGERPRINT_PATTERN);
    if (problem) {
      throw new LockstepError("INVALID_TOPOLOGY_MAPPING", {
        reason: `member "${member.slice(0, 200)}": ${problem}`,
      });
    }
    // Refused before anything else: a revoked member stays out, an unknown one needs admitting.
    admissions.requireNotRevoked(member);
    const registered = writer.registeredAt(member);
    if (
      registered !== undefined &&
      writer.topology.transactions().some((e) => e.signed.hash === signed.hash)
    ) {
      return { member, registeredAt: registered };
    }
    if (member === sequencerId) {
      throw new LockstepError("INVALID_TOPOLOGY_MAPPING", { reason: "the sequencer cannot register itself" });
    }
    admissions.checkRegistration(member);
    const after = writer.topology.apply(signed, checkTime(writer) + 1n);
    const transactions = [signed];
    if (
      this.options.mediatorName !== undefined &&
      parseUniqueIdentifier(member).name === this.options.mediatorName
    ) {
      // Anyone may pick the mediator's name. Canton's mediators are added by the synchronizer's
      // owners (MediatorSynchronizerState), never by registering: here the first one (bootstrap),
      // or one the operator admitted by its id. Else, under open onboarding, any stranger could
      // join the mediators and decide the requests a colluding submitter sends it.
      const mediators = after.mediators(END_OF_TIME);
      if (mediators.length === 0 || writer.admission(member)?.by === "operator") {
        const mediatorState = addMediatorTransaction(after, member, this.options.namespaceKey);
        if (mediatorState) transactions.push(mediatorState);
      } else {
        logger.warn(
          { member, mediators },
          "registered, but not as a mediator: the synchronizer has one; `lockstep synchronizer admit` this id to add it",
        );
      }
    }
    const at = await writer.submit({ kind: "topology", transactions, registers: member });
    logger.info({ member, at: at.toString() }, "registered member");
    return { member, registeredAt: writer.registeredAt(member) ?? at };
  }

  /**
   * Sequences owner-signed topology transactions from a member: party allocation, and a registered
   * member's own MemberKeys (signing key rotation, docs/keys.md). Onboarding and mediator changes
   * stay with RegisterMember and the synchronizer, so a member cannot onboard others or change
   * parameters through here; a retry of an already sequenced transaction returns its timestamp.
   */
  async submitTopology(parts: readonly SignedTopologyTransactionParts[]): Promise<Micros> {
    const { writer, admissions, sequencerId, logger } = this.options;
    const transactions = parts.map((p) => signedTopologyFromParts(p));
    const known = transactions.map((t) =>
      writer.topology.transactions().find((e) => e.signed.hash === t.hash),
    );
    if (known.every((e) => e !== undefined))
      return known.reduce((max, e) => maxMicros(max, e.effectiveAt), 0n);
    let state = writer.topology;
    for (const signed of transactions) {
      const { mapping, operation } = signed.transaction;
      const keyRotation =
        mapping.type === "MemberKeys" &&
        operation === "add" &&
        mapping.member !== sequencerId &&
        writer.registeredAt(mapping.member) !== undefined;
      if (mapping.type !== "PartyToParticipant" && !keyRotation) {
        throw new LockstepError("INVALID_TOPOLOGY_MAPPING", {
          reason: `members submit PartyToParticipant or their own MemberKeys (a registered member's key rotation), not ${operation} ${mapping.type}`,
        });
      }
      // Party ids are unique identifiers by Canton's rules, as member ids (ids.ts): no NUL byte or
      // 1 MiB name goes to every member's topology.
      if (mapping.type === "PartyToParticipant") {
        const problem = uniqueIdentifierProblem(mapping.party, FINGERPRINT_PATTERN);
        if (problem) {
          throw new LockstepError("INVALID_TOPOLOGY_MAPPING", {
            reason: `party "${mapping.party.slice(0, 200)}": ${problem}`,
          });
        }
      }
      // A revoked member's sends are refused (SEQUENCER_MEMBER_REVOKED): so is the topology it owns,
      // which anyone may relay, or it could still put events before every member (party allocations).
      admissions.requireNotRevoked(
        mapping.type === "PartyToParticipant" ? mapping.participant : mapping.member,
      );
      // Validate now (signature, owner, serial) so a bad one is refused without a writer round trip.
      state = state.apply(signed, checkTime(writer) + 1n);
    }
    const at = await writer.submit({ kind: "topology", transactions });
    logger.info({ at: at.toString(), count: transactions.length }, "sequenced member topology");
    return at;
  }
}
