import { setTimeout as sleep } from "node:timers/promises";
import type { LockstepConfig, NodeKind } from "../common/config-schema.ts";
import { fromConnectError } from "../common/connect-errors.ts";
import type { Logger } from "../common/logging.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";

/** What the launcher needs of a node it started in this process (a NodeRuntime). */
export interface LaunchedRuntime {
  status(): Promise<{ role: string; positionJson: string }>;
  whenStopped(): Promise<void>;
}

/** How often the launcher looks: often while the node is not subscribed, rarely once it is. */
const POLL_MS = 250;
const POLL_SUBSCRIBED_MS = 2000;

/**
 * The launcher admits the nodes of its own config (docs/security.md "Permissioned synchronizer"):
 * a participant or mediator started by `lockstep up` or `lockstep node start` makes its keys on
 * first start, is refused by an allow-list sequencer (TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED) and
 * reports the member id it waits with (`position.notAdmitted`). The launcher, acting for the
 * operator whose config declares the node, then admits exactly that id through the sequencer's Admin
 * API (with the network's admin token), and the node registers on its next try. Nothing else is
 * admitted: a member id no config of the operator's launches stays out until `synchronizer admit`,
 * and a revoked member is refused with SEQUENCER_MEMBER_REVOKED, which this never undoes.
 *
 * Runs while the node runs (it may register anew later: a synchronizer migration); never throws (a
 * failure is logged and retried, the node's status keeps showing the refusal and its remedy).
 */
export async function admitConfiguredNode(options: {
  config: LockstepConfig;
  kind: NodeKind;
  runtime: LaunchedRuntime;
  log: Logger;
}): Promise<void> {
  const { config, kind, runtime, log } = options;
  if (kind === "sequencer" || config.synchronizer.onboarding === "open") return;
  let stopped = false;
  void runtime.whenStopped().then(() => {
    stopped = true;
  });
  const sequencer = createNodeClient(SequencerService, nodeEndpoint(config.synchronizer.sequencer).url);
  let lastFailure = "";
  while (!stopped) {
    const status = await runtime.status().catch(() => undefined);
    if (status?.role === "failed") return;
    const position = parsePosition(status?.positionJson);
    if (typeof position.notAdmitted === "string") {
      const member = position.notAdmitted;
      try {
        const { changed } = await sequencer.admitMember({ member });
        log.info({ member, changed }, "admitted this node, declared in the config, to the synchronizer");
      } catch (error) {
        const reason = fromConnectError(error)?.code ?? (error as Error).message;
        if (reason !== lastFailure) {
          log.warn(
            { member, reason },
            `could not admit this node to the synchronizer; an operator can: lockstep synchronizer admit ${member}`,
          );
        }
        lastFailure = reason;
      }
    }
    // Unref'd: the loop never keeps a stopping process alive.
    await sleep(position.subscriptionCheck === "passed" ? POLL_SUBSCRIBED_MS : POLL_MS, undefined, {
      ref: false,
    });
  }
}

function parsePosition(json: string | undefined): { subscriptionCheck?: unknown; notAdmitted?: unknown } {
  if (!json) return {};
  try {
    return JSON.parse(json) as Record<string, unknown>;
  } catch {
    return {};
  }
}
