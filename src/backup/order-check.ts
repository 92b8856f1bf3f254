import type { Client } from "@connectrpc/connect";
import type { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import type { Manifest, MemberEventView, NodeBackup, UnsafeFinding } from "./manifest.ts";
import type { MemberLookup } from "./node-position.ts";

export interface OrderCheckResult {
  orderCheck: Manifest["orderCheck"];
  checkedAgainst: string | null;
  unsafe: UnsafeFinding[];
}

/** The participants' and mediators' last stored events: what the sequencer's side must hold. */
export function memberLookups(nodes: readonly NodeBackup[]): MemberLookup[] {
  const lookups: MemberLookup[] = [];
  for (const n of nodes) {
    if (n.kind === "sequencer" || n.member === null || n.position.lastStored === null) continue;
    lookups.push({ member: n.member, timestamp: n.position.lastStored.timestamp });
  }
  return lookups;
}

/**
 * The members of `nodes` whose history is not a prefix of the sequencer's (docs/design.md §4.3): the
 * sequencer must hold, for the member, an event at the member's last stored timestamp with the same
 * chain hash. Timestamps alone are not enough: a synchronizer restored behind the members sends new
 * events at later timestamps, and a member ahead of it then looks "behind the head" while forked.
 * Since the chain hash covers the whole history, equal hashes mean equal histories up to there.
 */
export function findForks(
  nodes: readonly NodeBackup[],
  views: Readonly<Record<string, MemberEventView>>,
  sequencerSet: string | null,
  lastDelivered: (member: string) => string | null = () => null,
): UnsafeFinding[] {
  const findings: UnsafeFinding[] = [];
  for (const node of nodes) {
    if (node.kind === "sequencer") continue;
    const stored = node.position.lastStored;
    if (node.member === null || stored === null) continue; // never received anything: nothing to fork
    const view = views[node.member];
    const sequencerHash = view?.known && view.timestamp === stored.timestamp ? view.chainHash : null;
    if (sequencerHash === stored.chainHash) continue;
    findings.push({
      node: node.name,
      reason: "fork",
      member: node.member,
      clean: node.position.clean,
      lastStored: stored.timestamp,
      sequencerLastDelivered: lastDelivered(node.member),
      sequencerSet,
      storedHash: stored.chainHash,
      sequencerHash,
    });
  }
  return findings;
}

/** Asks the live sequencer for its event at each member's last stored timestamp. */
export async function liveMemberEvents(
  rpc: Client<typeof SequencerService>,
  lookups: readonly MemberLookup[],
): Promise<{ views: Record<string, MemberEventView>; lastDelivered: Record<string, string | null> }> {
  const views: Record<string, MemberEventView> = {};
  const lastDelivered: Record<string, string | null> = {};
  for (const l of lookups) {
    const info = await rpc.getMemberEvent(
      { member: l.member, timestamp: BigInt(l.timestamp) },
      { timeoutMs: 10_000 },
    );
    views[l.member] = {
      timestamp: l.timestamp,
      known: info.registeredAt !== undefined,
      chainHash: info.event ? Buffer.from(info.event.chainHash).toString("hex") : null,
    };
    lastDelivered[l.member] = info.lastDelivered?.toString() ?? null;
  }
  return { views, lastDelivered };
}

/**
 * Checks a new set's members against its own sequencer (the view read in its snapshot), or, for a
 * set without one, against the live sequencer: the one a restore of that set will meet. Never
 * against an older set's sequencer (a restore does not pair with it). `live` is undefined when the
 * live sequencer does not answer: the set is then unchecked, and checked again at restore time.
 */
export async function checkOrder(
  nodes: readonly NodeBackup[],
  setId: string,
  live: { rpc: Client<typeof SequencerService>; sequencerId: string } | undefined,
): Promise<OrderCheckResult> {
  const own = nodes.find((n) => n.kind === "sequencer");
  if (own?.kind === "sequencer") {
    const delivered = (m: string) => own.position.members[m] ?? null;
    const unsafe = findForks(nodes, own.position.memberEvents ?? {}, setId, delivered);
    return { orderCheck: "checked", checkedAgainst: null, unsafe };
  }
  const lookups = memberLookups(nodes);
  if (lookups.length === 0) return { orderCheck: "checked", checkedAgainst: null, unsafe: [] };
  if (!live) return { orderCheck: "unchecked", checkedAgainst: null, unsafe: [] };
  const { views, lastDelivered } = await liveMemberEvents(live.rpc, lookups);
  return {
    orderCheck: "checked-against-live-sequencer",
    checkedAgainst: live.sequencerId,
    unsafe: findForks(nodes, views, null, (m) => lastDelivered[m] ?? null),
  };
}
