import assert from "node:assert/strict";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import type { Completion } from "../../src/gen/lockstep/ledger/v1/completion_pb.ts";
import type { LedgerClients } from "./ledger-client.ts";
import { createIouCommand } from "./ledger-network.ts";
import { waitFor } from "./wait.ts";

// Exactly-once checks of commands across a crash or a fail-over: submit Ious with command ids, then
// resubmit every id (an accepted one must come back DUPLICATE_COMMAND) and count the completions.

/** One Iou create, with a unique amount so that its effect can be counted on the ledger. */
export interface PlannedIou {
  commandId: string;
  issuer: string;
  owner: string;
  amount: string;
  /** "ok", an error code, or "unknown" (the connection broke: the outcome is not known). */
  outcome?: string;
}

/** SubmitAndWait of the Iou: "ok", the error's code, or "unknown" when the call broke without one. */
export async function submitIou(clients: LedgerClients, cmd: PlannedIou, userId: string): Promise<string> {
  try {
    await clients.commands.submitAndWait(
      {
        commands: createIouCommand(cmd.commandId, cmd.issuer, cmd.owner, { userId, amount: cmd.amount }),
      },
      { timeoutMs: 60_000 },
    );
    return "ok";
  } catch (error) {
    return fromConnectError(error)?.code ?? "unknown";
  }
}

/** Outcomes that say "not decided yet, or not by this process": ask again. */
const UNDECIDED = new Set(["SUBMISSION_ALREADY_IN_FLIGHT", "unknown", "NODE_PASSIVE"]);

/**
 * Resubmits every command with its command id: an accepted one must be a duplicate, a lost one may
 * commit now; an in-flight one is retried until the participant decided it (timeout or commit).
 * Returns how the commands without a known outcome ended (`"unknown → ok": 2`, …).
 */
export async function resubmitAll<P extends PlannedIou>(
  plan: P[],
  clientsFor: (cmd: P) => LedgerClients,
  userId: string,
): Promise<Record<string, number>> {
  const resubmitted: Record<string, number> = {};
  for (const cmd of plan) {
    const outcome = await waitFor(
      `the resubmission of ${cmd.commandId}`,
      async () => {
        const r = await submitIou(clientsFor(cmd), cmd, userId);
        return UNDECIDED.has(r) ? undefined : r;
      },
      90_000,
      500,
    );
    if (cmd.outcome === "ok")
      assert.equal(outcome, "DUPLICATE_COMMAND", `${cmd.commandId} was accepted before`);
    else assert.ok(outcome === "ok" || outcome === "DUPLICATE_COMMAND", `${cmd.commandId}: ${outcome}`);
    if (cmd.outcome !== "ok") {
      const key = `${cmd.outcome} → ${outcome}`;
      resubmitted[key] = (resubmitted[key] ?? 0) + 1;
    }
  }
  return resubmitted;
}

/** Completions of a user for a party, from the start, read until the stream has been idle for a while. */
export async function completionsOf(
  clients: LedgerClients,
  userId: string,
  party: string | readonly string[],
  idleMs = 3000,
): Promise<Completion[]> {
  const abort = new AbortController();
  const seen: Completion[] = [];
  let idle = setTimeout(() => abort.abort(), idleMs);
  try {
    for await (const r of clients.completions.completionStream(
      { userId, parties: typeof party === "string" ? [party] : [...party], beginExclusive: 0n },
      { signal: abort.signal },
    )) {
      if (r.response.case === "completion") seen.push(r.response.value);
      clearTimeout(idle);
      idle = setTimeout(() => abort.abort(), idleMs);
    }
  } catch (error) {
    if (!abort.signal.aborted) throw error;
  } finally {
    clearTimeout(idle);
  }
  return seen;
}

/** Each command of `commandIds` completed successfully exactly once, and nothing else did. */
export async function assertOneSuccessEach(
  clients: LedgerClients,
  userId: string,
  party: string,
  commandIds: string[],
  what: string,
): Promise<void> {
  const completions = await completionsOf(clients, userId, party);
  const succeeded = completions.filter((c) => c.status.case === "succeeded").map((c) => c.commandId);
  assert.deepEqual(
    succeeded.sort(),
    [...commandIds].sort(),
    `${what}: one successful completion per command`,
  );
}
