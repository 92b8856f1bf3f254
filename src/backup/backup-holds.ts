import type { Client } from "@connectrpc/connect";
import type { LockstepConfig } from "../common/config-schema.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { refusalNotOutage } from "../common/tls-diagnosis.ts";
import {
  type GetSequencerStatusResponse,
  SequencerService,
} from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import type { Manifest, NodeBackup } from "./manifest.ts";

/**
 * The backup side of retention holds (docs/design.md §2, §4.6): a retained set's participants and mediators
 * must stay restorable against the live sequencer, so every set registers, at the sequencer, a hold
 * per member position it contains; expiring the set releases them.
 */

export type SequencerRpc = Client<typeof SequencerService>;

export function sequencerRpc(config: LockstepConfig): SequencerRpc {
  return createNodeClient(SequencerService, nodeEndpoint(config.synchronizer.sequencer).url);
}

/** The live sequencer's status, or undefined when it does not answer. */
export async function liveSequencerStatus(
  rpc: SequencerRpc,
): Promise<GetSequencerStatusResponse | undefined> {
  try {
    return await rpc.getSequencerStatus({}, { timeoutMs: 3000 });
  } catch (error) {
    // A sequencer that refuses us is up: treating it as down would skip the checks and holds that
    // need it (a restore's sequencer checks only warn into an empty target).
    const refusal = await refusalNotOutage(error);
    if (refusal) throw refusal;
    return undefined;
  }
}

/** One hold per member node: from its last stored event on (0: from its registration). */
export function holdsOf(nodes: readonly NodeBackup[]): { member: string; timestamp: bigint }[] {
  const holds: { member: string; timestamp: bigint }[] = [];
  for (const n of nodes) {
    if (n.kind === "sequencer" || n.member === null) continue;
    holds.push({ member: n.member, timestamp: BigInt(n.position.lastStored?.timestamp ?? 0) });
  }
  return holds;
}

/**
 * Before anything is dumped: a hold per member at its current acknowledgement (0: registration).
 * A member's dump will be at or after its acknowledgement (acknowledged ≤ clean ≤ last stored), so
 * no prune between the dumps and the exact holds can remove what the set will need.
 */
export async function provisionalHolds(
  rpc: SequencerRpc,
  status: GetSequencerStatusResponse,
  setId: string,
  nodeNames: readonly string[],
): Promise<number> {
  const holds = status.members
    .filter((m) => nodeNames.some((name) => m.member.startsWith(`${name}::`)))
    .map((m) => ({ member: m.member, timestamp: m.acknowledged ?? 0n }));
  if (holds.length > 0) await rpc.setRetentionHolds({ setId, holds }, { timeoutMs: 10_000 });
  return holds.length;
}

/** The exact holds of a complete set (replacing its provisional ones). */
export async function holdSet(rpc: SequencerRpc, manifest: Manifest): Promise<number> {
  const holds = holdsOf(manifest.nodes);
  if (holds.length === 0) await rpc.releaseRetentionHolds({ setIds: [manifest.id] }, { timeoutMs: 10_000 });
  else await rpc.setRetentionHolds({ setId: manifest.id, holds }, { timeoutMs: 10_000 });
  return holds.length;
}

export type HoldState = "held" | "missing" | "stranded" | "not-needed" | "unknown";

/** How the live sequencer keeps a set: its holds, or stranded by a forced prune. */
export function holdState(manifest: Manifest, status: GetSequencerStatusResponse | undefined): HoldState {
  if (holdsOf(manifest.nodes).length === 0) return "not-needed";
  if (!status) return "unknown";
  if (status.stranded.some((s) => s.setId === manifest.id)) return "stranded";
  return status.holds.some((h) => h.setId === manifest.id) ? "held" : "missing";
}

/**
 * Until when the operator's pruning schedule (synchronizer.sequencer.retention, Canton's default is
 * 7 days) keeps the set's oldest member position: after that a retention prune needs --force, which
 * strands the set. Sequencer time (micros), as the positions are.
 */
export function withinRetentionUntil(
  manifest: Manifest,
  status: GetSequencerStatusResponse | undefined,
): bigint | null {
  const holds = holdsOf(manifest.nodes).filter((h) => h.timestamp > 0n);
  if (!status || holds.length === 0) return null;
  let oldest = holds[0]?.timestamp ?? 0n;
  for (const h of holds) if (h.timestamp < oldest) oldest = h.timestamp;
  return oldest + status.retentionMicros;
}
