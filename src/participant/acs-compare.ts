import { type ActiveContract, contractIdMatches, stakeholdersOf } from "../ledger/contract.ts";
import { ledgerJson } from "../ledger/ledger-value.ts";

/**
 * `lockstep repair compare-acs` (docs/restore.md, "The synchronizer is lost or restored behind the
 * participants"): after a synchronizer loss two participants may disagree on the contracts they
 * share. Pure: the caller reads each participant's contracts and hosted parties (acs-repair.ts).
 */

/** What one participant holds, as its database says. */
export interface ParticipantAcs {
  readonly participant: string;
  /** The parties it hosts (participant_parties). */
  readonly hostedParties: ReadonlySet<string>;
  /** Its active contracts (archived_offset IS NULL). */
  readonly active: readonly ActiveContract[];
  /** The contracts it stored and archived since: id → archived offset. */
  readonly archived: ReadonlyMap<string, bigint>;
}

/** The fields two instances of one contract id must agree on. */
export const CONTRACT_FIELDS = [
  "template",
  "arguments",
  "signatories",
  "observers",
  "createdAt",
  "salt",
] as const;
export type ContractField = (typeof CONTRACT_FIELDS)[number];

export type AcsDifference =
  | {
      readonly contractId: string;
      /** Active on `participant`; `missingOn` never stored it, though it hosts one of its stakeholders. */
      readonly kind: "only-on";
      readonly participant: string;
      readonly missingOn: string;
      readonly template: string;
      readonly stakeholders: readonly string[];
    }
  | {
      readonly contractId: string;
      /** Archived on `participant` (at `archivedOffset`), still active on `activeOn`. */
      readonly kind: "archived-on";
      readonly participant: string;
      readonly activeOn: string;
      readonly archivedOffset: bigint;
      readonly template: string;
      readonly stakeholders: readonly string[];
    }
  | {
      readonly contractId: string;
      /** Active on both with other content: the differing fields and each side's values of them. */
      readonly kind: "different";
      readonly fields: readonly ContractField[];
      readonly values: Readonly<Record<string, Partial<Record<ContractField, unknown>>>>;
      /** The participants whose instance is the one its id was derived from (contract.ts). */
      readonly authenticOn: readonly string[];
    };

export interface AcsComparison {
  readonly participants: readonly [string, string];
  /** Shared contracts active on at least one side: the ones compared. */
  readonly compared: number;
  /** Sorted by contract id. */
  readonly differences: readonly AcsDifference[];
}

/**
 * The shared contracts on which the two participants disagree. A contract is shared when both
 * stored it, or when one holds it active and the other hosts one of its stakeholders (so it
 * should hold it too). Only the active contract sets are compared: a contract archived on both,
 * or archived on one and never stored by the other, is no difference.
 */
export function compareAcs(a: ParticipantAcs, b: ParticipantAcs): AcsComparison {
  const activeA = byId(a.active);
  const activeB = byId(b.active);
  const differences: AcsDifference[] = [];
  let compared = 0;
  for (const id of [...new Set([...activeA.keys(), ...activeB.keys()])].sort()) {
    const onA = activeA.get(id);
    const onB = activeB.get(id);
    if (onA && onB) {
      compared++;
      const difference = contentDifference(id, [a.participant, onA], [b.participant, onB]);
      if (difference) differences.push(difference);
      continue;
    }
    const [holder, holding, other] = onA ? [a, onA, b] : [b, onB as ActiveContract, a];
    const stakeholders = stakeholdersOf(holding);
    const archivedOffset = other.archived.get(id);
    if (archivedOffset !== undefined) {
      compared++;
      differences.push({
        contractId: id,
        kind: "archived-on",
        participant: other.participant,
        activeOn: holder.participant,
        archivedOffset,
        template: holding.template,
        stakeholders,
      });
    } else if (stakeholders.some((p) => other.hostedParties.has(p))) {
      compared++;
      differences.push({
        contractId: id,
        kind: "only-on",
        participant: holder.participant,
        missingOn: other.participant,
        template: holding.template,
        stakeholders,
      });
    }
  }
  return { participants: [a.participant, b.participant], compared, differences };
}

function byId(contracts: readonly ActiveContract[]): Map<string, ActiveContract> {
  return new Map(contracts.map((c) => [c.contractId, c]));
}

function fieldValue(c: ActiveContract, field: ContractField): unknown {
  return field === "createdAt" ? c.createdAt.toString() : c[field];
}

function contentDifference(
  contractId: string,
  [nameA, a]: [string, ActiveContract],
  [nameB, b]: [string, ActiveContract],
): AcsDifference | undefined {
  const fields = CONTRACT_FIELDS.filter((f) => ledgerJson(fieldValue(a, f)) !== ledgerJson(fieldValue(b, f)));
  if (fields.length === 0) return undefined;
  const values = (c: ActiveContract) => Object.fromEntries(fields.map((f) => [f, fieldValue(c, f)]));
  return {
    contractId,
    kind: "different",
    fields,
    values: { [nameA]: values(a), [nameB]: values(b) },
    authenticOn: [...(contractIdMatches(a) ? [nameA] : []), ...(contractIdMatches(b) ? [nameB] : [])],
  };
}

/** One line per difference, for the text table and for logs. */
export function describeDifference(d: AcsDifference): string {
  switch (d.kind) {
    case "only-on":
      return `active on ${d.participant}, never stored on ${d.missingOn} (which hosts a stakeholder)`;
    case "archived-on":
      return `archived on ${d.participant} at offset ${d.archivedOffset}, active on ${d.activeOn}`;
    case "different": {
      const authentic =
        d.authenticOn.length === 0 ? "neither matches its id" : `id matches ${d.authenticOn.join(" and ")}`;
      return `${d.fields.join(", ")} differ (${authentic})`;
    }
  }
}
