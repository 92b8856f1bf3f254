import type { Interceptor } from "@connectrpc/connect";
import type { ErrorJson } from "../common/errors.ts";
import { LockstepError } from "../common/errors.ts";
import { AdminService } from "../gen/lockstep/admin/v1/admin_pb.ts";
import type { NodeRole } from "./node-runtime.ts";
import { nodeFailure } from "./node-status.ts";
import type { WriterLock } from "./writer-lock.ts";

// Which calls a node process answers in each role: the Admin API always, its kind's services only
// while active. Kept apart from NodeRuntime: it only reads the role (at each call), never changes it.

const ADMIN_SERVICE = AdminService.typeName;

/** What the guard reads of the node process. */
export interface GuardedNode {
  name: string;
  role: () => NodeRole;
  lastError: () => ErrorJson | undefined;
  lock: Pick<WriterLock, "holding" | "stillHolding">;
}

/**
 * Only the active process serves its kind's services; a passive replica answers the Admin API and
 * health only, so clients see NODE_PASSIVE (retryable) and go to the active one.
 */
export function passiveGuard(node: GuardedNode): Interceptor {
  return (next) => (request) => {
    const service = request.service.typeName;
    // A failed node answers with its own error (e.g. SEQUENCER_FORK_DETECTED and its remedy), not
    // NODE_PASSIVE: no other replica would do better, and the caller must see why.
    const lastError = node.lastError();
    if (service !== ADMIN_SERVICE && node.role() === "failed" && lastError) {
      throw nodeFailure(lastError);
    }
    if (service !== ADMIN_SERVICE && node.role() !== "active") {
      throw new LockstepError("NODE_PASSIVE", { node: node.name });
    }
    if (service === ADMIN_SERVICE) return next(request);
    return next(request).catch((error: unknown) => passiveIfLockLost(node, error));
  };
}

/**
 * A call that failed because this process just lost its database connection, and with it the lock,
 * is answered NODE_PASSIVE (retryable: send it to the active process; a command id makes that safe)
 * rather than INTERNAL_ERROR. The loss may not be noticed yet, so an unexpected error asks the server.
 */
async function passiveIfLockLost(node: GuardedNode, error: unknown): Promise<never> {
  // Only errors a lost connection may cause: unexpected ones, and DB_CONNECTION_LOST (multi-host URLs).
  const code = error instanceof LockstepError ? error.code : undefined;
  if (code !== undefined && code !== "INTERNAL_ERROR" && code !== "DB_CONNECTION_LOST") throw error;
  if (node.lock.holding) await node.lock.stillHolding();
  if (node.role() === "passive") throw new LockstepError("NODE_PASSIVE", { node: node.name });
  throw error;
}
