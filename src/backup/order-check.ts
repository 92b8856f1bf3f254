import type { BackupRepository } from "./backup-repository.ts";
import type { Manifest, NodeBackup, SequencerPosition, UnsafeFinding } from "./manifest.ts";

export interface OrderCheckResult {
  orderCheck: Manifest["orderCheck"];
  checkedAgainst: string | null;
  unsafe: UnsafeFinding[];
}

const big = (v: string | null): bigint | null => (v === null ? null : BigInt(v));

/**
 * The members of `nodes` that are ahead of what `sequencer` recorded for them (DESIGN §4.3): a
 * participant or mediator whose clean timestamp, or last stored event, is later than the last event
 * the sequencer delivered to it. Restoring both, the sequencer would hand out those timestamps again
 * with other content: a fork.
 */
export function findForks(
  nodes: readonly NodeBackup[],
  sequencer: SequencerPosition,
  sequencerSet: string,
): UnsafeFinding[] {
  const findings: UnsafeFinding[] = [];
  for (const node of nodes) {
    if (node.kind === "sequencer") continue;
    const clean = big(node.position.clean);
    const stored = big(node.position.lastStored?.timestamp ?? null);
    const ahead = [clean, stored].reduce<bigint | null>(
      (a, b) => (b !== null && (a === null || b > a) ? b : a),
      null,
    );
    if (ahead === null) continue; // never received anything: nothing to fork
    const delivered = node.member === null ? null : (sequencer.members[node.member] ?? null);
    if (delivered !== null && ahead <= BigInt(delivered)) continue;
    findings.push({
      node: node.name,
      reason: "fork",
      member: node.member,
      clean: node.position.clean,
      lastStored: node.position.lastStored?.timestamp ?? null,
      sequencerLastDelivered: delivered,
      sequencerSet,
    });
  }
  return findings;
}

/**
 * Checks a new set's members against its own sequencer, or, for a subset without one, against the
 * newest complete set that has the sequencer (the one a restore would pair it with).
 */
export async function checkOrder(
  nodes: readonly NodeBackup[],
  setId: string,
  repository: BackupRepository,
): Promise<OrderCheckResult> {
  const own = nodes.find((n) => n.kind === "sequencer");
  if (own?.kind === "sequencer") {
    return { orderCheck: "checked", checkedAgainst: null, unsafe: findForks(nodes, own.position, setId) };
  }
  if (!nodes.some((n) => n.kind !== "sequencer"))
    return { orderCheck: "checked", checkedAgainst: null, unsafe: [] };
  for (const set of await repository.listSets()) {
    if (set.id === setId) continue;
    const seq = set.manifest.nodes.find((n) => n.kind === "sequencer");
    if (seq?.kind !== "sequencer") continue;
    return {
      orderCheck: "checked-against-older-set",
      checkedAgainst: set.id,
      unsafe: findForks(nodes, seq.position, set.id),
    };
  }
  return { orderCheck: "unchecked", checkedAgainst: null, unsafe: [] };
}
