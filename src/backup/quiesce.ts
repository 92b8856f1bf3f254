import { setTimeout as sleep } from "node:timers/promises";
import type { LockstepConfig, NodeEntry } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { nodeAdminClient } from "../node/clients.ts";

const LEASE_MS = 120_000;
const POLL_MS = 250;

export interface QuiesceOptions {
  /** How long to wait for every node to be clean at the head. */
  timeoutMs?: number;
}

/**
 * `backup create --quiesce` (docs/design.md §4.3): pauses the sequencer's intake, waits until each
 * participant/mediator has processed everything the sequencer delivered to it (clean = its last
 * delivered), and returns the function that resumes intake. The pause is a lease renewed while the
 * dumps run, so a killed CLI leaves the sequencer paused for at most the lease.
 */
export async function quiesceNetwork(
  config: LockstepConfig,
  nodes: readonly NodeEntry[],
  progress: (line: string) => void,
  options: QuiesceOptions = {},
): Promise<() => Promise<void>> {
  const sequencer = createNodeClient(SequencerService, nodeEndpoint(config.synchronizer.sequencer).url);
  const paused = await sequencer.pauseIntake({ leaseMs: BigInt(LEASE_MS) });
  progress(`sequencer intake paused at head ${paused.headTimestamp ?? "-"}`);
  const renew = setInterval(() => {
    sequencer.pauseIntake({ leaseMs: BigInt(LEASE_MS) }).catch((error: unknown) => {
      progress(`could not renew the sequencer pause: ${(error as Error).message}`);
    });
  }, LEASE_MS / 3);
  const resume = async () => {
    clearInterval(renew);
    await sequencer.resumeIntake({});
  };
  try {
    await waitUntilClean(config, sequencer, nodes, progress, options.timeoutMs ?? 60_000);
  } catch (error) {
    await resume().catch(() => undefined);
    throw error;
  }
  return resume;
}

async function waitUntilClean(
  _config: LockstepConfig,
  sequencer: ReturnType<typeof createNodeClient<typeof SequencerService>>,
  nodes: readonly NodeEntry[],
  progress: (line: string) => void,
  timeoutMs: number,
): Promise<void> {
  const members = nodes.filter((n) => n.kind !== "sequencer");
  const deadline = Date.now() + timeoutMs;
  let behind: string[] = [];
  while (Date.now() < deadline) {
    const status = await sequencer.getSequencerStatus({});
    const delivered = new Map(status.members.map((m) => [m.member.split("::")[0], m.lastDelivered]));
    behind = [];
    for (const node of members) {
      const target = delivered.get(node.name);
      if (target === undefined) continue; // not registered: nothing delivered to wait for
      const s = await nodeAdminClient(node).getStatus({}, { timeoutMs: 2000 });
      const position = (s.positionJson ? JSON.parse(s.positionJson) : {}) as { clean?: string | null };
      const clean = position.clean ? BigInt(position.clean) : null;
      if (clean === null || clean < target) behind.push(`${node.name} (clean ${clean ?? "-"} < ${target})`);
    }
    if (behind.length === 0) {
      progress(`every node is clean at the head ${status.headTimestamp ?? "-"}`);
      return;
    }
    await sleep(POLL_MS);
  }
  throw new LockstepError("BACKUP_QUIESCE_TIMEOUT", {
    timeout: `${timeoutMs / 1000}s`,
    nodes: behind.join(", "),
  });
}
