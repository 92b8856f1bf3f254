import type { Client } from "@connectrpc/connect";
import type { LockstepError } from "../common/errors.ts";
import type { SequencedEvent } from "../common/sequenced-event.ts";
import type { Micros } from "../common/time.ts";
import type { KeyPair } from "../crypto/keys.ts";
import { signedTopologyFromParts, type TopologyEntry, TopologyState } from "../crypto/topology.ts";
import type { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { topologyTransactionsOf } from "./event-payload.ts";

/** What GetTopology tells a member that bootstraps. */
export interface TopologyBootstrap {
  /** The accepted transactions replayed into a state (rejected ones skipped, as members skip them). */
  state: TopologyState;
  sequencerId: string;
  synchronizerId: string;
  synchronizerNamespace: string;
}

/** GetTopology, up to the head or as of `asOf` inclusive. */
export async function fetchTopology(
  rpc: Client<typeof SequencerService>,
  asOf?: Micros,
): Promise<TopologyBootstrap> {
  const response = await rpc.getTopology(asOf === undefined ? {} : { asOf });
  const entries: TopologyEntry[] = [];
  for (const t of response.transactions) {
    if (!t.transaction) continue;
    try {
      entries.push({ signed: signedTopologyFromParts(t.transaction), effectiveAt: t.effectiveAt });
    } catch {
      // malformed: TopologyState would reject it too
    }
  }
  return {
    state: TopologyState.replay(response.synchronizerNamespace, entries),
    sequencerId: response.sequencerId,
    synchronizerId: response.synchronizerId,
    synchronizerNamespace: response.synchronizerNamespace,
  };
}

/**
 * When topology already lists `member` with this namespace key (registered before a crash, or a
 * node restored with its keys), the timestamp of its first MemberKeys add; else undefined.
 */
export function registeredAtOf(state: TopologyState, member: string, namespace: KeyPair): Micros | undefined {
  const namespaceHex = namespace.publicKey.toString("hex");
  for (const { signed, effectiveAt } of state.transactions()) {
    const mapping = signed.transaction.mapping;
    if (
      mapping.type === "MemberKeys" &&
      mapping.member === member &&
      signed.transaction.operation === "add"
    ) {
      return mapping.namespaceKey === namespaceHex ? effectiveAt : undefined;
    }
  }
  return undefined;
}

/**
 * The topology after `event`: its transactions applied at its timestamp, each rejected one skipped
 * (as every member skips it). Events up to registeredAt are already in the registration snapshot
 * (the member's own registration event included), so they change nothing.
 */
export function applyTopologyEvent(
  state: TopologyState,
  event: SequencedEvent,
  registeredAt: Micros,
): { state: TopologyState; accepted: TopologyEntry[]; rejected: { hash: string; error: LockstepError }[] } {
  const accepted: TopologyEntry[] = [];
  const rejected: { hash: string; error: LockstepError }[] = [];
  if (event.timestamp <= registeredAt) return { state, accepted, rejected };
  for (const signed of topologyTransactionsOf(event) ?? []) {
    const result = state.tryApply(signed, event.timestamp);
    if (result.error) {
      rejected.push({ hash: signed.hash, error: result.error });
      continue;
    }
    state = result.state;
    accepted.push({ signed, effectiveAt: event.timestamp });
  }
  return { state, accepted, rejected };
}
